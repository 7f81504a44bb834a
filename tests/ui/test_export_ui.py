"""File → Export in the viewer: PNG, clipboard, the PDF report with bookmarks, DICOM objects, anonymised copy."""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom
from PIL import Image
from PySide6.QtGui import QGuiApplication

from medviewer.ai.findings import find_findings
from medviewer.ai.prediction import Prediction
from tests.ui.conftest import open_and_wait


def _wait_written(qtbot, window, count_before):
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=60000)
    assert window.last_error == "", window.last_error


def _fake_prediction(volume):
    """What the assistant would hold for the disc series: the disc labelled a nodule on the middle slices."""
    mask = np.zeros(volume.shape, dtype=np.uint8)
    mask[3:7] = (volume.voxels[3:7] > 0).astype(np.uint8) * 2
    prediction = Prediction(
        series_uid=volume.series_uid, sop_instance_uids=volume.sop_instance_uids,
        positions_lps_mm=[tuple(p) for p in volume.positions_lps_mm], classes=["nodule"],
        slice_probabilities=np.linspace(0, 1, volume.shape[0], dtype=np.float32)[:, None], study_probability=1.0,
        mask=mask, labels={2: {"name": "nodule", "color": "#ff3030", "threshold": 0.5}},
        models=[{"id": "chest-ct-lung-nodule-seg", "name": "seg", "version": "1.0.0", "sha256": "cd" * 32,
                 "task": "segmentation", "threshold": 0.5}],
        device="CPU", complete=True)
    prediction.findings = find_findings(mask, volume, label_value=2, label_name="nodule")
    return prediction


def test_png_clipboard_and_report_with_a_bookmark(qtbot, window, disc_folder, tmp_path):
    folder, _centre = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    export = window.export
    # the menu is where a user looks for it
    titles = [a.text() for a in window.menuBar().actions()[0].menu().actions()]
    assert "&Export" in titles and "&Bookmark Slice" in titles

    png = tmp_path / "view.png"
    export.save_png(str(png))
    _wait_written(qtbot, window, 0)
    with Image.open(png) as image:
        assert image.size == (view.width(), view.height())
        assert np.unique(np.asarray(image.convert("L"))).size > 2  # the slice, not a blank picture

    export.copy_view()
    assert not QGuiApplication.clipboard().image().isNull()

    view.set_slice(7)
    export.toggle_bookmark()
    assert window.export.bookmarks[view.series_key] == {7} and "bookmarked" in view._labels["top_right"].text()
    pdf = tmp_path / "report.pdf"
    export.save_report(anonymize=False, path=str(pdf))
    _wait_written(qtbot, window, 0)
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    assert "DISC01" in text and "Slice 8 of 10" in text and "bookmark" in text
    export.toggle_bookmark()
    assert window.export.bookmarks[view.series_key] == set()


def test_dicom_objects_and_anonymised_copy(qtbot, window, disc_folder, tmp_path):
    folder, _centre = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    export = window.export
    export.save_dicom(str(tmp_path / "out"), force=False)  # no prediction yet: a message, nothing written
    assert "Run the assistant" in window.last_error and not (tmp_path / "out").exists()
    window.last_error = ""
    window.predictions[(view.series_key, ("seg",))] = _fake_prediction(view.volume)
    export.save_dicom(str(tmp_path / "out"), force=False)
    _wait_written(qtbot, window, 0)
    seg = pydicom.dcmread(tmp_path / "out" / "seg.dcm")
    source = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
    assert seg.StudyInstanceUID == source.StudyInstanceUID and (tmp_path / "out" / "sr.dcm").exists()
    assert list((tmp_path / "out" / "key-images").glob("*.dcm"))
    # again without replacing: the export fails with a message and leaves what is there
    before = (tmp_path / "out" / "seg.dcm").read_bytes()
    export.save_dicom(str(tmp_path / "out"), force=False)
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=60000)
    assert "already exists" in window.last_error
    assert (tmp_path / "out" / "seg.dcm").read_bytes() == before
    window.last_error = ""

    target = tmp_path / "anonymised"
    export.save_anonymized(str(target), force=False)
    _wait_written(qtbot, window, 0)
    files = sorted(p for p in target.rglob("*") if p.is_file())
    assert len(files) == 10
    ds = pydicom.dcmread(files[0])
    assert ds.PatientName == "ANONYMOUS" and ds.StudyInstanceUID != source.StudyInstanceUID
    assert all(b"DISC01" not in p.read_bytes() for p in files)


def test_export_into_a_read_only_folder_reports_and_leaves_nothing(qtbot, window, disc_folder, readonly_dir):
    folder, _centre = disc_folder
    open_and_wait(qtbot, window, [folder])
    window.export.save_report(path=str(readonly_dir / "report.pdf"))
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=60000)
    assert "Export failed" in window.last_error and "readonly" in window.last_error
    assert list(readonly_dir.iterdir()) == []
