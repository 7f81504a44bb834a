"""The one worker pattern for long jobs: scanning, decoding, inference, export.

A job is a plain (Qt-free) function ``job(context) -> result``. It runs in a ``QObject`` moved
to its own ``QThread`` and talks back only through signals: ``progress(done, total)``,
``partial(object)``, ``finished(result)``, ``failed(message)``, ``cancelled()``. The context
carries the cancel token (a ``threading.Event`` the core functions check between batches)
and rate-limited ``progress``/``partial`` callbacks. A worker never touches a widget; values
it needs are passed in at start.

:class:`TaskManager` keeps a strong reference to running workers, lets the status bar cancel
them and waits for them when the application quits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from medviewer.core.errors import Cancelled, MedViewerError


class JobContext:
    """What a running job may use: ``cancel`` (Event), ``progress`` and ``partial``."""

    def __init__(self, worker: Worker):
        self._worker = worker
        self.cancel = worker.cancel_event
        self._last_progress = 0.0

    def progress(self, done: int, total: int) -> None:
        now = time.monotonic()
        # At most ~30 updates a second reach the GUI; the last one always does.
        if done >= total or now - self._last_progress > 0.033:
            self._last_progress = now
            self._worker.progress.emit(int(done), int(total))

    def partial(self, value: Any) -> None:
        self._worker.partial.emit(value)

    def check(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("cancelled")


class Worker(QObject):
    progress = Signal(int, int)
    partial = Signal(object)
    finished = Signal(object)
    failed = Signal(str)
    cancelled = Signal()

    def __init__(self, job: Callable[[JobContext], Any], name: str = "task"):
        super().__init__()
        self.job = job
        self.name = name
        self.cancel_event = threading.Event()
        self.done = False

    @Slot()
    def run(self) -> None:
        context = JobContext(self)
        try:
            result = self.job(context)
        except Cancelled:
            self.cancelled.emit()
        except MedViewerError as exc:
            self.failed.emit(str(exc))
        except Exception as exc:  # noqa: BLE001 - errors come back as a signal, never vanish
            # The details go to the "medviewer" logger, never raw to the terminal.
            logging.getLogger("medviewer").debug("%s failed", self.name, exc_info=True)
            self.failed.emit(f"{self.name} failed: {type(exc).__name__}: {exc}")
        else:
            if self.cancel_event.is_set():
                self.cancelled.emit()
            else:
                self.finished.emit(result)
        finally:
            self.done = True

    def cancel(self) -> None:
        self.cancel_event.set()


class _Relay(QObject):
    """Receives a worker's signals on the GUI thread and calls the job's callbacks there.

    A signal connected to a plain function or lambda runs it on the emitting (worker) thread;
    connected to a slot of a QObject living on the GUI thread, it is queued to the GUI thread.
    """

    def __init__(self, manager: TaskManager, worker: Worker, callbacks: dict[str, Callable | None]):
        super().__init__()  # owned by the manager's Python dicts, not by a Qt parent
        self.manager = manager
        self.worker = worker
        self.callbacks = callbacks

    def _call(self, name: str, *args) -> None:
        callback = self.callbacks.get(name)
        if callback is not None:
            callback(*args)

    @Slot(int, int)
    def on_progress(self, done: int, total: int) -> None:
        self._call("progress", done, total)

    @Slot(object)
    def on_partial(self, value) -> None:
        self._call("partial", value)

    @Slot(object)
    def on_finished(self, value) -> None:
        self._call("finished", value)

    @Slot(str)
    def on_failed(self, message: str) -> None:
        self._call("failed", message)

    @Slot()
    def on_cancelled(self) -> None:
        self._call("cancelled")

    @Slot()
    def on_thread_finished(self) -> None:
        self.manager._finish(self.worker)


class TaskManager(QObject):
    """Starts workers on their own threads and keeps them alive until they finish."""

    started = Signal(object)
    ended = Signal(object)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._running: dict[Worker, QThread] = {}
        self._relays: dict[Worker, _Relay] = {}
        # Relays of finished jobs: released at the next start, never inside their own slot.
        self._spent: list[_Relay] = []

    def start(self, job: Callable[[JobContext], Any], name: str, *,
              on_finished: Callable[[Any], Any] | None = None,
              on_failed: Callable[[str], Any] | None = None,
              on_partial: Callable[[Any], Any] | None = None,
              on_progress: Callable[[int, int], Any] | None = None,
              on_cancelled: Callable[[], Any] | None = None) -> Worker:
        self._spent.clear()
        worker = Worker(job, name)
        # Parented to the manager: Qt, not Python's garbage collector, decides when the thread
        # object goes, and only after it has stopped.
        thread = QThread(self)
        thread.setObjectName(f"medviewer-{name}")
        worker.moveToThread(thread)
        relay = _Relay(self, worker, {"finished": on_finished, "failed": on_failed, "partial": on_partial,
                                      "progress": on_progress, "cancelled": on_cancelled})
        worker.progress.connect(relay.on_progress)
        worker.partial.connect(relay.on_partial)
        worker.finished.connect(relay.on_finished)
        worker.failed.connect(relay.on_failed)
        worker.cancelled.connect(relay.on_cancelled)
        for signal in (worker.finished, worker.failed, worker.cancelled):
            signal.connect(thread.quit)
        thread.finished.connect(relay.on_thread_finished)
        thread.started.connect(worker.run)
        self._running[worker] = thread
        self._relays[worker] = relay
        thread.start()
        self.started.emit(worker)
        return worker

    def _finish(self, worker: Worker) -> None:
        # Python owns the worker and its thread (no Qt parent): dropping the last reference
        # deletes them once the thread has stopped. deleteLater here would delete them twice.
        thread = self._running.pop(worker, None)
        if thread is not None:
            thread.wait()
            thread.deleteLater()
        relay = self._relays.pop(worker, None)
        if relay is not None:
            self._spent.append(relay)
        self.ended.emit(worker)

    @property
    def running(self) -> list[Worker]:
        return list(self._running)

    def cancel_all(self) -> None:
        for worker in self._running:
            worker.cancel()

    def shutdown(self, timeout_ms: int = 10000) -> None:
        """Cancel every worker and wait for its thread (called on aboutToQuit)."""
        self.cancel_all()
        for worker, thread in list(self._running.items()):
            thread.quit()
            thread.wait(timeout_ms)
            self._running.pop(worker, None)
