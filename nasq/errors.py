"""Error types. Every user-facing failure is a :class:`NasqError` with a one-line message."""

from __future__ import annotations


class NasqError(Exception):
    """Base class of every error nasq raises on purpose; the CLI prints it as one line, exit 2."""


class ConfigError(NasqError, ValueError):
    """A file the user gave (experiment, catalog entry) is missing or invalid.

    The message names the file, the field and the offending value, e.g.
    ``search_spaces/x.yaml: stages[1].kernel: choices must be odd, got 4``.
    """

    def __init__(self, source: str, field: str, message: str):
        self.source, self.field, self.detail = source, field, message
        where = f"{source}: {field}: " if field else f"{source}: "
        super().__init__(where + message)


class LineageError(NasqError):
    """An artifact was made from a different space, profile or recipe than the one in use."""


class MissingDependencyError(NasqError, ImportError):
    """An optional dependency is not installed; the message says what to install."""


class NotFittedError(NasqError, RuntimeError):
    """A predictor was used before ``fit``."""
