"""Errors that carry what a user needs to read, and the cancel/progress conventions.

Every long-running core function takes ``progress(done, total)`` and a ``cancel`` token: a
callable returning True, or any object with ``is_set()`` (``threading.Event``), checked
between batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class MedViewerError(Exception):
    """An error a user can act on: ``str()`` is one line naming the file and the reason."""

    def __init__(self, path: str, reason: str):
        from medviewer.core.sources import one_line

        reason = one_line(reason)
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class LoadError(MedViewerError):
    """A series (or file) could not be loaded."""


class WorkerCrashed(Exception):
    """A pool process died while working on one file (a native codec aborted or crashed)."""


class WorkerHung(WorkerCrashed):
    """A pool process did not finish one file's work in time; it was killed (see ``pool.task_timeout``)."""


class Cancelled(Exception):
    """The user cancelled a long operation."""


class _Event(Protocol):
    def is_set(self) -> bool: ...


CancelToken = Callable[[], bool] | _Event
ProgressCallback = Callable[[int, int], Any]


def is_cancelled(cancel: CancelToken | None) -> bool:
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)
    if is_set is not None:
        return bool(is_set())
    return bool(cancel())
