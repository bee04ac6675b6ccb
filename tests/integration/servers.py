"""Real servers for integration tests, on 127.0.0.1 with free ports, stopped by PID.

``ray stop`` would stop every Ray of this user on the machine (other test sessions included), so
the Ray head is stopped by the PIDs of the processes whose command line names its own temp dir.
"""

from __future__ import annotations

import json
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


def wait_http(url: str, timeout_s: float, proc: subprocess.Popen | None = None, token: str | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before {url} answered")
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as r:
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
        flags = ("--port", "--dashboard-port", "--ray-client-server-port", "--node-manager-port",
                 "--object-manager-port", "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port",
                 "--metrics-export-port", "--runtime-env-agent-port")
        ports = dict(zip(flags, free_ports(len(flags)), strict=True))  # distinct: Ray refuses a port twice
        dash = ports["--dashboard-port"]
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


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (all bound at once, so none is handed out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


NODE_PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-grpc-port",
                   "--dashboard-agent-listen-port", "--metrics-export-port", "--runtime-env-agent-port")
WORKER_PORTS = 12  # per node: Ray's default worker port range is shared by the nodes of one machine


def _node_ports(ports: list[int]) -> list[str]:
    """The flags for the ports one node binds, taken from ``ports`` (two nodes share none)."""
    flags = [x for flag in NODE_PORT_FLAGS for x in (flag, str(ports.pop()))]
    return [*flags, "--worker-port-list", ",".join(str(ports.pop()) for _ in range(WORKER_PORTS))]


# `ray start --address ...` (Ray's own CLI) for a node on loopback: Ray's guard against multi-node
# clusters in loopback mode is lifted, and the local address stays 127.0.0.1 instead of the address
# Ray would find by routing towards 8.8.8.8 (not allowed on these machines).
JOIN_SHIM = """
import sys
import ray._private.ray_constants as constants
import ray._private.services as services
constants.ENABLE_RAY_CLUSTER = True
services.get_node_ip_address = lambda address=None: "127.0.0.1"
from ray.scripts.scripts import main
sys.argv[0] = "ray"
sys.exit(main())
"""


@dataclass
class RayCluster(RayHead):
    """A head (``ray start --head``) and more nodes (``ray start --address``) on this machine, on
    loopback, optionally with Ray's token authentication (a token file under the cluster's temp dir,
    never ~/.ray). Node i has the custom resource ``node<i>: 1`` so tests can tell them apart.

    Every node runs with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (every socket on 127.0.0.1, see
    STACK_NOTES). Ray's CLI refuses ``ray start --address`` in that mode, and with it at 1 rewrites
    the 127.0.0.1 head address to the machine's external one; so a joining node runs Ray's own
    ``ray start`` through :data:`JOIN_SHIM`, which lifts only that guard. Every node's temp dir lies
    below the head's, so :meth:`RayHead.pids` finds all of their processes."""

    token: str | None = None
    token_file: Path | None = None

    def client_env(self, with_token: bool = True) -> dict[str, str]:
        """The environment a client (nasq CLI) needs: auth mode, and the token unless told not to."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}
        env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_MODE": "token" if self.token else "disabled"})
        if self.token and with_token:
            env["RAY_AUTH_TOKEN_PATH"] = str(self.token_file)
        return env

    @classmethod
    def start(cls, nodes: tuple[int, ...] = (1, 1), token: bool = True) -> RayCluster:  # type: ignore[override]
        import secrets

        temp_dir = Path(tempfile.mkdtemp(prefix="nqc", dir="/tmp"))
        ports = free_ports(3 + len(nodes) * (len(NODE_PORT_FLAGS) + WORKER_PORTS))
        dash, gcs = ports.pop(), ports.pop()
        cluster = cls(f"http://127.0.0.1:{dash}", temp_dir, {}, f"127.0.0.1:{gcs}")
        if token:
            cluster.token = secrets.token_hex(32)
            cluster.token_file = temp_dir / "auth_token"
            cluster.token_file.write_text(cluster.token)
            cluster.token_file.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}
        env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_MODE": "token" if token else "disabled", "RAY_TMPDIR": str(temp_dir),
                    "PATH": f"{BIN}:{os.environ.get('PATH', '')}"})  # jobs run `nasq` from this venv
        if token:
            env["RAY_AUTH_TOKEN_PATH"] = str(cluster.token_file)
        cluster.env = env
        common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--object-store-memory",
                  str(200 * 1024 * 1024)]
        head = [str(BIN / "ray"), "start", "--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1",
                "--dashboard-port", str(dash), "--ray-client-server-port", str(ports.pop()), "--include-dashboard",
                "true", "--temp-dir", str(temp_dir)]
        try:
            for i, cpus in enumerate(nodes):
                # each joining node has its own temp dir below the head's: sharing the head's session
                # dir, its runtime-env agent would unpack (and clean up) the job's working_dir in the
                # very folder the job's driver runs in
                cmd = (head if i == 0 else [sys.executable, "-c", JOIN_SHIM, "start", "--address", cluster.gcs_address,
                                            "--temp-dir", str(temp_dir / f"n{i}")])
                cmd = [*cmd, *common, "--num-cpus", str(cpus), "--resources", json.dumps({f"node{i}": 1}),
                       *_node_ports(ports)]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
                if out.returncode != 0:
                    raise RuntimeError(f"ray start (node {i}) failed: {out.stderr[-2000:]}")
                if i == 0:
                    wait_http(cluster.address + "/api/version", 90, token=cluster.token)
        except BaseException:
            cluster.stop()
            raise
        return cluster
