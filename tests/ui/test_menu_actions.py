"""Every export action is driven through its real QAction (``action.trigger()``), as a click in the menu does,
with the file dialogs patched; the written file is checked. View and tool actions are triggered the same way
and their effect on the active viewport is checked."""

from __future__ import annotations

import pydicom
from PIL import Image
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QFileDialog, QMessageBox

from tests.ui.conftest import open_and_wait
from tests.ui.test_export_ui import _fake_prediction


def _wait(qtbot, window):
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=60000)
    assert window.last_error == "", window.last_error


def test_export_actions_through_the_real_qaction(qtbot, window, disc_folder, tmp_path, monkeypatch):
    folder, _centre = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    export = window.export
    out = tmp_path / "out"
    out.mkdir()
    answers = {}
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (answers["save"], ""))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: answers["folder"])
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)

    answers["save"] = str(out / "view.png")
    export.act_png.trigger()
    _wait(qtbot, window)
    with Image.open(out / "view.png") as image:
        assert image.size == (view.width(), view.height())

    export.act_copy.trigger()
    assert not QGuiApplication.clipboard().image().isNull()

    view.set_slice(4)
    export.act_bookmark.trigger()
    assert export.bookmarks[view.series_key] == {4}

    answers["save"] = str(out / "report")  # the suffix is completed
    export.act_report.trigger()
    _wait(qtbot, window)
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
    answers["save"] = str(out / "anon.pdf")
    export.act_report_anonymous.trigger()
    _wait(qtbot, window)
    assert (out / "anon.pdf").read_bytes().startswith(b"%PDF")

    window.predictions[(view.series_key, ("seg",))] = _fake_prediction(view.volume)
    answers["folder"] = str(out / "dicom")
    export.act_dicom.trigger()
    _wait(qtbot, window)
    assert pydicom.dcmread(out / "dicom" / "seg.dcm").Modality == "SEG"
    assert (out / "dicom" / "sr.dcm").exists()

    answers["folder"] = str(out)
    export.act_anonymize.trigger()
    _wait(qtbot, window)
    copies = [p for p in out.glob("*-anonymised") if p.is_dir()]
    assert copies and len([p for p in copies[0].rglob("*") if p.is_file()]) == 10


def test_view_and_tool_actions_through_the_real_qaction(qtbot, window, disc_folder):
    folder, _centre = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    window.act_invert.trigger()
    assert view.invert
    window.act_flip_h.trigger()
    assert view.flip_h
    window.act_flip_v.trigger()
    assert view.flip_v
    window.act_reset.trigger()
    assert not view.flip_h and not view.flip_v
    window.act_fit.trigger()
    window.act_zoom_in.trigger()
    window.act_zoom_out.trigger()
    window.act_one.trigger()
    window.act_rotate.trigger()
    window.tool_actions["distance"].trigger()
    assert view.tool == "distance"
    window.tool_actions["pan"].trigger()
    assert view.tool == "pan"
    window.layout_actions["2x2"].trigger()
    assert len(window.grid.visible_views()) == 4
    window.layout_actions["1x1"].trigger()
    assert len(window.grid.visible_views()) == 1
    window.act_overlays.trigger()
    assert not window.act_overlays.isChecked()
    window.act_overlays.trigger()
    assert window.last_error == ""
