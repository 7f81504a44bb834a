"""Collect what reading a file says on the side: Python warnings, pydicom's log records and the
lines native codecs write straight to the process's stderr (OpenJPEG's "Invalid number of tiles").

A damaged file must give one line naming it and the reason, not two to four lines of a codec's
chatter. Inside :func:`captured` those messages are collected and handed back, so the caller can
attach them to the file as its warnings.

Captures nest and may overlap across threads: the first one to start redirects file
descriptor 2 to an unlinked temporary file and starts recording warnings; the last one to end
restores both. Each capture gets what was said while it was open (under overlap, a message may
be attributed to more than one file; none reaches the terminal).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# At most this many messages, each cut to this many characters, are kept per capture.
MAX_MESSAGES = 8
MAX_CHARS = 200

_lock = threading.RLock()
_depth = 0
_base = 0  # captures held for the life of the process (1 in pool processes)
_saved_fd: int | None = None
_capture_fd: int | None = None
_warnings_context: warnings.catch_warnings | None = None
_records: list[str] = []


class _ListHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            _records.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a log record that cannot be formatted is dropped
            pass


_handler = _ListHandler(level=logging.WARNING)


def _start() -> None:
    global _saved_fd, _capture_fd, _warnings_context
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    try:
        capture = tempfile.TemporaryFile(prefix="medviewer-stderr-")
        _capture_fd = os.dup(capture.fileno())
        capture.close()
        _saved_fd = os.dup(2)
        os.dup2(_capture_fd, 2)
    except OSError:
        _saved_fd = _capture_fd = None
    _warnings_context = warnings.catch_warnings(record=True)
    recorded = _warnings_context.__enter__()
    warnings.simplefilter("always")
    warnings.simplefilter("ignore", ResourceWarning)  # the collector's business, not the file's
    _records_from_warnings[:] = [recorded]
    logger = logging.getLogger("pydicom")
    logger.addHandler(_handler)
    _saved_propagate[:] = [logger.propagate]
    logger.propagate = False


def _stop() -> None:
    global _saved_fd, _capture_fd, _warnings_context
    logger = logging.getLogger("pydicom")
    logger.removeHandler(_handler)
    if _saved_propagate:
        logger.propagate = _saved_propagate[0]
    if _warnings_context is not None:
        _warnings_context.__exit__(None, None, None)
        _warnings_context = None
    if _saved_fd is not None:
        try:
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):
            pass
        os.dup2(_saved_fd, 2)
        os.close(_saved_fd)
        os.close(_capture_fd)
        _saved_fd = _capture_fd = None
    _records.clear()
    _records_from_warnings.clear()


_records_from_warnings: list[list] = []
_saved_propagate: list[bool] = []


def _position() -> tuple[int, int, int]:
    recorded = _records_from_warnings[0] if _records_from_warnings else []
    offset = os.lseek(_capture_fd, 0, os.SEEK_END) if _capture_fd is not None else 0
    return len(recorded), len(_records), offset


def _since(start: tuple[int, int, int]) -> list[str]:
    recorded = _records_from_warnings[0] if _records_from_warnings else []
    messages = [str(w.message) for w in recorded[start[0]:]]
    messages += _records[start[1]:]
    if _capture_fd is not None:
        end = os.lseek(_capture_fd, 0, os.SEEK_END)
        if end > start[2]:
            size = min(end - start[2], 64 * 1024)
            data = os.pread(_capture_fd, size, start[2])
            messages += data.decode("utf-8", "replace").splitlines()
    return messages


def clean(messages: list[str]) -> list[str]:
    """Distinct, non-empty messages, each on one line and cut short, at most :data:`MAX_MESSAGES`."""
    out: list[str] = []
    for message in messages:
        text = " ".join(str(message).split())
        if len(text) > MAX_CHARS:
            text = text[: MAX_CHARS - 1] + "…"
        if text and text not in out:
            out.append(text)
    if len(out) > MAX_MESSAGES:
        out = out[:MAX_MESSAGES - 1] + [f"and {len(out) - MAX_MESSAGES + 1} more message(s)"]
    return out


@contextmanager
def captured() -> Iterator[list[str]]:
    """Collect warnings, pydicom log records and native stderr lines written inside the block.

    The list yielded is filled (cleaned, see :func:`clean`) when the block ends, also when it
    ends with an exception.
    """
    global _depth
    with _lock:
        if _depth == 0:
            _start()
        _depth += 1
        start = _position()
    messages: list[str] = []
    try:
        yield messages
    finally:
        with _lock:
            try:
                messages.extend(clean(_since(start)))
            except OSError:
                pass
            _depth -= 1
            if _depth == 0:
                _stop()
            elif _depth == _base:
                _reset()


def _reset() -> None:
    """Forget what was collected (nothing is open that still needs it)."""
    _records.clear()
    if _records_from_warnings:
        _records_from_warnings[0].clear()
    if _capture_fd is not None:
        try:
            os.ftruncate(_capture_fd, 0)
            os.lseek(_capture_fd, 0, os.SEEK_SET)
        except OSError:
            pass


def capture_for_life() -> None:
    """Keep a capture open for the rest of this process (pool processes call it at start), so
    that nothing a codec writes reaches the terminal; each :func:`captured` block still gets
    its own messages. Standard output goes to /dev/null: a pool process has nothing to say there,
    and it must not hold the caller's terminal or pipe open."""
    global _depth, _base
    with _lock:
        if _base:
            return
        if _depth == 0:
            _start()
        _depth += 1
        _base = 1
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    except OSError:
        pass
