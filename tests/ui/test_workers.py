"""The worker pattern: jobs run off the GUI thread, their callbacks run on it."""

from __future__ import annotations

import threading

import pytest

from medviewer.core.errors import LoadError
from medviewer.ui.workers import TaskManager


@pytest.fixture
def manager(qtbot):
    """A task manager whose threads have all stopped before it goes (a QThread destroyed while its thread still
    runs aborts the interpreter)."""
    tasks = TaskManager()
    yield tasks
    tasks.shutdown()
    qtbot.waitUntil(lambda: not tasks.running, timeout=5000)


def test_callbacks_run_on_the_gui_thread_even_as_lambdas(qtbot, manager):
    seen = {}

    def job(context):
        seen["job"] = threading.current_thread()
        for i in range(3):
            context.partial(i)
            context.progress(i + 1, 3)
        return "done"

    manager.start(job, "test",
                  on_partial=lambda value: seen.setdefault("partial", threading.current_thread()),
                  on_progress=lambda done, total: seen.setdefault("progress", threading.current_thread()),
                  on_finished=lambda value: seen.setdefault("finished", (value, threading.current_thread())))
    qtbot.waitUntil(lambda: "finished" in seen and not manager.running, timeout=5000)
    main = threading.main_thread()
    assert seen["job"] is not main
    assert seen["partial"] is main and seen["progress"] is main
    assert seen["finished"] == ("done", main)


def test_errors_and_cancel_come_back_as_signals(qtbot, manager):
    outcome = {}

    def failing(context):
        raise LoadError("scan/IM1.dcm", "truncated pixel data")

    manager.start(failing, "fail", on_failed=lambda message: outcome.setdefault("failed", message))
    qtbot.waitUntil(lambda: "failed" in outcome, timeout=5000)
    assert outcome["failed"] == "scan/IM1.dcm: truncated pixel data"

    started = threading.Event()

    def slow(context):
        started.set()
        while True:
            context.check()

    worker = manager.start(slow, "slow", on_cancelled=lambda: outcome.setdefault("cancelled", True))
    assert started.wait(5)
    worker.cancel()
    qtbot.waitUntil(lambda: outcome.get("cancelled") and not manager.running, timeout=5000)
