"""The one process pool that header reading and compressed-frame decoding share.

Python-level DICOM parsing and most codecs hold the GIL, so parallel work needs processes.
The pool is started once (forkserver: safe beside Qt's threads, cheap per task) and kept
for the life of the program; :func:`warm_up` starts it early so the first load does not
pay for it.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None


def worker_count() -> int:
    """Processes to use: the cores this process may run on (``MEDVIEWER_WORKERS`` overrides)."""
    configured = os.environ.get("MEDVIEWER_WORKERS")
    if configured:
        try:
            return max(1, int(configured))
        except ValueError:
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def process_pool() -> ProcessPoolExecutor | None:
    """The shared pool, or None on a single core (where a pool only adds overhead)."""
    global _pool
    if worker_count() < 2 or not _main_importable():
        return None
    with _lock:
        if _pool is None:
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            context = multiprocessing.get_context(method)
            if method == "forkserver":
                context.set_forkserver_preload(["medviewer.core.decode"])
            _pool = ProcessPoolExecutor(max_workers=worker_count(), mp_context=context,
                                        initializer=_worker_start)
        return _pool


def _worker_start() -> None:
    # What codecs write to stderr becomes the warnings of the file being read (see capture).
    from medviewer.core.capture import capture_for_life

    capture_for_life()


def task_timeout() -> float:
    """Seconds one pool task (one file's header, one batch of frames) may take before its process is
    killed as hung (``MEDVIEWER_TASK_TIMEOUT`` overrides; default 120 s, far above any real file)."""
    try:
        return max(0.1, float(os.environ.get("MEDVIEWER_TASK_TIMEOUT", "120")))
    except ValueError:
        return 120.0


def kill(pool: ProcessPoolExecutor | None) -> None:
    """Kill every process of ``pool`` (one of them is stuck in native code) and drop the pool; its
    pending tasks fail with ``BrokenProcessPool`` and the next :func:`process_pool` starts afresh."""
    if pool is None:
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        try:
            os.kill(process.pid, signal.SIGKILL)
        except (OSError, AttributeError, TypeError):
            pass
    replace_broken(pool)


def replace_broken(pool: ProcessPoolExecutor | None) -> None:
    """Drop ``pool`` after one of its processes died (a codec crashed): the next
    :func:`process_pool` starts fresh processes. Its other processes are stopped."""
    global _pool
    if pool is None:
        return
    with _lock:
        if _pool is pool:
            _pool = None
    try:
        pool.shutdown(wait=False, cancel_futures=True)
    except Exception:  # noqa: BLE001 - a broken pool may fail to shut down cleanly; it is dropped anyway
        pass


def run_isolated(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a pool process, never in this one: a native crash there (abort,
    segmentation fault) costs that process, not the program.

    If the pool breaks while this call runs it is replaced and the call is tried once more, alone;
    should it break the fresh pool too, :class:`~medviewer.core.errors.WorkerCrashed` is raised.
    A call still running after :func:`task_timeout` seconds has its process killed and raises
    :class:`~medviewer.core.errors.WorkerHung` (not retried: it would hang again).
    Without a pool (one core) the call runs here.
    """
    from medviewer.core.errors import WorkerCrashed, WorkerHung

    for _attempt in range(2):
        pool = process_pool()
        if pool is None:
            return function(*args)
        try:
            return pool.submit(function, *args).result(timeout=task_timeout())
        except FutureTimeout:
            kill(pool)
            raise WorkerHung(f"did not finish within {task_timeout():g} s") from None
        except BrokenProcessPool:
            replace_broken(pool)
        except RuntimeError as exc:  # submitted to a pool that was shut down meanwhile
            if "shutdown" not in str(exc) and "broken" not in str(exc).lower():
                raise
            replace_broken(pool)
    raise WorkerCrashed("the decoder crashed")


def _main_importable() -> bool:
    """Pool processes re-import the main script; code fed on standard input cannot be. A frozen bundle's
    workers are the executable itself, started through ``multiprocessing.freeze_support()``."""
    import sys

    if getattr(sys, "frozen", False):
        return True
    path = getattr(sys.modules.get("__main__"), "__file__", None)
    return path is None or os.path.exists(path)


def _ping(_: int = 0) -> int:
    return os.getpid()


def warm_up() -> None:
    """Start the pool's processes now (blocking until each has answered once)."""
    pool = process_pool()
    if pool is not None:
        list(pool.map(_ping, range(worker_count() * 2)))


def shutdown() -> None:
    global _pool
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=True, cancel_futures=True)
            _pool = None


atexit.register(shutdown)
