"""Exceptions raised on bad user input.

Every message says what was expected and what came, so a user can fix the input without
reading the code. Internal invariants use ``assert`` instead.
"""

from __future__ import annotations


class Sim2RealError(Exception):
    """Base class of the errors this package raises on purpose."""


class ConfigError(Sim2RealError, ValueError):
    """A configuration value is missing, of the wrong type, or out of range."""


class DataError(Sim2RealError, ValueError):
    """A dataset, shard, image or label file is missing, corrupt or inconsistent."""


class RendererError(Sim2RealError, RuntimeError):
    """The requested renderer cannot be used on this machine."""


class CheckpointError(Sim2RealError, ValueError):
    """A checkpoint or bundle is missing files or does not match what the code expects."""


class InputError(Sim2RealError, ValueError):
    """An array handed to a model or runtime has the wrong shape, dtype or values."""


def expect(condition: bool, message: str, error: type[Exception] = InputError) -> None:
    """Raise ``error(message)`` unless ``condition`` holds.

    Example:
        >>> expect(3 > 2, "never raised")
    """
    if not condition:
        raise error(message)
