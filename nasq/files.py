"""Atomic writes and content hashes. Nothing here pickles."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nasq.errors import ConfigError


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


_UMASK = _umask()
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")  # mkstemp's names, see write_beside


def cache_dir() -> Path:
    """``$NASQ_CACHE_DIR``, else ``~/.cache/nasq``: per user, outside every catalog (host checks,
    compiled kernels)."""
    env = os.environ.get("NASQ_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "nasq"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    return sha256_bytes(Path(path).read_bytes())


def short_hash(full: str) -> str:
    return full[:12]


def write_beside(path: str | os.PathLike, data: bytes) -> Path:
    """``data`` in a new, uniquely named temp file in ``path``'s folder, flushed and fsynced but not
    yet in place: the caller renames it onto ``path`` (:func:`replace_all`) or removes it. If the
    write fails (a full disk) the temp file is removed and nothing else is touched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a published file gets the usual mode
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def temp_target(name: str) -> str | None:
    """The file name a temp file of :func:`write_beside` was to become, or None when ``name`` is
    not one (``.supernet.json.k2j3h4g5.tmp`` -> ``supernet.json``): left over by a killed writer."""
    found = _TEMP_NAME.fullmatch(name)
    return found["target"] if found else None


def replace_all(moves: Sequence[tuple[Path, Path]]) -> None:
    """``os.replace`` each (temp, target) in order; on a failure the temps not yet moved are removed.
    Each rename is atomic, the set is not: a reader that needs several files to match checks it
    (e.g. a hash of one recorded in the other, see :mod:`nasq.supernet.checkpoint`)."""
    done = 0
    try:
        for tmp, target in moves:
            os.replace(tmp, target)
            done += 1
    except BaseException:
        for tmp, _ in moves[done:]:
            Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temp file in the same folder, fsync, then ``os.replace``: readers never see half."""
    path = Path(path)
    replace_all([(write_beside(path, data), path)])
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_bytes(obj: Any) -> bytes:
    """How nasq writes a JSON document: indented, sorted keys, numpy values as plain numbers."""
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode("utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, json_bytes(obj))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from a file a user gave us; any problem is one ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "", "file not found")
    try:
        data = read_json(path)
    except RecursionError:
        raise ConfigError(str(path), "", "JSON nested too deeply") from None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), "", f"not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", f"expected a JSON object, got {type(data).__name__}")
    return data
