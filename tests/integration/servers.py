"""Real servers for integration tests, on 127.0.0.1 with free ports, stopped by PID.

``ray stop`` would stop every Ray of this user on the machine (other test sessions included), so
the Ray head is stopped by the PIDs of the processes whose command line names its own temp dir.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


def _stop_pids(pids: list[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        if not alive:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in alive):
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class MlflowServer:
    uri: str
    root: Path
    proc: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, root: Path) -> MlflowServer:
        port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        log = root / "server.log"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
        proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        server = cls(f"http://127.0.0.1:{port}", root, proc, log)
        try:
            wait_http(server.uri + "/health", 90, proc)
        except BaseException:
            server.stop()
            raise
        return server

    def stop(self) -> None:
        import psutil

        try:
            kids = [p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            kids = []
        _stop_pids([self.proc.pid, *kids])
        self.proc.wait(timeout=10)


@dataclass
class RayHead:
    address: str  # the dashboard / Jobs API URL
    temp_dir: Path
    env: dict = field(default_factory=dict)
    gcs_address: str = ""  # 127.0.0.1:<port>: named by helpers (ray client server) that outlive the raylet

    @classmethod
    def start(cls, num_cpus: int = 2) -> RayHead:
        # short path: Ray's unix sockets live under it (108-character limit)
        temp_dir = Path(tempfile.mkdtemp(prefix="nqr", dir="/tmp"))
        env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": str(temp_dir)}
        env["PATH"] = f"{BIN}:{env.get('PATH', '')}"  # jobs run `nasq` from this venv
        dash = free_port()
        ports = {"--port": free_port(), "--dashboard-port": dash, "--ray-client-server-port": free_port(),
                 "--node-manager-port": free_port(), "--object-manager-port": free_port(),
                 "--dashboard-agent-grpc-port": free_port(), "--dashboard-agent-listen-port": free_port(),
                 "--metrics-export-port": free_port(), "--runtime-env-agent-port": free_port()}
        cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--dashboard-host",
               "127.0.0.1", "--num-cpus", str(num_cpus), "--temp-dir", str(temp_dir), "--include-dashboard", "true",
               "--disable-usage-stats", *[str(x) for kv in ports.items() for x in kv]]
        head = cls(f"http://127.0.0.1:{dash}", temp_dir, env, f"127.0.0.1:{ports['--port']}")
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        if out.returncode != 0:
            head.stop()
            raise RuntimeError(f"ray start failed: {out.stderr[-2000:]}")
        try:
            wait_http(head.address + "/api/version", 90)
        except BaseException:
            head.stop()
            raise
        return head

    def pids(self) -> list[int]:
        import psutil

        mine = set()
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if str(self.temp_dir) in cmdline or (self.gcs_address and f"--address={self.gcs_address}" in cmdline):
                mine.add(proc.info["pid"])
                try:
                    mine.update(c.pid for c in proc.children(recursive=True))
                except psutil.NoSuchProcess:
                    pass
        mine.discard(os.getpid())
        return sorted(mine)

    def stop(self) -> None:
        _stop_pids(self.pids())
