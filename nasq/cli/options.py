"""Checks of command-line values that run before a command does any work: output folders that can
be written, names that become folder or MLflow names, bounded counts and texts. Each failure is one
:class:`~nasq.errors.ConfigError` line naming the option and the (shortened) value; commands import
this module inside their bodies, like the rest of their machinery."""

from __future__ import annotations

import os
from pathlib import Path

from nasq.errors import ConfigError
from nasq.specs import MAX_TEXT_CHARS, check_name, check_path_text, one_line, show

__all__ = ["SOURCE", "catalog_ref", "count", "is_dir", "name", "out_dir", "show", "text"]
SOURCE = "command line"


def name(value: str, option: str) -> str:
    """``value`` as a name (a folder, a profile, an MLflow model): see :data:`nasq.specs.NAME_PATTERN`."""
    try:
        return check_name(value)
    except ValueError as e:
        raise ConfigError(SOURCE, option, str(e)) from None


def catalog_ref(value: str, option: str) -> str:
    """A catalog entry by name, or a YAML file by path (with a ``/`` or a ``.yaml`` suffix)."""
    try:
        return check_path_text(value) if "/" in value or value.endswith(".yaml") else check_name(value)
    except ValueError as e:
        raise ConfigError(SOURCE, option, str(e)) from None


def text(value: str | None, option: str) -> str | None:
    """A free text (an address, a URI, a run folder or id): no control characters, bounded length."""
    if value is None:
        return None
    if len(value) > MAX_TEXT_CHARS or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(SOURCE, option, f"must be at most {MAX_TEXT_CHARS} characters without control "
                          f"characters, got {show(value)}")
    return value


def is_dir(path: Path) -> bool:
    """``path.is_dir()``, False where the file system refuses the name (too long, a NUL)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def count(value: int | None, option: str, low: int, high: int) -> int | None:
    if value is not None and not low <= value <= high:
        raise ConfigError(SOURCE, option, f"must be >= {low} and <= {high:,}, got {show(value)}")
    return value


def out_dir(path: Path, option: str, *, empty: bool, source: str = SOURCE) -> Path:
    """Before any work: ``path`` is a folder nasq can write into - an existing folder (empty, with
    ``empty``), or one it can create because its nearest existing ancestor is a writable folder."""
    raw = str(path)
    try:
        check_path_text(raw)
    except ValueError as e:
        raise ConfigError(source, option, str(e)) from None
    try:
        if path.exists():
            if not path.is_dir():
                raise ConfigError(source, option, f"exists and is not a folder, got {show(raw)}")
            if empty and any(path.iterdir()):
                raise ConfigError(source, option, f"exists and is not an empty folder, got {show(raw)}")
            probe = path
        else:
            probe = next((p for p in path.parents if p.exists()), Path("."))
            if not probe.is_dir():
                raise ConfigError(source, option, f"cannot be created: {show(str(probe))} is not a folder, "
                                  f"got {show(raw)}")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise ConfigError(source, option, f"not writable: no write permission on {show(str(probe))}")
    except OSError as e:
        raise ConfigError(source, option, f"not usable ({one_line(e.strerror or e)}), got {show(raw)}") from None
    return path
