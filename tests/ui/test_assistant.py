"""The diagnosis assistant in the viewer, with the built-in models, offscreen."""

from __future__ import annotations

import numpy as np
import pytest

from medviewer.ai.package import find_packages
from medviewer.ai.phantom import PhantomConfig, generate_phantom
from tests.ui.conftest import open_and_wait

BUILTIN = [str(p.path) for p in find_packages() if p.source == "builtin" and p.manifest is not None]
pytestmark = pytest.mark.skipif(len(BUILTIN) < 2, reason="the built-in model packages are not in resources/models")

CONFIG = PhantomConfig(slices=24, size=256, slice_thickness_mm=2.5, nodule_count=(1, 1),
                       nodule_diameter_mm=(10.0, 16.0))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A small chest phantom with one nodule of 10–16 mm (the first seed that has one)."""
    from medviewer.ai.demo_data import write_phantom_dicom

    folder = tmp_path_factory.mktemp("assistant")
    for seed in range(20):
        phantom = generate_phantom(CONFIG, seed=seed)
        if phantom.nodules:
            break
    study_dir = write_phantom_dicom(phantom, folder, study_name="nodule-study")
    return study_dir / "CT", phantom


def run_and_wait(qtbot, window, timeout=180000):
    window.run_assistant(BUILTIN, "cpu")
    qtbot.waitUntil(lambda: window._assistant_worker is None, timeout=timeout)


def test_run_shows_the_planted_nodule_and_jumps_to_it(qtbot, window, study):
    folder, phantom = study
    view = open_and_wait(qtbot, window, [folder])
    run_and_wait(qtbot, window)
    assert window.predictions, window.last_error
    prediction = next(iter(window.predictions.values()))
    assert prediction.complete and prediction.mask.shape == view.volume.shape
    assert view.mask is prediction.mask and view.mask_item.isVisible() in (True, False)
    truth = phantom.nodules[0]
    k_true = truth.center_index[0]
    panel = window.assistant
    assert panel.table.rowCount() == len(prediction.findings) >= 1
    nodules = [f for f in prediction.findings if f.label == "nodule"]
    best = min(nodules, key=lambda f: np.linalg.norm(np.subtract(f.centroid_lps_mm, truth.center_lps_mm)))
    assert np.linalg.norm(np.subtract(best.centroid_lps_mm, truth.center_lps_mm)) < truth.diameter_mm
    row = prediction.findings.index(best)
    panel.table.selectRow(row)
    panel._row_clicked(row, 0)
    # The click lands on the finding's central slice, within a slice of the planted nodule.
    assert view.index == round(best.centroid_index[0])
    assert abs(view.index - k_true) * CONFIG.slice_thickness_mm <= truth.diameter_mm / 2 + CONFIG.slice_thickness_mm
    assert panel.verdict.text().startswith("Study: positive")
    # The per-slice probability plot: a click on a slice jumps there.
    panel.sliceRequested.emit(3)
    assert view.index == 3


def test_overlays_toggle_and_follow_style(qtbot, window, study):
    folder, phantom = study
    view = open_and_wait(qtbot, window, [folder])
    run_and_wait(qtbot, window)
    view.set_slice(int(phantom.nodules[0].center_index[0]))
    assert view.mask_item.isVisible()
    window.act_assistant_overlays.setChecked(False)
    assert not view.mask_item.isVisible()
    window.act_assistant_overlays.setChecked(True)
    assert view.mask_item.isVisible()
    window.assistant.heatmap_box.setChecked(True)
    assert view.heatmap_visible
    window.assistant.contour.setChecked(True)
    assert view.mask_contour
    lung = window.assistant.label_boxes[1]
    lung.setChecked(False)
    assert 1 in view.mask_hidden_labels and view._mask_lut[1, 3] == 0


def test_reject_a_finding_and_note(qtbot, window, study):
    folder, _ = study
    open_and_wait(qtbot, window, [folder])
    run_and_wait(qtbot, window)
    panel = window.assistant
    panel.table.selectRow(0)
    panel._row_clicked(0, 0)
    panel.set_review("rejected")
    finding = panel.prediction.findings[0]
    assert finding.review == "rejected"
    assert panel.table.item(0, 6).text().startswith("rejected")
    panel.note_edit.setText("vessel, not a nodule")
    panel._note_edited()
    assert finding.note == "vessel, not a nodule"
    # Review state stays with the series: showing it again keeps it.
    window._show_cached_prediction(window.active)
    assert window.assistant.prediction.findings[0].review == "rejected"


def test_brush_changes_the_mask_and_undo_restores(qtbot, window, study):
    folder, _ = study
    view = open_and_wait(qtbot, window, [folder])
    run_and_wait(qtbot, window)
    before = view.mask[view.index].copy()
    assert view.begin_mask_edit()
    view.paint_mask((20.0, 20.0))
    assert (view.mask[view.index] != before).any()
    assert view.mask[view.index, 20, 20] == view.brush_label
    view.undo_mask_edit()
    assert np.array_equal(view.mask[view.index], before)


def test_cancel_mid_run_leaves_no_overlay(qtbot, window, study):
    folder, _ = study
    view = open_and_wait(qtbot, window, [folder])
    window.run_assistant(BUILTIN, "cpu")
    qtbot.waitUntil(lambda: bool(window._running_prediction) or window._assistant_worker is None, timeout=60000)
    window.cancel_assistant()
    assert window._assistant_worker is None  # the panel is free at once
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=10000)  # the worker stops after its batch
    if not window.predictions:  # cancelled before the end (the usual case)
        assert view.mask is None and view.heatmap is None
        assert window.assistant.prediction is None
    window.run_assistant(BUILTIN, "cpu")  # the app is still usable
    qtbot.waitUntil(lambda: window._assistant_worker is None, timeout=180000)
    assert window.predictions


def test_closing_during_a_run_is_clean(qtbot, window, study):
    folder, _ = study
    open_and_wait(qtbot, window, [folder])
    window.run_assistant(BUILTIN, "cpu")
    window.close()
    assert not window.tasks.running
