"""A tilted series in the window: shown tilt-corrected once loaded, with the resampling named on the view."""

from __future__ import annotations

import importlib.util
import os
import sys

from tests.ui.conftest import open_and_wait

_spec = importlib.util.spec_from_file_location(
    "geometry_reference", os.path.join(os.path.dirname(__file__), "..", "core", "test_geometry_reference.py"))
reference = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("geometry_reference", reference)
_spec.loader.exec_module(reference)


def test_tilted_series_is_shown_resampled_with_a_note(qtbot, window, tmp_path):
    reference.write_case(reference._case("tilted"), tmp_path / "tilted")
    view = open_and_wait(qtbot, window, [tmp_path / "tilted"])
    qtbot.waitUntil(lambda: bool(window.volumes) and not window.tasks.running, timeout=20000)
    volume = view.volume
    assert volume.resampled == "gantry tilt"
    assert volume.shape[1] > reference.ROWS  # grown to hold the shifted slices
    assert view.image_item.image.shape == volume.shape[1:3]
    assert "resampled (gantry tilt)" in view._labels["top_right"].text()
    assert any("tilt" in w for w in volume.warnings)
