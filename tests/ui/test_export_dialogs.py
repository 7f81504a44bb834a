"""Export dialogs start in the series' folder, then in the last export's (remembered in the settings), and
each export ends with "Saved … to PATH" in the status bar; driven through the real QActions."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox

from tests.ui.conftest import open_and_wait
from tests.ui.test_export_ui import _fake_prediction


def _wait(qtbot, window):
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=60000)
    assert window.last_error == "", window.last_error


def test_dialogs_start_in_the_study_folder_then_the_last_export_folder(qtbot, window, disc_folder, tmp_path,
                                                                      monkeypatch):
    folder, _centre = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    export = window.export
    asked: list[tuple[str, str]] = []  # (dialog, start directory)
    answers = {}

    def save_name(_parent, _title, start, _filter=""):
        asked.append(("save", start))
        return answers["save"], ""

    def folder_name(_parent, _title, start=""):
        asked.append(("folder", start))
        return answers["folder"]

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_name)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", folder_name)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)

    # First export: the study's folder, with the suggested name.
    out = tmp_path / "exports"
    out.mkdir()
    answers["save"] = str(out / "view.png")
    export.act_png.trigger()
    _wait(qtbot, window)
    kind, start = asked[-1]
    assert kind == "save" and Path(start).parent == folder and Path(start).suffix == ".png"
    assert (out / "view.png").is_file()
    assert window.statusBar().currentMessage() == f"Saved the view to {out / 'view.png'}"

    # Then the last export's folder, for files and folders alike, kept in the settings.
    answers["save"] = str(out / "report.pdf")
    export.act_report.trigger()
    _wait(qtbot, window)
    assert Path(asked[-1][1]).parent == out.resolve()
    assert window.statusBar().currentMessage() == f"Saved the report to {out / 'report.pdf'}"

    window.predictions[(view.series_key, ("seg",))] = _fake_prediction(view.volume)
    answers["folder"] = str(out / "dicom")
    export.act_dicom.trigger()
    _wait(qtbot, window)
    assert asked[-1] == ("folder", str(out.resolve()))
    assert window.statusBar().currentMessage() == f"Saved the DICOM objects to {out / 'dicom'}"

    answers["folder"] = str(out)
    export.act_anonymize.trigger()
    _wait(qtbot, window)
    assert asked[-1] == ("folder", str((out / "dicom").resolve()))
    message = window.statusBar().currentMessage()
    assert message.startswith(f"Saved the anonymised copy to {out}") and message.endswith("-anonymised")
    assert Path(message.split(" to ", 1)[1]).is_dir()
    assert window.settings.value("export/last_folder") == str(out.resolve())


def test_a_forgotten_last_folder_falls_back_to_the_study_folder(qtbot, window, disc_folder, tmp_path, monkeypatch):
    folder, _centre = disc_folder
    open_and_wait(qtbot, window, [folder])
    window.settings.setValue("export/last_folder", str(tmp_path / "gone"))
    starts = []
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda _p, _t, start, _f="": (starts.append(start), ("", ""))[1])
    window.export.act_png.trigger()
    assert Path(starts[0]).parent == folder
    assert not window.tasks.running  # cancelled dialog: nothing written
