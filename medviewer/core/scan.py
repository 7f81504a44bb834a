"""``medviewer.scan(paths)``: headers of everything under the given paths, grouped and sorted.

No pixel is decoded here. Headers are read in parallel (processes, since parsing holds the
GIL) when there are enough files to pay for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from medviewer.core.errors import Cancelled, CancelToken, ProgressCallback, WorkerCrashed, WorkerHung, is_cancelled
from medviewer.core.header import Instance
from medviewer.core.pool import kill, process_pool, replace_broken, run_isolated, task_timeout
from medviewer.core.reader import read_instance
from medviewer.core.series import ScanResult, build_series, refused_sorted
from medviewer.core.sources import Refused, Source, iter_sources, prefetch

# Below this many files a pool costs more than it saves.
PARALLEL_MIN_FILES = 48
CHUNK = 16


def read_instances(sources: Sequence[Source]) -> list[Instance | Refused]:
    """Read headers of a batch of sources (runs in a pool process). Never raises for a bad file."""
    return [read_instance(source, keep_header=False) for source in sources]


def _failed(source: Source, exc: BaseException) -> Refused:
    text = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else ""
    return Refused(source.name, f"could not be read ({type(exc).__name__}{': ' + text if text else ''})")


def scan(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    *,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    parallel: bool = True,
) -> ScanResult:
    """Find the studies and series under ``paths`` (files, folders, ZIP archives, DICOMDIR).

    Returns a :class:`ScanResult` whose ``refused`` list names every file that was not taken
    and why. ``progress(done, total)`` is called as headers are read; ``cancel`` (a callable
    or an object with ``is_set()``) stops the scan between batches with :class:`Cancelled`.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    sources: list[Source] = []
    refused: list[Refused] = []
    for item in iter_sources(paths):
        (sources if isinstance(item, Source) else refused).append(item)
        if is_cancelled(cancel):
            raise Cancelled("scan cancelled")

    prefetch(sources)
    results = _read_all(sources, progress, cancel, parallel)
    instances = []
    for result in results:
        if isinstance(result, Instance):
            instances.append(result)
        else:
            refused.append(result)
    # Damaged geometry (huge or NaN positions) must not make numpy warn on stderr while grouping.
    with np.errstate(all="ignore"):
        series = build_series(instances)
    return ScanResult(series, refused_sorted(refused))


def _read_all(sources: list[Source], progress: Callable | None, cancel, parallel: bool) -> list:
    total = len(sources)
    if progress:
        progress(0, total)
    pool = process_pool() if parallel and total >= PARALLEL_MIN_FILES else None
    results: list = []
    if pool is None:
        for index, source in enumerate(sources, start=1):
            if is_cancelled(cancel):
                raise Cancelled("scan cancelled")
            results.append(read_instance(source))
            if progress and (index % CHUNK == 0 or index == total):
                progress(index, total)
        return results

    chunks = [sources[i:i + CHUNK] for i in range(0, total, CHUNK)]
    try:
        futures = [pool.submit(read_instances, chunk) for chunk in chunks]
    except (BrokenProcessPool, RuntimeError):
        replace_broken(pool)
        futures = []
    done = 0
    # Batches lost to a dead pool process: their files are read again one at a time in fresh
    # processes (never here: what crashed a process would crash this one).
    lost: list[Source] = []
    try:
        for index, chunk in enumerate(chunks):
            if is_cancelled(cancel):
                raise Cancelled("scan cancelled")
            if index >= len(futures):
                lost.extend(chunk)
                continue
            try:
                batch = futures[index].result(timeout=task_timeout())
            except BrokenProcessPool:
                lost.extend(chunk)
                continue
            except FutureTimeout:
                # A file hangs the reader in native code: the pool is killed and this batch, like
                # every other still pending, is read again one file at a time (each with its timeout).
                kill(pool)
                lost.extend(chunk)
                continue
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - e.g. a result that did not unpickle
                batch = [_failed(source, exc) for source in chunk]
            results.extend(batch)
            done += len(batch)
            if progress:
                progress(done, total)
    finally:
        for future in futures:
            future.cancel()
    if lost:
        replace_broken(pool)
        for source in lost:
            if is_cancelled(cancel):
                raise Cancelled("scan cancelled")
            results.append(_read_isolated(source))
            done += 1
            if progress:
                progress(done, total)
    return results


def _read_isolated(source: Source) -> Instance | Refused:
    try:
        return run_isolated(read_instances, [source])[0]
    except WorkerHung as exc:
        return Refused(source.name, f"could not be read (the reader {exc} on this file)")
    except WorkerCrashed:
        return Refused(source.name, "could not be read (the reader crashed on this file)")
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001
        return _failed(source, exc)
