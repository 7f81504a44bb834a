"""Text on the images never overlaps: corner text, orientation letters, the scale bar and measurement labels are
pairwise disjoint and inside their view, in one viewport and in MPR, at 1024×768 and 1920×1080; the probability
strip's axis labels do not meet either."""

from __future__ import annotations

import itertools

import pytest
from PySide6.QtCore import QRectF
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QApplication

from medviewer.core.annotations import Annotation
from tests.ui.conftest import open_and_wait
from tests.ui.test_mpr_overlays import _prediction


def _settle():
    for _ in range(4):
        QApplication.processEvents()


def _assert_disjoint_inside(rects: dict[str, QRectF], bounds: QRectF, where: str) -> None:
    for name, rect in rects.items():
        assert rect.width() > 0 and rect.height() > 0, (where, name)
        assert bounds.contains(rect), (where, name, rect, bounds)
    for (a, ra), (b, rb) in itertools.combinations(rects.items(), 2):
        assert not ra.intersects(rb), (where, a, b, ra, rb)


def _axis_text_rects(plot) -> dict[str, QRectF]:
    """Tick labels and axis titles of the probability strip, in the plot widget's coordinates."""
    out = {}
    item = plot.getPlotItem()
    for side in ("left", "bottom"):
        axis = item.getAxis(side)
        image = QImage(8, 8, QImage.Format.Format_ARGB32)
        painter = QPainter(image)
        specs = axis.generateDrawSpecs(painter)
        painter.end()
        for rect, _flags, text in specs[2]:
            out[f"{side} tick {text}"] = QRectF(plot.mapFromScene(axis.mapRectToScene(rect)).boundingRect())
        if axis.label.isVisible() and axis.label.toPlainText():
            margin = axis.label.document().documentMargin()  # blank space around the glyphs
            glyphs = axis.label.boundingRect().adjusted(margin, margin, -margin, -margin)
            out[f"{side} title"] = QRectF(plot.mapFromScene(axis.label.mapRectToScene(glyphs)).boundingRect())
    return out


@pytest.mark.parametrize("size", [(1024, 768), (1920, 1080)])
def test_text_boxes_are_disjoint_and_inside_their_view(qtbot, window, disc_folder, size):
    folder, _ = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    prediction = _prediction(view.volume)
    window._attach_prediction(view.volume, prediction)
    # Long corner text on purpose: a bookmark and a thick slab add lines to the top right.
    window.export.toggle_bookmark()
    view.set_slab(3, "mip")
    view.add_annotation(Annotation("distance", view.index, [(20.0, 20.0), (40.0, 60.0)]))
    view.add_annotation(Annotation("ellipse", view.index, [(30.0, 10.0), (50.0, 30.0)]))
    view.add_annotation(Annotation("rectangle", view.index, [(8.0, 50.0), (20.0, 76.0)]))
    window.resize(*size)
    _settle()
    assert (window.width(), window.height()) == size
    for layout in ("1x1", "mpr"):
        window.layout_actions[layout].trigger()
        _settle()
        views = window.grid.visible_views()
        if layout == "mpr":
            views[1].add_annotation(Annotation("distance", views[1].index, [(2.0, 10.0), (8.0, 70.0)], axis=1))
            _settle()
        for plane in views:
            rects = plane.text_rects()
            where = f"{size} {layout} axis {plane.axis}"
            # What must stay: the plane and slice number, the window, the orientation letters, the measurements.
            assert "top_right" in rects and f"{plane.index + 1}/{plane.count}" in plane._labels["top_right"].text()
            assert "bottom_left" in rects and {"left", "right", "top", "bottom"} <= set(rects), (where, rects)
            if plane.axis == 0:
                assert sum(name.startswith("measurement") for name in rects) == 3, (where, rects)
            _assert_disjoint_inside(rects, QRectF(0, 0, plane.width(), plane.height()), where)

    plot = window.assistant.plot
    window.assistant_dock.show()
    window.assistant_dock.raise_()
    _settle()
    rects = _axis_text_rects(plot)
    assert any(name.startswith("bottom tick") for name in rects) and "left title" in rects
    _assert_disjoint_inside(rects, QRectF(0, 0, plot.width(), plot.height()), f"{size} probability strip")


def test_a_tiny_view_drops_low_priority_lines_before_it_crushes_them(qtbot, window, disc_folder):
    folder, _ = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    full = view._labels["top_right"].text().count("\n") + 1
    view.resize(200, 110)
    view._place_labels()
    label = view._labels["top_right"]
    lines = label.text().splitlines()
    assert 1 <= len(lines) < full
    assert lines[0].startswith("axial") or any(line.startswith("axial") for line in lines)
    _assert_disjoint_inside(view.text_rects(), QRectF(0, 0, view.width(), view.height()), "200x110")
