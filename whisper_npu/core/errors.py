"""The one error a stage reports without a traceback."""
from __future__ import annotations


class StageError(RuntimeError):
    """A stage cannot do its work; the message says why and what to do. Exit code 1, no traceback."""
