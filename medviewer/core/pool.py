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
import threading
from concurrent.futures import ProcessPoolExecutor

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
            _pool = ProcessPoolExecutor(max_workers=worker_count(), mp_context=context)
        return _pool


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
