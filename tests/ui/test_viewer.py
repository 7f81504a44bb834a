"""The viewer as a user drives it, offscreen (pytest-qt)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from medviewer.core.annotations import Annotation
from medviewer.core.windowing import CT_PRESETS, Window
from tests.ui.conftest import DISC_DIAMETER_MM, DISC_HU, SHAPE, SPACING, open_and_wait, write_disc_series


class FakeDrag:
    """The parts of pyqtgraph's MouseDragEvent the viewport reads."""

    def __init__(self, view, start, end, *, button=Qt.MouseButton.LeftButton, start_event=True, finish=True,
                 screen_delta=(0, 0)):
        self.view = view
        self._button = button
        self._start_scene = view.image_item.mapToScene(QPointF(start[1] + 0.5, start[0] + 0.5))
        self._end_scene = view.image_item.mapToScene(QPointF(end[1] + 0.5, end[0] + 0.5))
        self._start, self._finish = start_event, finish
        self._delta = screen_delta

    def button(self):
        return self._button

    def isStart(self):  # noqa: N802 - pyqtgraph's name
        return self._start

    def isFinish(self):  # noqa: N802
        return self._finish

    def buttonDownPos(self):  # noqa: N802
        return self.view.viewbox.mapFromScene(self._start_scene)

    def scenePos(self):  # noqa: N802
        return self._end_scene

    def screenPos(self):  # noqa: N802
        return QPointF(100 + self._delta[0], 100 + self._delta[1])

    def lastScreenPos(self):  # noqa: N802
        return QPointF(100, 100)

    def pos(self):
        return QPointF(0, 0)

    def lastPos(self):  # noqa: N802
        return QPointF(0, 0)

    def accept(self):
        pass

    def modifiers(self):
        return Qt.KeyboardModifier.NoModifier


def test_open_by_path_shows_middle_slice(qtbot, window, disc_folder):
    folder, _ = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    assert view.volume is not None and view.volume.shape == SHAPE
    assert view.index == SHAPE[0] // 2
    image = view.image_item.image
    assert image is not None and image.dtype == np.uint16  # int16 handed over on the fast path
    assert view.window_level == Window(40, 400)  # the header's window
    assert window.series_tree.topLevelItemCount() == 1


def test_open_by_drop(qtbot, window, disc_folder):
    folder, _ = disc_folder
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder))])
    event = QDropEvent(QPointF(50, 50), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    qtbot.waitUntil(lambda: bool(window.volumes) and not window.tasks.running, timeout=20000)
    assert window.active.volume.shape == SHAPE


def test_scroll_by_keys_wheel_and_limits(qtbot, window, disc_folder):
    folder, _ = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    start = view.index
    qtbot.keyClick(view, Qt.Key.Key_Down)
    assert view.index == start + 1
    qtbot.keyClick(view, Qt.Key.Key_Up)
    qtbot.keyClick(view, Qt.Key.Key_Up)
    assert view.index == start - 1
    qtbot.keyClick(view, Qt.Key.Key_End)
    assert view.index == SHAPE[0] - 1
    qtbot.keyClick(view, Qt.Key.Key_PageDown)
    assert view.index == SHAPE[0] - 1  # clamped
    qtbot.keyClick(view, Qt.Key.Key_Home)
    assert view.index == 0

    class Wheel:
        def __init__(self, delta):
            self._delta = delta

        def delta(self):
            return self._delta

        def modifiers(self):
            return Qt.KeyboardModifier.NoModifier

        def accept(self):
            pass

    view.viewbox.wheelEvent(Wheel(-120))
    assert view.index == 1
    slider = window.grid.frames[0].slider
    assert (slider.minimum(), slider.maximum(), slider.value()) == (0, SHAPE[0] - 1, 1)
    slider.setValue(3)
    assert view.index == 3
    slider.setValue(1)
    # The displayed data follows: the per-slice marker in pixel (0, 0).
    assert int(view.image_item.image[0, 0]) - 32768 == view.volume.voxels[1, 0, 0] == 1


def test_window_level_drag_and_presets(qtbot, window, disc_folder):
    folder, _ = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    before = view.window_level
    view.viewbox.mouseDragEvent(FakeDrag(view, (0, 0), (0, 0), button=Qt.MouseButton.RightButton,
                                         screen_delta=(40, 0)))
    assert view.window_level.width > before.width and view.window_level.center == before.center
    widened = view.window_level
    view.viewbox.mouseDragEvent(FakeDrag(view, (0, 0), (0, 0), button=Qt.MouseButton.RightButton,
                                         screen_delta=(0, 30)))
    assert view.window_level.center > widened.center and view.window_level.width == widened.width
    lo, hi = view.image_item.levels
    assert (lo - 32768, hi - 32768) == pytest.approx(view.window_level.levels())
    window.apply_preset("lung")
    assert view.window_level == CT_PRESETS["lung"]
    names = [window.preset_combo.itemData(i) for i in range(window.preset_combo.count())]
    assert names[:2] == ["Default", "brain"]
    window.preset_combo.activated.emit(names.index("bone"))
    assert view.window_level == CT_PRESETS["bone"]


def _disc_edges(view, row):
    """Columns where the disc starts and ends on ``row`` (half-max crossings, sub-pixel)."""
    profile = view.volume.voxels[view.index, int(row)].astype(float)
    inside = np.nonzero(profile > (DISC_HU - 1000) / 2)[0]
    return inside[0] - 0.5, inside[-1] + 0.5


def test_distance_tool_measures_known_diameter(qtbot, window, disc_folder):
    folder, centre = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    window.set_tool("distance")
    row = round(centre[0])
    c0, c1 = _disc_edges(view, row)
    view.viewbox.mouseDragEvent(FakeDrag(view, (row, c0), (row, c1), start_event=True, finish=False))
    view.viewbox.mouseDragEvent(FakeDrag(view, (row, c0), (row, c1), start_event=False, finish=True))
    (annotation,) = view.annotations
    assert annotation.kind == "distance" and annotation.slice_index == view.index
    text = view.annotation_text(annotation)
    measured = float(text.split()[0])
    assert abs(measured - DISC_DIAMETER_MM) <= SPACING[2], text  # within one pixel
    # Across rows (the other pixel spacing) too.
    r0, r1 = (np.nonzero(view.volume.voxels[view.index, :, round(centre[1])] > -450)[0][[0, -1]])
    vertical = view.add_annotation(Annotation("distance", view.index, [(r0 - 0.5, centre[1]), (r1 + 0.5, centre[1])]))
    assert abs(float(view.annotation_text(vertical).split()[0]) - DISC_DIAMETER_MM) <= SPACING[1]


def test_roi_mean_over_known_region(qtbot, window, disc_folder):
    folder, centre = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    r, c = centre
    rect = view.add_annotation(Annotation("rectangle", view.index, [(r - 5, c - 5), (r + 5, c + 5)]))
    assert view.annotation_text(rect).startswith(f"mean {DISC_HU}")
    window.set_tool("ellipse")
    view.viewbox.mouseDragEvent(FakeDrag(view, (r - 8, c - 8), (r + 8, c + 8), finish=False))
    view.viewbox.mouseDragEvent(FakeDrag(view, (r - 8, c - 8), (r + 8, c + 8), start_event=False))
    ellipse = view.annotations[-1]
    assert ellipse.kind == "ellipse"
    text = view.annotation_text(ellipse)
    assert "mean 100" in text and "SD 0" in text and "mm²" in text


def test_annotations_live_on_their_slice_and_delete(qtbot, window, disc_folder):
    folder, centre = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    annotation = view.add_annotation(Annotation("distance", view.index, [(10, 10), (10, 40)]))
    item = view._items[annotation.id]
    assert item.roi.isVisible()
    view.step_slice(1)
    assert not item.roi.isVisible()
    view.step_slice(-1)
    assert item.roi.isVisible()
    view.select_annotation(annotation)
    window._delete_selected()
    assert view.annotations == []


def test_rotate_and_flip_keep_annotations_on_their_pixels(qtbot, window, disc_folder):
    folder, _ = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    annotation = view.add_annotation(Annotation("distance", view.index, [(10, 12), (30, 50)]))
    text = view.annotation_text(annotation)
    item = view._items[annotation.id]

    def handle_scene_points():
        return [item.roi.mapToScene(h.pos()) for h in item.roi.getHandles()]

    def pixel_scene_points():
        return [view.image_item.mapToScene(QPointF(c + 0.5, r + 0.5)) for r, c in annotation.points]

    for action in (lambda: view.rotate(90), lambda: view.set_flip(horizontal=True),
                   lambda: view.set_flip(vertical=True), lambda: view.rotate(90)):
        action()
        for got, want in zip(handle_scene_points(), pixel_scene_points()):
            assert got.x() == pytest.approx(want.x(), abs=1e-6) and got.y() == pytest.approx(want.y(), abs=1e-6)
        assert view.annotation_text(annotation) == text
    # Orientation labels follow: rotated 180° and flipped both ways is the original view.
    assert view._labels["left"].text() == "R" and view._labels["top"].text() == "A"


def test_aspect_from_pixel_spacing_and_mpr(qtbot, window, disc_folder):
    folder, _ = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    transform = view.image_item.transform()
    assert (transform.m11(), transform.m22()) == pytest.approx((SPACING[2], SPACING[1]))
    window.set_layout("mpr")
    views = window.grid.visible_views()
    assert [v.axis for v in views] == [0, 1, 2]
    assert all(v.volume is views[0].volume for v in views)  # one volume, shared
    slices, rows, cols = SHAPE
    assert views[1].current_image().shape == (slices, cols)
    assert views[2].current_image().shape == (slices, rows)
    assert views[1]._spacing_yx == pytest.approx((SPACING[0], SPACING[2]))
    assert views[2]._spacing_yx == pytest.approx((SPACING[0], SPACING[1]))
    # The linked crosshair: a click in the coronal view moves the axial and sagittal views.
    views[1].set_crosshair_from_image((2.0, 30.0))
    k, j, i = views[0].crosshair_voxel
    assert views[0].index == k and views[2].index == i and views[1].index == j
    # Thick-slab MIP on the axial view.
    views[0].set_slab(5, "mip")
    assert views[0].current_image().dtype == np.int16
    window.set_layout("1x1")
    assert window.active.axis == 0


def test_two_viewports_scroll_together_by_position(qtbot, window, tmp_path):
    # Two series in one frame of reference, 2 mm and 4 mm apart: scrolling one moves the
    # other to the slice at the same position.
    fine, _ = write_disc_series(tmp_path / "fine", seed=1, frame_seed=9)
    coarse, _ = write_disc_series(tmp_path / "coarse", shape=(5, 64, 80), spacing=(4.0, 0.8, 0.6), seed=2,
                                  frame_seed=9)
    open_and_wait(qtbot, window, [fine, coarse])
    window.set_layout("1x2")
    left, right = window.grid.visible_views()
    keys = list(window.series_tree.series)
    other = next(k for k in keys if k != left.series_key)
    window.open_series(other, right)
    qtbot.waitUntil(lambda: right.volume is not None and not window.tasks.running, timeout=20000)
    fine_view, coarse_view = (left, right) if left.volume.shape[0] == 10 else (right, left)
    fine_view.set_slice(8)  # z = 16 mm
    assert coarse_view.index == 4  # z = 16 mm
    fine_view.set_slice(4)  # z = 8 mm
    assert coarse_view.index == 2
    window.act_sync.setChecked(False)
    fine_view.set_slice(0)
    assert coarse_view.index == 2


def test_series_dragged_onto_a_viewport_opens_there(qtbot, window, tmp_path):
    from medviewer.ui.panels import SERIES_MIME

    a, _ = write_disc_series(tmp_path / "a", seed=1)
    b, _ = write_disc_series(tmp_path / "b", shape=(6, 32, 40), seed=2)
    open_and_wait(qtbot, window, [a, b])
    window.set_layout("1x2")
    frame = window.grid.frames[1]
    other = next(k for k in window.series_tree.series if k != window.grid.frames[0].view.series_key)
    mime = QMimeData()
    mime.setData(SERIES_MIME, other.encode())
    frame.dropEvent(QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                               Qt.KeyboardModifier.NoModifier))
    qtbot.waitUntil(lambda: frame.view.series_key == other and not window.tasks.running, timeout=20000)
    assert frame.view.volume is not None and window.grid.frames[0].view.series_key != other


def test_colour_images_are_shown_as_colour(qtbot, window, tmp_path):
    from PIL import Image

    rgb = np.zeros((40, 60, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    rgb[10:20, 10:30, 2] = 255
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    view = open_and_wait(qtbot, window, [tmp_path / "photo.png"])
    assert view.volume.is_color and view.image_item.image.shape == (40, 60, 3)
    assert view.window_level is None and not window.preset_combo.isEnabled()


def test_refused_files_are_listed(qtbot, window, disc_folder, tmp_path):
    folder, _ = disc_folder
    (folder / "notes.txt").write_text("hello")
    (folder / "broken.dcm").write_bytes(b"\x00" * 200)
    open_and_wait(qtbot, window, [folder])
    reasons = {path: reason for _name, reason, path in window.refused_list.entries()}
    assert reasons[str(folder / "broken.dcm")] == "not a DICOM file"
    assert "not an image" in reasons[str(folder / "notes.txt")]
    assert window.refused_dock.isVisibleTo(window)


def test_nothing_to_open_is_said_in_the_window(qtbot, window, tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"garbage" * 10)
    window.open_paths([str(bad)])
    qtbot.waitUntil(lambda: not window.tasks.running and bool(window.last_error), timeout=10000)
    assert "Nothing could be opened" in window.last_error and "bad.dcm: not a DICOM file" in window.last_error


def test_cancel_during_load_leaves_the_app_usable(qtbot, window, disc_folder, tmp_path):
    big, _ = write_disc_series(tmp_path / "big", shape=(60, 128, 128), seed=3)
    window.open_paths([str(big)])
    window.cancel_tasks()
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=20000)
    assert str(big) not in "".join(window.volumes)  # nothing half-loaded kept as loaded
    folder, _ = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    assert view.volume.shape == SHAPE


def test_tag_browser_searches(qtbot, window, disc_folder):
    folder, _ = disc_folder
    open_and_wait(qtbot, window, [folder])
    window.tags_dock.show()
    window._update_tags()
    browser = window.tag_browser
    assert browser.tree.topLevelItemCount() > 10
    browser.search.setText("PatientID")
    assert "PatientID" in browser.visible_keywords()
    assert "Rows" not in browser.visible_keywords()
    browser.search.setText("(0028,0010)")
    assert browser.visible_keywords() == ["Rows"]


def test_series_browser_double_click_opens(qtbot, window, tmp_path):
    a, _ = write_disc_series(tmp_path / "a", seed=1)
    b, _ = write_disc_series(tmp_path / "b", shape=(6, 32, 40), seed=2)
    open_and_wait(qtbot, window, [a, b])
    tree = window.series_tree
    keys = list(tree.series)
    assert len(keys) == 2
    other = next(k for k in keys if k != window.active.series_key)
    tree.openRequested.emit(other)
    qtbot.waitUntil(lambda: window.active.series_key == other and window.active.volume is not None, timeout=20000)
    qtbot.waitUntil(lambda: not window.tasks.running, timeout=20000)
    assert window.active.volume.shape[0] in (6, 10)


def test_cine_and_invert_and_overlays(qtbot, window, disc_folder):
    folder, _ = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    start = view.index
    view.set_cine(True, fps=50)
    qtbot.waitUntil(lambda: view.index != start, timeout=3000)
    view.set_cine(False)
    lut = view._lut.copy()
    window.act_invert.trigger()
    assert (view._lut == lut[::-1]).all()
    window.act_overlays.setChecked(False)
    assert not view._labels["top_left"].isVisible()


def test_settings_persist_recent_paths(qtbot, window, disc_folder):
    folder, _ = disc_folder
    open_and_wait(qtbot, window, [folder])
    window.save_settings()
    assert window.recent_paths()[0] == str(folder)
    assert [a.text() for a in window.recent_menu.actions()][0] == str(folder)


def test_app_exits_with_code_zero(tmp_path, disc_folder):
    folder, _ = disc_folder
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", MEDVIEWER_QUIT_AFTER_MS="2500",
               XDG_CACHE_HOME=str(tmp_path / "cache"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    result = subprocess.run([sys.executable, "-m", "medviewer", str(folder)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_view_of_missing_path_is_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "medviewer", str(tmp_path / "nope")], capture_output=True,
                            text=True, timeout=60, env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"medviewer: {tmp_path / 'nope'}: no such file or folder"

