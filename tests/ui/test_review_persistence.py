"""The review of the assistant's findings (accept/reject, notes, mask corrections) survives closing the window:
a new window on the same study shows it again."""

from __future__ import annotations

import gc

import numpy as np
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from medviewer.ai import review_store
from tests.ui.conftest import open_and_wait
from tests.ui.test_export_ui import _fake_prediction

PATHS = ("/models/seg",)


def _new_window(qtbot, tmp_path):
    from medviewer.ui.main_window import MainWindow

    win = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    win.resize(1100, 750)
    qtbot.addWidget(win)
    win.show()
    return win


def _close(win):
    win.tasks.shutdown()
    win.close()
    QApplication.processEvents()
    gc.collect()


def _idle(qtbot, win):
    qtbot.waitUntil(lambda: not win.tasks.running, timeout=20000)


def test_review_and_mask_edit_survive_a_relaunch(qtbot, disc_folder, tmp_path, _reviews_in_tmp):
    folder, _centre = disc_folder
    first = _new_window(qtbot, tmp_path)
    view = open_and_wait(qtbot, first, [folder])
    assert first.predictions == {}  # nothing kept yet
    prediction = _fake_prediction(view.volume)
    first.predictions[(view.series_key, PATHS)] = prediction
    first._attach_prediction(view.volume, prediction)
    panel = first.assistant
    assert panel.table.rowCount() == len(prediction.findings) >= 1
    panel.table.selectRow(0)
    panel.reject_button.click()
    _idle(qtbot, first)
    panel.note_edit.setText("a vessel, not a nodule")
    panel._note_edited()
    _idle(qtbot, first)
    # A mask correction (as the brush does), then "Update findings".
    prediction.mask[5, 0:3, 0:3] = 2
    panel.update_button.setEnabled(True)
    panel.update_button.click()
    _idle(qtbot, first)
    study_uid = view.volume.study_uid
    kept = review_store.review_folder(_reviews_in_tmp, study_uid, view.volume.series_uid)
    assert first.review_state.saved and first.review_state.saved[-1] == kept
    assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name]  # no staging or old copy left
    expected_mask = prediction.mask.copy()
    _close(first)

    second = _new_window(qtbot, tmp_path)
    try:
        view = open_and_wait(qtbot, second, [folder])
        _idle(qtbot, second)
        assert list(second.predictions) == [(view.series_key, PATHS)]
        restored = second.predictions[(view.series_key, PATHS)]
        assert second.assistant.prediction is restored and view.mask is restored.mask
        assert restored.findings[0].review == "rejected" and restored.findings[0].note == "a vessel, not a nodule"
        assert np.array_equal(restored.mask, expected_mask) and restored.mask.flags.writeable
        assert "rejected" in second.assistant.verdict.text()
        # Running the same models again shows the reviewed result rather than a fresh one.
        second.run_assistant(list(PATHS), "cpu")
        assert second._assistant_worker is None and second.assistant.prediction is restored
    finally:
        _close(second)


def test_a_kept_review_of_other_slices_is_not_shown(qtbot, disc_folder, tmp_path, _reviews_in_tmp):
    folder, _centre = disc_folder
    win = _new_window(qtbot, tmp_path)
    try:
        view = open_and_wait(qtbot, win, [folder])
        prediction = _fake_prediction(view.volume)
        prediction.sop_instance_uids = list(prediction.sop_instance_uids)[::-1]
        review_store.save_review(_reviews_in_tmp, view.volume.study_uid, prediction, list(PATHS))
        assert review_store.load_review(_reviews_in_tmp, view.volume.study_uid, view.volume.series_uid,
                                        list(view.volume.sop_instance_uids), view.volume.shape) is None
        # A damaged file is no review either.
        folder_kept = review_store.review_folder(_reviews_in_tmp, view.volume.study_uid, view.volume.series_uid)
        (folder_kept / "predictions.json").write_text("{")
        assert review_store.load_review(_reviews_in_tmp, view.volume.study_uid, view.volume.series_uid,
                                        list(view.volume.sop_instance_uids), view.volume.shape) is None
    finally:
        _close(win)
