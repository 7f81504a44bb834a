"""The viewport layouts: 1×1, 1×2, 2×2 with a series per viewport, and MPR (axial, coronal,
sagittal of one volume with a linked crosshair). Viewports share volumes; none copies one."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QScrollBar, QWidget

from medviewer.core import mpr
from medviewer.ui.panels import SERIES_MIME
from medviewer.ui.viewport import SliceView

LAYOUTS = {"1x1": (1, 1), "1x2": (1, 2), "2x2": (2, 2), "mpr": (2, 2)}


class ViewportFrame(QFrame):
    """A SliceView in a frame that shows which viewport is active and accepts series drops."""

    seriesDropped = Signal(object, str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.view = SliceView(self)
        self.slider = QScrollBar(Qt.Orientation.Vertical, self)
        self.slider.setToolTip("Slice")
        self.slider.setEnabled(False)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(1, 1, 1, 1)
        layout.setSpacing(0)
        layout.addWidget(self.view)
        layout.addWidget(self.slider)
        self.slider.valueChanged.connect(self.view.set_slice)
        self.view.sliceChanged.connect(lambda _view, index: self._sync_slider())
        self.view.volumeChanged.connect(lambda _view: self._sync_slider())
        self.setAcceptDrops(True)
        self.set_active(False)

    def _sync_slider(self) -> None:
        view = self.view
        self.slider.blockSignals(True)
        self.slider.setEnabled(view.volume is not None)
        self.slider.setRange(0, max(view.count - 1, 0) if view.volume is not None else 0)
        self.slider.setPageStep(10)
        self.slider.setValue(view.index)
        self.slider.blockSignals(False)

    _active: bool | None = None

    def set_active(self, active: bool) -> None:
        if active != self._active:  # style sheets are slow to apply: only on change
            self._active = active
            self.setStyleSheet("ViewportFrame { border: 1px solid %s; }" % ("#3d8fd1" if active else "#222"))

    def dragEnterEvent(self, event):  # noqa: N802 - Qt override
        if event.mimeData().hasFormat(SERIES_MIME):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event):  # noqa: N802 - Qt override
        if event.mimeData().hasFormat(SERIES_MIME):
            key = bytes(event.mimeData().data(SERIES_MIME)).decode()
            self.seriesDropped.emit(self.view, key)
            event.acceptProposedAction()
        else:
            event.ignore()


class ViewerGrid(QWidget):
    activeChanged = Signal(object)
    seriesDropped = Signal(object, str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._layout = QGridLayout(self)
        self._layout.setContentsMargins(0, 0, 0, 0)
        self._layout.setSpacing(2)
        self.frames = [ViewportFrame(self) for _ in range(4)]
        for frame in self.frames:
            frame.view.activated.connect(self.set_active)
            frame.seriesDropped.connect(self.seriesDropped)
            frame.view.sliceChanged.connect(self._slice_changed)
            frame.view.crosshairMoved.connect(self._crosshair_moved)
        self.layout_name = "1x1"
        self.active: SliceView = self.frames[0].view
        self.sync_scrolling = True
        self._syncing = False
        self._saved: list[tuple] | None = None
        self.set_layout("1x1")
        self.set_active(self.active)

    @property
    def views(self) -> list[SliceView]:
        return [frame.view for frame in self.frames if frame.isVisible() or frame.parent() is self]

    def visible_views(self) -> list[SliceView]:
        rows, cols = LAYOUTS[self.layout_name]
        count = 3 if self.layout_name == "mpr" else rows * cols
        return [frame.view for frame in self.frames[:count]]

    def set_layout(self, name: str) -> None:
        if name not in LAYOUTS:
            raise ValueError(f"unknown layout {name!r}")
        leaving_mpr = self.layout_name == "mpr" and name != "mpr"
        entering_mpr = name == "mpr" and self.layout_name != "mpr"
        if entering_mpr:
            self._enter_mpr()
        self.layout_name = name
        for frame in self.frames:
            self._layout.removeWidget(frame)
            frame.hide()
        rows, cols = LAYOUTS[name]
        count = 3 if name == "mpr" else rows * cols
        for r in range(2):
            self._layout.setRowStretch(r, 1 if r < rows else 0)
        for c in range(2):
            self._layout.setColumnStretch(c, 1 if c < cols else 0)
        for index, frame in enumerate(self.frames[:count]):
            self._layout.addWidget(frame, index // cols, index % cols)
            frame.show()
        if leaving_mpr:
            self._leave_mpr()
        if self.active not in self.visible_views():
            self.set_active(self.frames[0].view)
        for view in self.visible_views():
            if view.volume is not None:
                view.fit()

    def _enter_mpr(self) -> None:
        source = self.active
        self._saved = [(f.view.volume, f.view.series_key, f.view.axis, f.view.index) for f in self.frames]
        volume, key = source.volume, source.series_key
        if volume is None:
            return
        loaded = source._loaded
        for axis, frame in enumerate(self.frames[:3]):
            frame.view.set_volume(volume, key, axis=axis, loaded=loaded)
            frame.view.set_tool("crosshair" if source.tool in ("pan", "crosshair") else source.tool)
        # The assistant's overlays follow every plane: the same mask and heatmap, resliced.
        for frame in self.frames[:3]:
            frame.view.copy_overlays_from(source)
        center = (source.index, volume.shape[1] // 2, volume.shape[2] // 2)
        for frame in self.frames[:3]:
            frame.view.show_crosshair(center)

    def _leave_mpr(self) -> None:
        for frame in self.frames[:3]:
            frame.view.show_crosshair(None)
            if frame.view.tool == "crosshair":
                frame.view.set_tool("pan")
        if self._saved:
            for frame, (volume, key, axis, index) in zip(self.frames, self._saved):
                if volume is not None:
                    frame.view.set_volume(volume, key, axis=axis, index=index)
                elif frame.view.volume is not None and frame is not self.frames[0]:
                    frame.view.clear()
            # The first viewport goes back to the acquired slices of what MPR showed.
            first = self.frames[0].view
            if first.axis != 0 and first.volume is not None:
                first.set_volume(first.volume, first.series_key, axis=0)
        self._saved = None

    def set_active(self, view: SliceView) -> None:
        self.active = view
        for frame in self.frames:
            frame.set_active(frame.view is view)
        self.activeChanged.emit(view)

    def _slice_changed(self, view: SliceView, index: int) -> None:
        if self._syncing or not self.sync_scrolling or self.layout_name == "mpr" or view.volume is None:
            return
        volume = view.volume
        if not volume.geometry_known or view.axis != 0:
            return
        point = volume.index_to_lps((index, (volume.shape[1] - 1) / 2, (volume.shape[2] - 1) / 2))
        self._syncing = True
        try:
            for other in self.visible_views():
                if other is view or other.volume is None or other.axis != 0 or other.volume is volume:
                    continue
                if not other.volume.frame_of_reference_uid or (
                        other.volume.frame_of_reference_uid != volume.frame_of_reference_uid):
                    continue
                target = mpr.slice_for_position(other.volume, point)
                if target is not None:
                    other.set_slice(target)
        finally:
            self._syncing = False

    def _crosshair_moved(self, source: SliceView, voxel) -> None:
        if self.layout_name != "mpr":
            return
        for frame in self.frames[:3]:
            if frame.view.volume is source.volume:
                frame.view.show_crosshair(voxel)
