"""The viewer runs the assistant with the same torch threads as the command line, at a lower priority."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from medviewer.ai import device as devices
from medviewer.core.errors import Cancelled
from tests.ui.conftest import open_and_wait


def test_inference_threads_are_every_usable_core():
    assert devices.inference_threads() == devices.usable_cores()


def test_gui_run_uses_the_cli_thread_count_in_a_lower_priority_worker(qtbot, window, disc_folder, monkeypatch):
    import medviewer.ai.infer as infer

    folder, _centre = disc_folder
    open_and_wait(qtbot, window, [folder])
    seen: dict = {}

    def fake_predict(volume, models, **kwargs):
        seen["threads"] = kwargs.get("threads")
        seen["thread"] = threading.get_ident()
        if sys.platform.startswith("linux"):
            seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        raise Cancelled("stop here")

    monkeypatch.setattr(infer, "predict", fake_predict)
    window.run_assistant(["some-model"], "cpu")
    qtbot.waitUntil(lambda: "threads" in seen and not window.tasks.running, timeout=10000)
    # The command line calls predict() without threads: configure_threads(None) sets every usable core.
    assert seen["threads"] == devices.inference_threads() == devices.usable_cores()
    assert seen["thread"] != threading.get_ident()
    if sys.platform.startswith("linux"):
        assert seen["nice"] > os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_background_priority_lowers_only_the_calling_thread():
    result: dict = {}

    def body():
        result["ok"] = devices.background_priority()
        result["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert result["ok"] and result["nice"] == min(19, before + devices.BACKGROUND_NICE)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
