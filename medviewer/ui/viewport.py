"""One viewport: a slice (or reformat) of a Volume in a pyqtgraph ViewBox, with its tools.

The image is one ``ImageItem`` whose transform carries the pixel spacing (scene units are
millimetres, so non-square pixels look right) and the user's rotation and flips;
annotations and overlays are children of it and follow. Levels are fixed while scrolling
and the lookup table is built only when the user changes it: an int16 slice is handed to
pyqtgraph as uint16 (shifted by 32768 into a reused buffer), pyqtgraph's fast path.

Mouse: wheel scrolls slices (Ctrl+wheel zooms), right-drag sets window/level, middle-drag
pans, left-drag uses the active tool. Keys: arrows, PgUp/PgDn, Home/End.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRect, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QPainter, QPen, QTransform
from PySide6.QtWidgets import QGraphicsDropShadowEffect, QInputDialog, QLabel, QWidget

from medviewer.core import measure, mpr, orientation, scalebar, windowing
from medviewer.core.annotations import Annotation, measurement_text
from medviewer.core.header import display_date
from medviewer.core.volume import Volume
from medviewer.core.windowing import Window
from medviewer.export.images import heat_lut  # the report draws heatmaps with the same colours

TOOLS = ("pan", "zoom", "window", "distance", "angle", "rectangle", "ellipse", "text", "crosshair", "brush",
         "eraser")
OVERLAY_STYLE = "color: #e8e8e8; background: transparent; font-size: 11px;"
ANNOTATION_COLOR = QColor(255, 210, 60)
SELECTED_COLOR = QColor(80, 200, 255)


def gray_lut(invert: bool = False) -> np.ndarray:
    lut = np.arange(256, dtype=np.uint8)
    return lut[::-1].copy() if invert else lut


class _ViewBox(pg.ViewBox):
    """A ViewBox whose mouse does what a reading room expects instead of pyqtgraph's defaults."""

    def __init__(self, view: SliceView):
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self.view = view
        self.setBackgroundColor(QColor(0, 0, 0))

    def wheelEvent(self, ev, axis=None):  # noqa: N802 - Qt override
        if ev.modifiers() & Qt.KeyboardModifier.ControlModifier:
            super().wheelEvent(ev, axis)
            return
        delta = ev.delta() if hasattr(ev, "delta") else ev.angleDelta().y()
        steps = int(np.sign(delta)) if delta else 0
        self.view.step_slice(-steps)
        ev.accept()

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802 - Qt override
        button = ev.button()
        if button == Qt.MouseButton.RightButton:
            self.view.drag_window(ev)
            return
        if button == Qt.MouseButton.MiddleButton:
            self.setMouseMode(pg.ViewBox.PanMode)
            ev._button = Qt.MouseButton.LeftButton if hasattr(ev, "_button") else None
            super().mouseDragEvent(ev, axis)
            return
        tool = self.view.tool
        if tool == "pan":
            super().mouseDragEvent(ev, axis)
        elif tool == "zoom":
            ev.accept()
            dy = ev.pos().y() - ev.lastPos().y()
            factor = 1.01 ** dy
            self.scaleBy((factor, factor), center=self.mapToView(ev.buttonDownPos()))
        elif tool == "window":
            self.view.drag_window(ev)
        else:
            self.view.tool_drag(ev)

    def mouseClickEvent(self, ev):  # noqa: N802 - Qt override
        self.view.activated.emit(self.view)
        if ev.button() == Qt.MouseButton.LeftButton:
            self.view.tool_click(ev)
        ev.accept()


class ScaleBar(QWidget):
    """A scale bar in millimetres, drawn in screen space at the bottom right."""

    def __init__(self, parent: QWidget):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        self.length_px = 0.0
        self.label = ""
        self.resize(160, 28)

    def set_scale(self, mm_per_pixel: float | None) -> None:
        length_mm, length_px, label = scalebar.scale_bar(mm_per_pixel, target_px=100)
        if (length_px, label) != (self.length_px, self.label):
            self.length_px, self.label = length_px, label
            self.update()

    def drawn_rect(self) -> QRect:
        """Where the bar and its label are drawn, in this widget's coordinates."""
        if not self.length_px:
            return QRect()
        font = QFont(self.font().family(), 9)
        from PySide6.QtGui import QFontMetrics

        text_w = QFontMetrics(font).horizontalAdvance(self.label)
        width = int(max(self.length_px, text_w)) + 6
        return QRect(self.width() - width, 0, width, self.height())

    def paintEvent(self, event):  # noqa: N802 - Qt override
        if not self.length_px:
            return
        painter = QPainter(self)
        painter.setPen(QPen(QColor(230, 230, 230), 2))
        right = self.width() - 4
        y = self.height() - 6
        left = right - self.length_px
        painter.drawLine(QPointF(left, y), QPointF(right, y))
        painter.drawLine(QPointF(left, y - 5), QPointF(left, y))
        painter.drawLine(QPointF(right, y - 5), QPointF(right, y))
        painter.setFont(QFont(painter.font().family(), 9))
        painter.drawText(QRectF(left - 40, 0, self.length_px + 40, y - 4),
                         Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom, self.label)
        painter.end()


class _AnnotationItem:
    """The graphics of one annotation: an ROI (movable, with handles) and its text label."""

    def __init__(self, view: SliceView, annotation: Annotation):
        self.view = view
        self.annotation = annotation
        parent = view.image_item
        pen = pg.mkPen(ANNOTATION_COLOR, width=2)
        xy = [QPointF(c + 0.5, r + 0.5) for r, c in annotation.points]  # item coords: pixel centres at +0.5
        kind = annotation.kind
        if kind in ("distance", "angle"):
            self.roi = pg.PolyLineROI([(p.x(), p.y()) for p in xy], closed=False, pen=pen, movable=True,
                                      removable=True)
        elif kind in ("rectangle", "ellipse"):
            x0, x1 = sorted((xy[0].x(), xy[1].x()))
            y0, y1 = sorted((xy[0].y(), xy[1].y()))
            klass = pg.RectROI if kind == "rectangle" else pg.EllipseROI
            self.roi = klass((x0, y0), (max(x1 - x0, 0.5), max(y1 - y0, 0.5)), pen=pen, removable=True)
        else:
            self.roi = pg.ScatterPlotItem([xy[0].x()], [xy[0].y()], size=6, brush=pg.mkBrush(ANNOTATION_COLOR))
        self.roi.setParentItem(parent)
        self.label = pg.TextItem("", color=ANNOTATION_COLOR, anchor=(0, 1))
        self.label.setParentItem(parent)
        if isinstance(self.roi, pg.ROI):
            self.roi.sigRegionChangeFinished.connect(self._moved)
            self.roi.sigRemoveRequested.connect(lambda *_: view.remove_annotation(self.annotation))
            self.roi.sigClicked.connect(lambda *_: view.select_annotation(self.annotation))
            self.roi.setAcceptedMouseButtons(Qt.MouseButton.LeftButton)
        self.refresh()

    def _moved(self, *_):
        roi = self.roi
        kind = self.annotation.kind
        if kind in ("distance", "angle"):
            points = [roi.mapToParent(h.pos()) for h in roi.getHandles()]
        else:
            pos, size = roi.pos(), roi.size()
            points = [QPointF(pos.x(), pos.y()), QPointF(pos.x() + size.x(), pos.y() + size.y())]
        self.annotation.points = [(p.y() - 0.5, p.x() - 0.5) for p in points]
        self.refresh()

    def refresh(self) -> None:
        text = self.view.annotation_text(self.annotation)
        # ROI statistics run long: two values a line keep the label near its ROI and inside small views.
        parts = text.split(", ")
        self.label.setText("\n".join(", ".join(parts[i:i + 2]) for i in range(0, len(parts), 2)))
        r, c = self.annotation.points[-1] if self.annotation.kind != "angle" else self.annotation.points[1]
        self.label.setPos(c + 1.0, r)
        self.view._place_annotation_labels()

    def set_visible(self, visible: bool) -> None:
        self.roi.setVisible(visible)
        self.label.setVisible(visible)

    def set_selected(self, selected: bool) -> None:
        if isinstance(self.roi, pg.ROI):
            self.roi.setPen(pg.mkPen(SELECTED_COLOR if selected else ANNOTATION_COLOR, width=2))

    def remove(self) -> None:
        for item in (self.roi, self.label):
            scene = item.scene()
            item.setParentItem(None)
            if scene is not None:
                scene.removeItem(item)


class SliceView(pg.GraphicsView):
    """A viewport showing one view (axial slices or a reformat) of a Volume."""

    sliceChanged = Signal(object, int)
    windowChanged = Signal(object)
    cursorMoved = Signal(str)
    activated = Signal(object)
    crosshairMoved = Signal(object, object)  # (view, (k, j, i))
    annotationsChanged = Signal(object)
    volumeChanged = Signal(object)
    maskEdited = Signal(object)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent, background="k")
        self.viewbox = _ViewBox(self)
        self.setCentralItem(self.viewbox)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.viewbox.addItem(self.image_item)
        self.volume: Volume | None = None
        self.series_key = ""
        self.axis = 0
        self.index = 0
        self.count = 0
        self.slab = 1
        self.slab_mode = "mip"
        self.window_level: Window | None = None
        self.invert = False
        self.rotation = 0
        self.flip_h = False
        self.flip_v = False
        self.tool = "pan"
        self.show_overlays = True
        self._buffer: np.ndarray | None = None
        self._lut = gray_lut()
        self._offset = 0
        self._spacing_yx = (1.0, 1.0)
        self._row_dir = np.array([0.0, 1.0, 0.0])
        self._col_dir = np.array([1.0, 0.0, 0.0])
        self._sensitivity = 1.0
        self._image_shape = (0, 0)
        self._loaded: set[int] | None = None
        self.annotations: list[Annotation] = []
        self.bookmarks: set[int] = set()  # bookmarked acquired slices, shared by the views of a series
        self._items: dict[int, _AnnotationItem] = {}
        self._selected: Annotation | None = None
        self._drawing: Annotation | None = None
        self._angle_points: list[tuple[float, float]] = []
        self.crosshair_voxel: tuple[int, int, int] | None = None
        self._cross_v = pg.InfiniteLine(angle=90, pen=pg.mkPen((0, 200, 255, 160), width=1), movable=False)
        self._cross_h = pg.InfiniteLine(angle=0, pen=pg.mkPen((0, 200, 255, 160), width=1), movable=False)
        for line in (self._cross_v, self._cross_h):
            line.setParentItem(self.image_item)
            line.setVisible(False)

        # Overlays: one uint8 ImageItem each with a 256-entry RGBA lookup table (the fast path).
        self.mask_item = pg.ImageItem(axisOrder="row-major")
        self.heatmap_item = pg.ImageItem(axisOrder="row-major")
        for item, z in ((self.heatmap_item, 1), (self.mask_item, 2)):
            item.setParentItem(self.image_item)
            item.setZValue(z)
            item.setVisible(False)
        self.mask: np.ndarray | None = None
        self.mask_colors: dict[int, tuple[int, int, int]] = {}
        self.mask_opacity = 0.45
        self.mask_hidden_labels: set[int] = set()
        self.mask_contour = False
        self.heatmap: np.ndarray | None = None
        self.heatmap_opacity = 0.5
        self.heatmap_visible = False
        self.overlays_visible = True
        self._mask_lut = np.zeros((256, 4), dtype=np.uint8)
        self._heat_lut = heat_lut(self.heatmap_opacity)
        self._heat_buffer: np.ndarray | None = None
        self.brush_size = 6
        self.brush_label = 2
        self._mask_undo: list[tuple[int, np.ndarray]] = []
        self._corner_lines: dict[str, list[tuple[int, str]]] = {}
        self._labels = {name: self._make_label() for name in
                        ("top_left", "top_right", "bottom_left", "bottom_right", "left", "right", "top", "bottom")}
        for name in ("left", "right", "top", "bottom"):
            self._labels[name].setStyleSheet(OVERLAY_STYLE + "font-size: 14px; font-weight: bold; color: #ffd24a;")
        self.scale_bar = ScaleBar(self)
        self._cine = QTimer(self)
        self._cine.timeout.connect(lambda: self.step_slice(1, wrap=True))
        self.viewbox.sigRangeChanged.connect(lambda *_: self._update_scale())
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAcceptDrops(False)

    # --- set-up --------------------------------------------------------------------------

    def _make_label(self) -> QLabel:
        label = QLabel(self)
        label.setStyleSheet(OVERLAY_STYLE)
        label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        label.setTextFormat(Qt.TextFormat.PlainText)
        # A tight dark halo keeps light text readable over bright anatomy (bone in coronal and sagittal views).
        halo = QGraphicsDropShadowEffect(label)
        halo.setBlurRadius(4)
        halo.setOffset(1, 1)
        halo.setColor(QColor(0, 0, 0, 240))
        label.setGraphicsEffect(halo)
        return label

    def set_volume(self, volume: Volume, series_key: str = "", *, axis: int = 0, index: int | None = None,
                   loaded: set[int] | None = None) -> None:
        """Show ``volume`` along ``axis``; ``loaded`` (slice indices decoded so far) for a
        series still loading: other slices show as blank until they arrive."""
        same = self.volume is volume and self.axis == axis
        if self.volume is not volume:
            # Overlays belong to one volume: another series' mask or heatmap would be drawn on the wrong voxels.
            self.mask = self.heatmap = None
            self._mask_undo = []
        self.volume = volume
        self.series_key = series_key
        self.axis = axis
        self._loaded = loaded
        geometry = mpr.reformat_geometry(volume, axis)
        self._spacing_yx, self._row_dir, self._col_dir, self.count = geometry
        self._spacing_yx = tuple(float(v) for v in self._spacing_yx)
        if not same:
            self.index = self.count // 2 if index is None else int(np.clip(index, 0, self.count - 1))
            self.window_level = windowing.default_window(volume)
            self._sensitivity = None  # computed on the first drag: it samples the volume
            self.invert = False
            self._buffer = None
            self._clear_annotation_items()
            self.annotations = []
        else:
            self.index = int(np.clip(self.index, 0, self.count - 1))
        self._offset = windowing.display_offset(volume.voxels.dtype) if not volume.is_color else 0
        self._update_lut()
        self.render()
        if not same:
            self._apply_transform()
            self.fit()
        self.volumeChanged.emit(self)

    def clear(self) -> None:
        self._clear_annotation_items()
        self.annotations = []
        self.volume = None
        self.mask = self.heatmap = None
        self._mask_undo = []
        self.mask_item.setVisible(False)
        self.heatmap_item.setVisible(False)
        self.image_item.clear()
        for label in self._labels.values():
            label.setText("")
        self._corner_lines = {}
        self.scale_bar.set_scale(None)
        self.volumeChanged.emit(self)

    # --- drawing the slice ---------------------------------------------------------------

    def current_image(self) -> np.ndarray | None:
        """The 2D array on screen (modality units), before windowing."""
        if self.volume is None:
            return None
        direction = self.volume.direction
        return mpr.reformat(self.volume.voxels, self.axis, self.index, slab=self.slab, mode=self.slab_mode,
                            direction=direction)

    def render(self) -> None:
        """Hand the current slice to the ImageItem with fixed levels (the fast path)."""
        image = self.current_image()
        if image is None:
            return
        if self.volume.is_color:
            image = windowing.color_to_uint8(image, self.volume.color_bits)
            self.image_item.setImage(image, autoLevels=False, levels=(0, 255), lut=None)
        else:
            lo, hi = self.window_level.levels() if self.window_level else (float(image.min()), float(image.max()))
            if self._offset:
                if self._buffer is None or self._buffer.shape != image.shape:
                    self._buffer = np.empty(image.shape, dtype=np.uint16)
                if image.dtype == np.int16:
                    np.bitwise_xor(image.view(np.uint16), np.uint16(0x8000), out=self._buffer)
                else:
                    np.add(np.clip(image, -32768, 32767), 32768, out=self._buffer, casting="unsafe")
                data = self._buffer
                levels = (lo + self._offset, hi + self._offset)
            else:
                data = image
                levels = (lo, hi)
            self.image_item.setImage(data, autoLevels=False, levels=levels, lut=self._lut)
        if self._image_shape != image.shape[:2]:
            self._image_shape = image.shape[:2]
            self._apply_transform()
        self._render_overlays()
        self._show_annotations_for_slice()
        self._update_overlay_text()
        self._update_cursor_readout()  # the slice under the mouse changed: the value with it

    # --- assistant overlays ------------------------------------------------------------------

    def set_mask(self, mask: np.ndarray | None, colors: dict[int, tuple[int, int, int]] | None = None) -> None:
        """A label map shaped like the volume (uint8), drawn in ``colors`` per label value."""
        if mask is not None and self.volume is not None and mask.shape != self.volume.voxels.shape[:3]:
            raise ValueError(f"mask shape {mask.shape} does not match the volume {self.volume.voxels.shape[:3]}")
        self.mask = mask
        if colors is not None:
            self.mask_colors = dict(colors)
        self._update_mask_lut()
        self.render()

    def set_mask_style(self, *, opacity: float | None = None, hidden: set[int] | None = None,
                       contour: bool | None = None) -> None:
        if opacity is not None:
            self.mask_opacity = float(np.clip(opacity, 0, 1))
        if hidden is not None:
            self.mask_hidden_labels = set(hidden)
        if contour is not None:
            self.mask_contour = contour
        self._update_mask_lut()
        self.render()

    def set_heatmap(self, heatmap: np.ndarray | None, *, visible: bool | None = None,
                    opacity: float | None = None) -> None:
        self.heatmap = heatmap
        if visible is not None:
            self.heatmap_visible = visible
        if opacity is not None:
            self.heatmap_opacity = float(np.clip(opacity, 0, 1))
            self._heat_lut = heat_lut(self.heatmap_opacity)
        self.render()

    def copy_overlays_from(self, other: SliceView) -> None:
        """Show ``other``'s mask and heatmap (the same arrays, resliced along this view's axis) in its style."""
        if other is self or other.volume is not self.volume:
            return
        self.mask_colors = dict(other.mask_colors)
        self.mask_opacity, self.mask_contour = other.mask_opacity, other.mask_contour
        self.mask_hidden_labels = set(other.mask_hidden_labels)
        self.heatmap_visible, self.heatmap_opacity = other.heatmap_visible, other.heatmap_opacity
        self._heat_lut = heat_lut(self.heatmap_opacity)
        self.overlays_visible = other.overlays_visible
        self.mask, self.heatmap = other.mask, other.heatmap
        self._update_mask_lut()
        self.render()

    def set_assistant_overlays_visible(self, visible: bool) -> None:
        self.overlays_visible = visible
        self.render()

    def _update_mask_lut(self) -> None:
        lut = np.zeros((256, 4), dtype=np.uint8)
        alpha = int(round(self.mask_opacity * 255)) if not self.mask_contour else 255
        for value, color in self.mask_colors.items():
            if 0 < value < 256 and value not in self.mask_hidden_labels:
                lut[value, :3] = color
                lut[value, 3] = alpha
        self._mask_lut = lut

    def _render_overlays(self) -> None:
        show_mask = self.mask is not None and self.overlays_visible and self.volume is not None
        if show_mask:
            labels = mpr.reformat(self.mask, self.axis, self.index, slab=self.slab, mode="mip",
                                  direction=self.volume.direction)
            if self.mask_contour:
                labels = contour_of(labels)
            box = nonzero_box(labels)
            show_mask = box is not None
            if show_mask:
                # Only the labelled part is drawn: a transparent pixel costs as much to paint as
                # a coloured one, and most slices have few or no labels.
                r0, r1, c0, c1 = box
                self.mask_item.setImage(np.ascontiguousarray(labels[r0:r1, c0:c1]), autoLevels=False,
                                        levels=(0, 255), lut=self._mask_lut)
                self.mask_item.setPos(c0, r0)
        self.mask_item.setVisible(show_mask)
        show_heat = (self.heatmap is not None and self.heatmap_visible and self.overlays_visible
                     and self.volume is not None)
        if show_heat:
            heat = mpr.reformat(self.heatmap, self.axis, self.index, slab=self.slab, mode="mip",
                                direction=self.volume.direction)
            if self._heat_buffer is None or self._heat_buffer.shape != heat.shape:
                self._heat_buffer = np.empty(heat.shape, dtype=np.uint8)
            np.multiply(heat, 255, out=self._heat_buffer, casting="unsafe")
            box = nonzero_box(self._heat_buffer > 4)
            show_heat = box is not None
            if show_heat:
                r0, r1, c0, c1 = box
                self.heatmap_item.setImage(np.ascontiguousarray(self._heat_buffer[r0:r1, c0:c1]), autoLevels=False,
                                           levels=(0, 255), lut=self._heat_lut)
                self.heatmap_item.setPos(c0, r0)
        self.heatmap_item.setVisible(show_heat)

    def _update_lut(self) -> None:
        invert = self.invert != bool(self.volume is not None and self.volume.invert)
        self._lut = gray_lut(invert)

    def _apply_transform(self) -> None:
        rows, cols = self._image_shape if self._image_shape != (0, 0) else (1, 1)
        dy, dx = self._spacing_yx
        width, height = cols * dx, rows * dy
        t = QTransform()
        t.translate(width / 2, height / 2)
        t.scale(-1 if self.flip_h else 1, -1 if self.flip_v else 1)
        t.rotate(self.rotation)
        t.translate(-width / 2, -height / 2)
        t.scale(dx, dy)
        self.image_item.setTransform(t)
        self._update_orientation_labels()

    def fit(self) -> None:
        # The image's own bounds: cheaper than autoRange, which visits every child item.
        rect = self.image_item.mapRectToParent(self.image_item.boundingRect())
        if rect.width() > 0 and rect.height() > 0:
            self.viewbox.setRange(rect, padding=0.02)
        self._update_scale()

    def actual_size(self) -> None:
        """1:1: one image pixel per screen pixel (along columns)."""
        if self.volume is None:
            return
        dx = self._spacing_yx[1]
        rect = self.viewbox.viewRect()
        width_px = max(self.viewbox.width(), 1)
        center = rect.center()
        new_width = width_px * dx
        scale = new_width / rect.width()
        self.viewbox.scaleBy((scale, scale), center=center)
        self._update_scale()

    def zoom_by(self, factor: float) -> None:
        self.viewbox.scaleBy((1 / factor, 1 / factor))
        self._update_scale()

    def zoom_factor(self) -> float:
        """Screen pixels per image pixel (along columns)."""
        size = self.viewbox.viewPixelSize()
        if not size or not size[0]:
            return 1.0
        return self._spacing_yx[1] / size[0]

    # --- state changes -------------------------------------------------------------------

    def set_slice(self, index: int) -> None:
        if self.volume is None:
            return
        index = int(np.clip(index, 0, self.count - 1))
        if index == self.index:
            return
        self.index = index
        self._cancel_drawing()
        self.render()
        self.sliceChanged.emit(self, index)

    def step_slice(self, steps: int, wrap: bool = False) -> None:
        if self.volume is None:
            return
        target = self.index + steps
        if wrap:
            target %= self.count
        self.set_slice(target)

    def slice_arrived(self, k: int) -> None:
        """A slice finished decoding (progressive loading): redraw if it is on screen."""
        if self.volume is None:
            return
        if self.axis == 0 and k == self.index:
            self.render()
        elif self.axis != 0 and self._loaded is not None and len(self._loaded) % 16 == 0:
            self.render()

    def set_window(self, window: Window | None) -> None:
        if window is None or self.volume is None or self.volume.is_color:
            return
        self.window_level = window
        self.render()
        self.windowChanged.emit(window)

    def drag_window(self, ev) -> None:
        ev.accept()
        if self.window_level is None or self.volume is None:
            return
        if self._sensitivity is None:
            self._sensitivity = windowing.drag_sensitivity(self.volume)
        delta = ev.screenPos() - ev.lastScreenPos()
        self.set_window(windowing.drag_window(self.window_level, delta.x(), delta.y(), sensitivity=self._sensitivity))

    def set_invert(self, invert: bool) -> None:
        self.invert = invert
        self._update_lut()
        self.render()

    def rotate(self, degrees: int = 90) -> None:
        self.rotation = (self.rotation + degrees) % 360
        self._apply_transform()
        self.fit()

    def set_flip(self, horizontal: bool | None = None, vertical: bool | None = None) -> None:
        if horizontal is not None:
            self.flip_h = horizontal
        if vertical is not None:
            self.flip_v = vertical
        self._apply_transform()

    def reset_view(self) -> None:
        self.rotation, self.flip_h, self.flip_v, self.invert = 0, False, False, False
        self._update_lut()
        self._apply_transform()
        if self.volume is not None:
            self.window_level = windowing.default_window(self.volume)
            self.render()
        self.fit()

    def set_slab(self, slab: int, mode: str = "mip") -> None:
        self.slab, self.slab_mode = max(1, int(slab)), mode
        self.render()

    def set_cine(self, playing: bool, fps: float = 15.0) -> None:
        if playing and self.volume is not None:
            self._cine.start(max(1, int(1000 / max(fps, 0.5))))
        else:
            self._cine.stop()

    @property
    def cine_playing(self) -> bool:
        return self._cine.isActive()

    def set_overlays_visible(self, visible: bool) -> None:
        self.show_overlays = visible
        for label in self._labels.values():
            label.setVisible(visible)
        self.scale_bar.setVisible(visible)

    # --- overlays --------------------------------------------------------------------------

    def _update_overlay_text(self) -> None:
        volume = self.volume
        if volume is None or not self.show_overlays:
            return
        first = volume.sources[0] if volume.sources else None
        get = first.get if first is not None else (lambda key, default="": default)
        name = str(get("PatientName", "") or "").replace("^", " ").strip()
        pid = str(get("PatientID", "") or "")
        # Each corner line has a priority (0 first): where a view is too small, the last ones give way.
        self._corner_lines["top_left"] = [(0, name), (1, pid and f"ID {pid}"),
                                          (2, display_date(str(get("StudyDate", "") or ""))),
                                          (3, str(get("StudyDescription", "") or ""))]
        view_name = mpr.view_plane_name(volume, self.axis)
        lines = [(4, f"{volume.modality}  {volume.description}".strip()),
                 (0, f"{view_name}  {self.index + 1}/{self.count}")]
        if self.axis == 0 and volume.geometry_known:
            position = volume.index_to_lps((self.index, 0, 0)) @ volume.direction[0]
            lines.append((5, f"position {position:.1f} mm"))
        if self.axis == 0:
            thickness = _float(get("SliceThickness", None))
            parts = [f"thickness {thickness:.2f} mm" if thickness else "",
                     f"spacing {volume.spacing_mm[0]:.2f} mm" if volume.geometry_known else ""]
            lines.append((6, ", ".join(p for p in parts if p)))
        if volume.resampled:
            interpolated = (self.axis == 0 and 0 <= self.index < len(volume.slices)
                            and volume.slices[self.index].interpolated and not volume.slices[self.index].source)
            lines.append((3, f"resampled ({volume.resampled})" + (": interpolated slice" if interpolated else "")))
        if self.slab > 1:
            lines.append((1, f"slab {self.slab} ({self.slab_mode.upper()})"))
        if self.axis == 0 and self.index in self.bookmarks:
            lines.append((2, "\u2605 bookmarked"))
        self._corner_lines["top_right"] = lines
        loading = ""
        if self._loaded is not None and len(self._loaded) < volume.shape[0]:
            loading = f"loading {len(self._loaded)}/{volume.shape[0]}"
        wl = f"W {self.window_level.width:.0f} L {self.window_level.center:.0f}" if self.window_level else ""
        self._corner_lines["bottom_left"] = [(0, loading), (1, wl), (2, f"zoom {self.zoom_factor():.2f}")]
        self._place_labels()

    def _update_orientation_labels(self) -> None:
        if self.volume is None or not self.volume.geometry_known:
            for name in ("left", "right", "top", "bottom"):
                self._labels[name].setText("")
            return
        labels = orientation.edge_labels(self._row_dir, self._col_dir, self.rotation, self.flip_h, self.flip_v)
        for name in ("left", "right", "top", "bottom"):
            self._labels[name].setText(labels[name])
        self._place_labels()

    def _update_scale(self) -> None:
        if self.volume is None:
            return
        self._place_annotation_labels()
        size = self.viewbox.viewPixelSize()
        known = self.volume.pixel_spacing_known
        mm_per_pixel = size[0] if size and size[0] else None
        self.scale_bar.set_scale(mm_per_pixel if known else None)
        if self.show_overlays and self.window_level is not None:
            self._update_overlay_text()

    def _place_labels(self) -> None:
        """Put the overlay text where no two pieces of it meet and all of it stays inside the view.

        Orientation labels and the scale bar come first; each corner block then gets the room left
        between them (its lines elided to that width, its lowest-priority lines dropped to that height).
        """
        w, h = self.width(), self.height()
        margin, gap = 6, 4
        labels = self._labels
        for name in ("left", "right", "top", "bottom"):
            labels[name].adjustSize()
        bar = self.scale_bar
        bar.move(w - bar.width() - margin, h - bar.height() - margin)
        bar_rect = bar.drawn_rect().translated(bar.pos()) if bar.isVisible() and bar.length_px else QRect()

        def size(name: str) -> tuple[int, int]:
            label = labels[name]
            return (label.width(), label.height()) if label.text() else (0, 0)

        positions = {"left": (margin, (h - size("left")[1]) / 2),
                     "right": (w - size("right")[0] - margin, (h - size("right")[1]) / 2),
                     "top": ((w - size("top")[0]) / 2, margin)}
        bottom_w, bottom_h = size("bottom")
        bottom = QRect(int((w - bottom_w) / 2), h - bottom_h - margin, bottom_w, bottom_h)
        if bar_rect.isValid() and bottom.intersects(bar_rect.adjusted(-gap, -gap, gap, gap)):
            bottom.moveBottom(bar_rect.top() - gap)
        positions["bottom"] = (bottom.x(), bottom.y())
        for name, (x, y) in positions.items():
            labels[name].move(int(x), int(y))

        for name in ("top_left", "top_right", "bottom_left", "bottom_right"):
            top = name.startswith("top")
            left = name.endswith("left")
            centre_w = size("top" if top else "bottom")[0]
            side_h = size("left" if left else "right")[1]
            max_w = int((w - centre_w) / 2 - margin - gap)
            max_h = int((h - side_h) / 2 - margin - gap) if side_h else int(h / 2 - margin - gap)
            if name == "bottom_right" and bar_rect.isValid():
                max_h -= bar_rect.height() + gap
            label = labels[name]
            self._fit_corner(label, self._corner_lines.get(name, []), max_w, max_h)
            lw, lh = (label.width(), label.height()) if label.text() else (0, 0)
            x = margin if left else w - lw - margin
            y = margin if top else h - lh - margin
            if name == "bottom_right" and bar_rect.isValid():
                y = bar_rect.top() - gap - lh
            label.move(int(x), int(y))

    @staticmethod
    def _fit_corner(label: QLabel, lines: list[tuple[int, str]], max_w: int, max_h: int) -> None:
        metrics = label.fontMetrics()
        kept = []
        if max_w > 0:
            for priority, text in lines:
                if not text:
                    continue
                elided = metrics.elidedText(text, Qt.TextElideMode.ElideRight, max_w)
                if elided and elided != "\u2026":
                    kept.append((priority, elided))
        while kept:
            label.setText("\n".join(text for _, text in kept))
            label.adjustSize()
            if label.height() <= max_h and label.width() <= max_w:
                return
            kept.remove(max(kept, key=lambda item: item[0]))
        label.setText("")
        label.adjustSize()

    def resizeEvent(self, event):  # noqa: N802 - Qt override
        super().resizeEvent(event)
        if hasattr(self, "_labels"):  # pyqtgraph resizes once inside its constructor
            self._place_labels()

    # --- cursor ----------------------------------------------------------------------------

    def image_coordinates(self, scene_pos) -> tuple[float, float]:
        """(row, col) of a scene position; pixel centres at integers."""
        p = self.image_item.mapFromScene(scene_pos)
        return p.y() - 0.5, p.x() - 0.5

    def _mouse_moved(self, scene_pos) -> None:
        self._cursor_scene = QPointF(scene_pos)
        self._update_cursor_readout()

    def cursor_readout(self) -> str:
        """The value under the mouse on the slice now shown: value with unit, position, integer voxel."""
        if self.volume is None or self._cursor_scene is None:
            return ""
        row, col = self.image_coordinates(self._cursor_scene)
        rows, cols = self._image_shape
        if not (-0.5 <= row < rows - 0.5 and -0.5 <= col < cols - 0.5):
            return ""
        k, j, i = mpr.cursor_to_voxel(self.volume, self.axis, self.index, row, col)
        value, position = measure.value_at(self.volume, k, j, i)
        if value is None:
            return ""
        units = self.volume.units
        if isinstance(value, tuple):
            text = f"RGB {value}"
        else:
            number = f"{value:.4g}" if isinstance(value, float) else f"{value}"
            text = f"{number} {units}" if units else f"value {number}"
        where = f"  at ({position[0]:.1f}, {position[1]:.1f}, {position[2]:.1f}) mm" if position is not None else ""
        voxel = ", ".join(str(int(np.floor(v + 0.5))) for v in (k, j, i))
        return f"{text}{where}  voxel ({voxel})"

    def _update_cursor_readout(self) -> None:
        """Tell the status bar what is under the mouse; only while the mouse is over this view, so another
        view redrawing (synchronised scrolling) does not blank it."""
        if self._cursor_scene is not None:
            self.cursorMoved.emit(self.cursor_readout())

    def mouseMoveEvent(self, event):  # noqa: N802 - Qt override
        super().mouseMoveEvent(event)
        # Every move, not the scene's rate-limited sigMouseMoved: that one drops a move that follows the
        # previous one closely, and the readout then stayed on where the mouse had been.
        self._mouse_moved(self.mapToScene(event.position().toPoint()))

    def leaveEvent(self, event):  # noqa: N802 - Qt override
        if self._cursor_scene is not None:
            self._cursor_scene = None
            self.cursorMoved.emit("")
        super().leaveEvent(event)

    _cursor_scene: QPointF | None = None

    # --- tools -----------------------------------------------------------------------------

    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}")
        self._cancel_drawing()
        self.tool = tool
        self.viewbox.setMouseMode(pg.ViewBox.PanMode)

    def tool_drag(self, ev) -> None:
        ev.accept()
        if self.volume is None:
            return
        point = self.image_coordinates(ev.scenePos())
        if self.tool == "crosshair":
            self.set_crosshair_from_image(point)
            return
        if self.tool in ("brush", "eraser"):
            if ev.isStart():
                self.begin_mask_edit()
            self.paint_mask(point, erase=self.tool == "eraser")
            if ev.isFinish():
                self.maskEdited.emit(self)
            return
        if self.tool not in ("distance", "rectangle", "ellipse"):
            return
        if ev.isStart():
            start = self.image_coordinates(self.viewbox.mapToScene(ev.buttonDownPos()))
            self._drawing = Annotation(self.tool, self.index, [start, point], axis=self.axis)
            self._add_item(self._drawing)
        elif self._drawing is not None:
            self._drawing.points[1] = point
            self._replace_item(self._drawing)
            if ev.isFinish():
                self.annotations.append(self._drawing)
                self._drawing = None
                self.annotationsChanged.emit(self)

    def tool_click(self, ev) -> None:
        if self.volume is None:
            return
        point = self.image_coordinates(ev.scenePos())
        if self.tool == "crosshair":
            self.set_crosshair_from_image(point)
        elif self.tool == "angle":
            self._angle_points.append(point)
            if len(self._angle_points) == 3:
                self.add_annotation(Annotation("angle", self.index, list(self._angle_points), axis=self.axis))
                self._angle_points = []
        elif self.tool == "text":
            text, ok = QInputDialog.getText(self, "Text annotation", "Text:")
            if ok and text.strip():
                self.add_annotation(Annotation("text", self.index, [point], axis=self.axis, text=text.strip()))
        else:
            self.select_annotation(None)

    # --- mask correction ---------------------------------------------------------------------

    def begin_mask_edit(self) -> bool:
        """Remember the current slice of the mask so the coming stroke can be undone."""
        if self.mask is None or self.axis != 0 or not self.mask.flags.writeable:
            return False
        self._mask_undo.append((self.index, self.mask[self.index].copy()))
        del self._mask_undo[:-50]
        return True

    def paint_mask(self, point: tuple[float, float], erase: bool = False) -> None:
        """Paint (or erase) a disc of ``brush_size`` pixels at image point (row, col) of this slice."""
        if self.mask is None or self.axis != 0 or not self.mask.flags.writeable:
            return
        rows, cols = self.mask.shape[1:]
        radius = self.brush_size / 2
        r, c = point
        r0, r1 = max(int(np.floor(r - radius)), 0), min(int(np.ceil(r + radius)) + 1, rows)
        c0, c1 = max(int(np.floor(c - radius)), 0), min(int(np.ceil(c + radius)) + 1, cols)
        if r0 >= r1 or c0 >= c1:
            return
        yy, xx = np.mgrid[r0:r1, c0:c1]
        disc = (yy - r) ** 2 + (xx - c) ** 2 <= radius ** 2
        region = self.mask[self.index, r0:r1, c0:c1]
        if erase:
            region[disc & (region == self.brush_label)] = 0
        else:
            region[disc] = self.brush_label
        self._render_overlays()

    def undo_mask_edit(self) -> bool:
        if not self._mask_undo or self.mask is None:
            return False
        index, previous = self._mask_undo.pop()
        self.mask[index] = previous
        self.render()
        self.maskEdited.emit(self)
        return True

    def add_annotation(self, annotation: Annotation) -> Annotation:
        self.annotations.append(annotation)
        self._add_item(annotation)
        self.annotationsChanged.emit(self)
        return annotation

    def remove_annotation(self, annotation: Annotation) -> None:
        if annotation in self.annotations:
            self.annotations.remove(annotation)
        item = self._items.pop(annotation.id, None)
        if item is not None:
            item.remove()
        if self._selected is annotation:
            self._selected = None
        self.annotationsChanged.emit(self)

    def select_annotation(self, annotation: Annotation | None) -> None:
        if self._selected is not None and self._selected.id in self._items:
            self._items[self._selected.id].set_selected(False)
        self._selected = annotation
        if annotation is not None and annotation.id in self._items:
            self._items[annotation.id].set_selected(True)

    @property
    def selected_annotation(self) -> Annotation | None:
        return self._selected

    def annotation_text(self, annotation: Annotation) -> str:
        image = None
        if annotation.kind in ("rectangle", "ellipse") and self.volume is not None and not self.volume.is_color:
            image = mpr.reformat(self.volume.voxels, annotation.axis, annotation.slice_index, direction=self.volume.direction)
        return measurement_text(annotation, image, self._spacing_yx, self.volume.units if self.volume else "",
                                self.volume.pixel_spacing_known if self.volume else False)

    def _add_item(self, annotation: Annotation) -> None:
        self._items[annotation.id] = _AnnotationItem(self, annotation)
        self._place_annotation_labels()

    def _replace_item(self, annotation: Annotation) -> None:
        old = self._items.pop(annotation.id, None)
        if old is not None:
            old.remove()
        self._add_item(annotation)

    def _cancel_drawing(self) -> None:
        if self._drawing is not None:
            item = self._items.pop(self._drawing.id, None)
            if item is not None:
                item.remove()
            self._drawing = None
        self._angle_points = []

    def _clear_annotation_items(self) -> None:
        for item in self._items.values():
            item.remove()
        self._items.clear()
        self._selected = None

    def _show_annotations_for_slice(self) -> None:
        for annotation in self.annotations:
            item = self._items.get(annotation.id)
            if item is not None:
                item.set_visible(annotation.slice_index == self.index and annotation.axis == self.axis)
        self._place_annotation_labels()

    def text_rects(self) -> dict[str, QRectF]:
        """Where each visible piece of overlay text is, in this view's coordinates (corner and orientation
        labels, the scale bar, measurement labels)."""
        out = {name: QRectF(label.geometry()) for name, label in self._labels.items()
               if label.isVisible() and label.text()}
        if self.scale_bar.isVisible() and self.scale_bar.length_px:
            out["scale_bar"] = QRectF(self.scale_bar.drawn_rect().translated(self.scale_bar.pos()))
        for key, item in self._items.items():
            if item.label.isVisible() and item.label.toPlainText():
                out[f"measurement {key}"] = self._label_rect(item.label)
        return out

    def _label_rect(self, label) -> QRectF:
        label.updateTransform(force=True)
        return QRectF(self.mapFromScene(label.sceneBoundingRect()).boundingRect())

    def _place_annotation_labels(self) -> None:
        """Turn each visible measurement label to the side of its point where it stays inside the view and
        clear of the corner text and of the other labels."""
        if not self._items:
            return
        view_rect = QRectF(0, 0, self.width(), self.height())
        taken = [QRectF(label.geometry()) for label in self._labels.values() if label.isVisible() and label.text()]
        if self.scale_bar.isVisible() and self.scale_bar.length_px:
            taken.append(QRectF(self.scale_bar.drawn_rect().translated(self.scale_bar.pos())))
        for item in self._items.values():
            label = item.label
            if not label.isVisible() or not label.toPlainText():
                continue
            best = None
            for anchor in ((0, 1), (1, 1), (0, 0), (1, 0)):
                label.setAnchor(anchor)
                rect = self._label_rect(label)
                inside = view_rect.contains(rect)
                free = inside and not any(rect.intersects(other) for other in taken)
                if free:
                    best = (anchor, rect)
                    break
                if inside and best is None:
                    best = (anchor, rect)
            anchor, rect = best if best is not None else ((0, 1), self._label_rect(label))
            label.setAnchor(anchor)
            taken.append(rect)

    # --- crosshair (MPR) -----------------------------------------------------------------------

    def set_crosshair_from_image(self, point: tuple[float, float]) -> None:
        if self.volume is None:
            return
        rows, cols = self._image_shape
        row = float(np.clip(point[0], 0, rows - 1))
        col = float(np.clip(point[1], 0, cols - 1))
        voxel = mpr.cursor_to_voxel(self.volume, self.axis, self.index, row, col)
        self.crosshairMoved.emit(self, tuple(int(round(v)) for v in voxel))

    def show_crosshair(self, voxel: tuple[int, int, int] | None) -> None:
        """Put the crosshair on ``voxel`` and move this view to its slice."""
        self.crosshair_voxel = voxel
        visible = voxel is not None and self.volume is not None
        for line in (self._cross_v, self._cross_h):
            line.setVisible(visible)
        if not visible:
            return
        index, row, col = mpr.voxel_to_view(self.volume, self.axis, *voxel)
        self._cross_v.setPos(col + 0.5)
        self._cross_h.setPos(row + 0.5)
        self.set_slice(int(round(index)))

    def keyPressEvent(self, event):  # noqa: N802 - Qt override
        key = event.key()
        steps = {Qt.Key.Key_Up: -1, Qt.Key.Key_Left: -1, Qt.Key.Key_Down: 1, Qt.Key.Key_Right: 1,
                 Qt.Key.Key_PageUp: -10, Qt.Key.Key_PageDown: 10}
        if key in steps:
            self.step_slice(steps[key])
        elif key == Qt.Key.Key_Home:
            self.set_slice(0)
        elif key == Qt.Key.Key_End:
            self.set_slice(self.count - 1)
        elif key in (Qt.Key.Key_Delete, Qt.Key.Key_Backspace) and self._selected is not None:
            self.remove_annotation(self._selected)
        elif key == Qt.Key.Key_Escape:
            self._cancel_drawing()
        else:
            super().keyPressEvent(event)
            return
        event.accept()


def nonzero_box(image: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row start, row stop, col start, col stop) of the non-zero pixels, or None if there are none."""
    rows = np.flatnonzero(image.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(image[rows[0]:rows[-1] + 1].any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def contour_of(labels: np.ndarray) -> np.ndarray:
    """The outline (1 pixel) of each label region of a 2D label map; 0 elsewhere."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    return np.where(edge, labels, 0).astype(np.uint8)


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


