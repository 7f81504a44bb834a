"""MPR: the assistant's mask and heatmap follow every plane. The coronal and sagittal views show the same arrays
resliced, non-empty exactly where the mask is, and leaving MPR or opening another series leaves no stray overlay."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication

from medviewer.ai.prediction import Prediction
from medviewer.core import mpr
from tests.ui.conftest import open_and_wait, write_disc_series

# An off-centre box, so that a flipped or transposed reslice would not match.
BOX = (slice(2, 5), slice(10, 22), slice(30, 61))


def _prediction(volume) -> Prediction:
    mask = np.zeros(volume.shape, dtype=np.uint8)
    mask[BOX] = 2
    heatmap = np.zeros(volume.shape, dtype=np.float16)
    heatmap[BOX] = 0.9
    return Prediction(series_uid=volume.series_uid, sop_instance_uids=volume.sop_instance_uids,
                      positions_lps_mm=[tuple(p) for p in volume.positions_lps_mm], classes=["nodule"],
                      slice_probabilities=np.zeros((volume.shape[0], 1), np.float32), study_probability=0.9,
                      mask=mask, heatmap=heatmap,
                      labels={2: {"name": "nodule", "color": "#ff0000", "threshold": 0.5}},
                      models=[{"id": "seg", "task": "segmentation", "threshold": 0.5}], device="CPU", complete=True)


def _drawn(view, item) -> np.ndarray:
    """The view's image-sized map of where ``item`` (mask or heatmap) draws a non-transparent pixel."""
    out = np.zeros(view.current_image().shape[:2], dtype=bool)
    if not item.isVisible() or item.image is None:
        return out
    lut = view._mask_lut if item is view.mask_item else view._heat_lut
    alpha = lut[np.asarray(item.image).astype(np.intp), 3] > 0
    c0, r0 = int(item.pos().x()), int(item.pos().y())
    rows, cols = alpha.shape
    out[r0:r0 + rows, c0:c0 + cols] = alpha
    return out


def _red_pixels(view) -> int:
    QApplication.processEvents()
    image = view.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    stride = image.bytesPerLine()
    pixels = np.frombuffer(image.constBits(), dtype=np.uint8, count=stride * image.height())
    pixels = pixels.reshape(image.height(), stride)[:, :image.width() * 3].reshape(image.height(), image.width(), 3)
    r, g, b = (pixels[..., c].astype(int) for c in range(3))
    return int(((r > 90) & (r > g + 60) & (r > b + 60)).sum())


def test_mask_and_heatmap_follow_every_mpr_plane(qtbot, window, disc_folder):
    folder, _ = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    prediction = _prediction(view.volume)
    window.predictions[(view.series_key, ("seg",))] = prediction
    window._attach_prediction(view.volume, prediction)
    window.assistant.heatmap_box.setChecked(True)
    assert view.mask is prediction.mask and view.heatmap_visible

    window.layout_actions["mpr"].trigger()
    assert window.grid.layout_name == "mpr"
    views = window.grid.visible_views()
    assert [v.axis for v in views] == [0, 1, 2]
    volume = view.volume
    for plane in views:
        assert plane.mask is prediction.mask and plane.heatmap is prediction.heatmap
        for index in range(plane.count):
            plane.set_slice(index)
            want = mpr.reformat(prediction.mask, plane.axis, plane.index, direction=volume.direction) > 0
            assert want.shape == plane.current_image().shape
            np.testing.assert_array_equal(_drawn(plane, plane.mask_item), want, err_msg=f"mask axis {plane.axis}")
            np.testing.assert_array_equal(_drawn(plane, plane.heatmap_item), want,
                                          err_msg=f"heatmap axis {plane.axis}")

    # On screen: a coronal and a sagittal slice through the box show red; slices beside it show none.
    coronal, sagittal = views[1], views[2]
    window.assistant.heatmap_box.setChecked(False)
    for plane, inside, outside in ((coronal, (3, 15, 45), (3, 40, 45)), (sagittal, (3, 15, 45), (3, 15, 10))):
        plane.fit()
        plane.set_slice(int(round(mpr.voxel_to_view(volume, plane.axis, *inside)[0])))
        assert plane.mask_item.isVisible()
        assert _red_pixels(plane) > 20, plane.axis
        plane.set_slice(int(round(mpr.voxel_to_view(volume, plane.axis, *outside)[0])))
        assert not plane.mask_item.isVisible()
        assert _red_pixels(plane) == 0, plane.axis

    # Style changes reach every plane.
    window.act_assistant_overlays.setChecked(False)
    assert all(not v.mask_item.isVisible() for v in views)
    window.act_assistant_overlays.setChecked(True)

    window.layout_actions["1x1"].trigger()
    assert window.active.axis == 0 and window.active.mask is prediction.mask


def test_a_new_series_does_not_inherit_the_previous_mask(qtbot, window, tmp_path):
    first, _ = write_disc_series(tmp_path / "a", seed=1)
    second, _ = write_disc_series(tmp_path / "b", seed=2)
    view = open_and_wait(qtbot, window, [first])
    first_volume = view.volume
    prediction = _prediction(first_volume)
    window._attach_prediction(first_volume, prediction)
    assert view.mask is prediction.mask
    window.open_paths([str(second)])
    qtbot.waitUntil(lambda: len(window.volumes) == 2 and not window.tasks.running, timeout=20000)
    other = next(key for key, volume in window.volumes.items() if volume is not first_volume)
    window.open_series(other)
    assert window.active.volume is window.volumes[other]
    assert window.active.mask is None and not window.active.mask_item.isVisible()
