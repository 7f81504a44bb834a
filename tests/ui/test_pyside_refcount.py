"""Guard against PySide6 releases that leak references to True/None.

PySide6 6.12.0 on Python 3.11 drops a reference to ``True`` on every signal emit and to
``None`` on every void C++ call; the interpreter aborts ("bool_dealloc") after a few
thousand. pyproject pins PySide6-Essentials<6.12; this test checks the installed release
instead of hoping the pin is enough.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QObject, Signal  # noqa: E402
from PySide6.QtWidgets import QWidget  # noqa: E402


class _Emitter(QObject):
    flag = Signal(bool)
    nothing = Signal()


def test_signal_emits_keep_true_and_none_alive(qapp):
    emitter = _Emitter()
    received = []
    emitter.flag.connect(received.append)
    emitter.nothing.connect(lambda: None)
    widget = QWidget()
    # Warm up caches before counting.
    for _ in range(100):
        emitter.flag.emit(True)
        emitter.nothing.emit()
        widget.setEnabled(True)
    true_before, none_before = sys.getrefcount(True), sys.getrefcount(None)
    for _ in range(5000):
        emitter.flag.emit(True)
        emitter.nothing.emit()
        widget.setEnabled(True)  # a void C++ call taking a bool
        widget.update()  # a void C++ call
    true_after, none_after = sys.getrefcount(True), sys.getrefcount(None)
    assert len(received) == 5100
    # Immortal objects (Python 3.12+) report a huge constant; either way no steady loss.
    assert true_after >= true_before - 50, f"True lost {true_before - true_after} references"
    assert none_after >= none_before - 50, f"None lost {none_before - none_after} references"
    widget.deleteLater()
