"""One exception hierarchy. Every error names the thing it is about.

>>> raise BadRowError("data.jsonl", 7, "missing field 'question'")
Traceback (most recent call last):
...
mycelium.core.errors.BadRowError: data.jsonl:7: missing field 'question'
"""

from __future__ import annotations


class MyceliumError(Exception):
    """Base class of every error Mycelium raises on purpose."""


class ConfigError(MyceliumError, ValueError):
    """A configuration value is invalid; the message names the field."""


class BadRowError(MyceliumError):
    """A dataset row could not be turned into a Problem."""

    def __init__(self, file: str, line: int, reason: str):
        self.file, self.line, self.reason = file, line, reason
        super().__init__(f"{file}:{line}: {reason}")


class StoreError(MyceliumError):
    """A store operation failed; carries the key."""

    def __init__(self, key: str, reason: str):
        self.key, self.reason = key, reason
        super().__init__(f"{key}: {reason}")


class MissingKeyError(StoreError, KeyError):
    def __init__(self, key: str):
        super().__init__(key, "no such key")

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return f"{self.key}: no such key"


class TeacherError(MyceliumError):
    """The teacher model could not be loaded or does not give what capture needs."""


class AttentionUnavailableError(TeacherError):
    """The model returned no attention weights (sdpa/flash attention ignore output_attentions)."""


class CaptureError(MyceliumError):
    """Capturing one problem failed; carries the problem id."""

    def __init__(self, problem_id: str, reason: str):
        self.problem_id, self.reason = problem_id, reason
        super().__init__(f"problem {problem_id}: {reason}")


class ChunkFormatError(MyceliumError):
    """A chunk is corrupt or of an unknown format version; carries its key."""

    def __init__(self, key: str, reason: str):
        self.key, self.reason = key, reason
        super().__init__(f"chunk {key}: {reason}")


class RunNotFoundError(MyceliumError):
    """A stage was asked to work on a run (or an upstream stage) that is not in the store."""


class IntegrityError(MyceliumError):
    """An input does not match what its commit marker or its sibling files say; carries the item."""

    def __init__(self, item: str, reason: str):
        self.item, self.reason = item, reason
        super().__init__(f"{item}: {reason}")
