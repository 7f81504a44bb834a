"""The status-bar value readout follows the mouse and the slice (never stale), with integer voxel indices and the
value in HU; window presets reach the active viewer from the keyboard and the menu without a click in the image."""

from __future__ import annotations

import re

import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from medviewer.core.windowing import CT_PRESETS
from tests.ui.conftest import DISC_HU, open_and_wait

READOUT = re.compile(r"^(-?\d+) HU {2}at \((-?\d+\.\d), (-?\d+\.\d), (-?\d+\.\d)\) mm {2}voxel \((\d+), (\d+), (\d+)\)$")


def _widget_point(view, row: float, col: float) -> QPoint:
    """Where the centre of image pixel (row, col) is, in the view widget's coordinates."""
    scene = view.image_item.mapToScene(QPointF(col + 0.5, row + 0.5))
    return view.mapFromScene(scene)


def _move(view, row, col):
    """A real mouse-move event on the view (QTest.mouseMove delivers only the first one offscreen)."""
    point = QPointF(_widget_point(view, row, col))
    viewport = view.viewport()
    event = QMouseEvent(QEvent.Type.MouseMove, point, QPointF(viewport.mapToGlobal(point.toPoint())),
                        Qt.MouseButton.NoButton, Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(viewport, event)
    QApplication.processEvents()


def test_readout_follows_mouse_and_slice(qtbot, window, disc_folder):
    folder, centre = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    QApplication.processEvents()
    label = window.cursor_label
    _move(view, centre[0], centre[1])
    match = READOUT.match(label.text())
    assert match, label.text()
    value, k, j, i = int(match[1]), *(int(match[n]) for n in (5, 6, 7))
    assert value == DISC_HU and (k, j, i) == (view.index, round(centre[0]), round(centre[1]))
    # The corner pixel holds the slice number (a marker): the readout shows it, and follows the slice.
    _move(view, 0, 0)
    assert READOUT.match(label.text())[1] == str(view.index) and READOUT.match(label.text())[5] == str(view.index)
    QTest.keyClick(view, Qt.Key.Key_Down)
    assert view.index == 6
    assert READOUT.match(label.text())[1] == "6" and READOUT.match(label.text())[5] == "6", label.text()
    view.set_slice(2)
    assert READOUT.match(label.text())[1] == "2", label.text()
    # Air, and off the image: nothing stale left.
    _move(view, 1, 5)
    assert READOUT.match(label.text())[1] == "-1000"
    scene_outside = view.image_item.mapToScene(QPointF(-50, -50))
    view._mouse_moved(scene_outside)
    assert label.text() == ""


def test_readout_in_a_reformatted_plane_has_integer_indices(qtbot, window, disc_folder):
    folder, centre = disc_folder
    open_and_wait(qtbot, window, [folder])
    window.layout_actions["mpr"].trigger()
    QApplication.processEvents()
    coronal = window.grid.visible_views()[1]
    _move(coronal, 3.3, 40.4)
    match = READOUT.match(window.cursor_label.text())
    assert match, window.cursor_label.text()
    assert not re.search(r"\d\.\d{2,}", window.cursor_label.text()) and int(match[6]) == coronal.index


@pytest.mark.parametrize("focus", ["series_tree", "view", "none", "preset_combo", "assistant"])
def test_presets_apply_without_a_click_in_the_image(qtbot, window, disc_folder, focus):
    folder, _ = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    QApplication.processEvents()
    names = [window.preset_combo.itemData(i) for i in range(window.preset_combo.count())]
    assert len(window.preset_actions) == len(names) >= 3
    target = {"series_tree": window.series_tree, "view": view, "none": window, "preset_combo": window.preset_combo,
              "assistant": window.assistant.table}[focus]
    target.setFocus()
    lung = names.index("lung") + 1
    QTest.keyClick(target, Qt.Key(Qt.Key.Key_0 + lung))
    QApplication.processEvents()
    assert view.window_level == CT_PRESETS["lung"], focus
    # The menu: View > Window Presets > bone.
    menu_action = next(a for a in window.presets_menu.actions() if a.text().startswith("bone"))
    menu_action.trigger()
    assert view.window_level == CT_PRESETS["bone"]
    bone = CT_PRESETS["bone"]
    assert f"W {bone.width:.0f} L {bone.center:.0f}" in view._labels["bottom_left"].text()


def test_presets_reach_the_active_plane_in_mpr(qtbot, window, disc_folder):
    folder, _ = disc_folder
    open_and_wait(qtbot, window, [folder])
    window.layout_actions["mpr"].trigger()
    QApplication.processEvents()
    sagittal = window.grid.visible_views()[2]
    window.grid.set_active(sagittal)
    names = [window.preset_combo.itemData(i) for i in range(window.preset_combo.count())]
    QTest.keyClick(window, Qt.Key(Qt.Key.Key_0 + names.index("lung") + 1))
    assert sagittal.window_level == CT_PRESETS["lung"]
