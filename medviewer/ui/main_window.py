"""The main window: menus, toolbar, status bar with progress and cancel, dockable panels.

Opening (dialogs, command-line paths, drops) starts a worker that scans, then loads the main
series; the series appears as soon as its first slice is decoded and fills in while the rest
loads. Everything the user might wait for runs in workers; this thread only paints.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFileDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolBar,
    QWidget,
)

from medviewer.core import windowing
from medviewer.core.load import load
from medviewer.core.scan import scan
from medviewer.core.series import ScanResult, Series
from medviewer.core.thumbnail import thumbnail
from medviewer.core.volume import Volume
from medviewer.ui.assistant import AssistantPanel
from medviewer.ui.export_menu import add_export_menu
from medviewer.ui.grid import ViewerGrid
from medviewer.ui.panels import RefusedList, SeriesTree, TagBrowser
from medviewer.ui.review_state import ReviewState
from medviewer.ui.viewport import TOOLS, SliceView
from medviewer.ui.workers import JobContext, TaskManager
from medviewer.version import __version__

MAX_RECENT = 10
TOOL_LABELS = {"pan": "Pan", "zoom": "Zoom", "window": "Window/Level", "distance": "Distance",
               "angle": "Angle", "rectangle": "Rectangle ROI", "ellipse": "Ellipse ROI", "text": "Text",
               "crosshair": "Crosshair (MPR)", "brush": "Mask Brush", "eraser": "Mask Eraser"}
TOOL_KEYS = {"pan": "P", "zoom": "Z", "window": "W", "distance": "D", "angle": "A", "rectangle": "Shift+R",
             "ellipse": "E", "text": "T", "crosshair": "C", "brush": "B", "eraser": "Shift+B"}
TOOLBAR_TOOLS = ("pan", "zoom", "window", "distance", "angle", "rectangle", "ellipse", "text", "crosshair")


def main_series(result: ScanResult) -> Series | None:
    """The series to show first: the one with the most frames (a scout or localizer rarely wins)."""
    candidates = result.series
    return max(candidates, key=lambda s: (len(s.frames), s.rows * s.columns)) if candidates else None


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None):
        super().__init__()
        self.setWindowTitle("MedViewer")
        self.settings = settings or QSettings("MedViewer", "MedViewer")
        self.tasks = TaskManager(self)
        self.volumes: dict[str, Volume] = {}
        self.loading: dict[str, set[int]] = {}
        self._partial: dict[str, Volume] = {}
        self._pending_view: dict[str, SliceView] = {}
        self.last_error = ""

        self.grid = ViewerGrid(self)
        self.setCentralWidget(self.grid)
        self.grid.activeChanged.connect(self._active_changed)
        self.grid.seriesDropped.connect(lambda view, key: self.open_series(key, view))
        for frame in self.grid.frames:
            frame.view.cursorMoved.connect(self._cursor_moved)
            frame.view.sliceChanged.connect(self._slice_changed)

        self.series_tree = SeriesTree(self)
        self.series_tree.openRequested.connect(lambda key: self.open_series(key))
        self.refused_list = RefusedList(self)
        self.tag_browser = TagBrowser(self)
        self.series_dock = self._dock("Series", self.series_tree, Qt.DockWidgetArea.RightDockWidgetArea)
        self.refused_dock = self._dock("Not opened", self.refused_list, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tags_dock = self._dock("Tags", self.tag_browser, Qt.DockWidgetArea.RightDockWidgetArea)
        self.assistant = AssistantPanel(self)
        self.assistant_dock = self._dock("Assistant", self.assistant, Qt.DockWidgetArea.RightDockWidgetArea)
        # Room above the probability strip's top tick label ("1.0"), which was cut in half at the edge.
        self.assistant.plot.getPlotItem().layout.setContentsMargins(1, 8, 8, 1)
        self.predictions: dict[tuple, object] = {}
        self._running_prediction: dict[tuple, object] = {}
        self._assistant_worker = None
        # The panel (table, plot, verdict) is redrawn at most five times a second during a run: per batch it
        # cost up to 35 ms of the GUI thread; the viewports still update per batch.
        self._panel_refresh = QTimer(self)
        self._panel_refresh.setSingleShot(True)
        self._panel_refresh.setInterval(200)
        self._panel_refresh.timeout.connect(lambda: self.assistant.refresh())
        self._connect_assistant()
        self.review_state = ReviewState(self)
        # The image owns the window: the side panels share one tabbed column, each scrolls inside it rather
        # than widening it (the Tags table or the assistant's plot grew the window past the screen).
        self.tabifyDockWidget(self.series_dock, self.assistant_dock)
        self.tabifyDockWidget(self.assistant_dock, self.tags_dock)
        self.series_dock.raise_()
        self.refused_dock.hide()
        self.tags_dock.hide()
        self.tags_dock.visibilityChanged.connect(lambda visible: visible and self._update_tags())

        self._build_status_bar()
        self._build_actions()
        self._build_menus()
        self._build_toolbar()
        self.setAcceptDrops(True)
        self.tasks.started.connect(lambda _: self._update_busy())
        self.tasks.ended.connect(lambda _: self._update_busy())
        self._restore_settings()

    # --- construction --------------------------------------------------------------------------

    def _dock(self, title: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock-{title}")
        scroll = QScrollArea(dock)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(widget)
        dock.setWidget(scroll)
        self.addDockWidget(area, dock)
        return dock

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.cursor_label = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setTextVisible(True)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Cancel loading")
        self.cancel_button.clicked.connect(self.cancel_tasks)
        bar.addWidget(self.cursor_label, 1)
        bar.addPermanentWidget(self.progress)
        bar.addPermanentWidget(self.cancel_button)
        self.progress.hide()
        self.cancel_button.hide()

    def _action(self, text: str, slot=None, shortcut: str | QKeySequence | None = None, checkable: bool = False,
                tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut:
            action.setShortcut(QKeySequence(shortcut))
        action.setCheckable(checkable)
        if tip:
            action.setToolTip(tip)
            action.setStatusTip(tip)
        if slot is not None:
            if checkable:
                action.toggled.connect(slot)
            else:
                # triggered(bool) would arrive as the slot's first argument (a path=False, say): drop it
                action.triggered.connect(lambda _checked=False, s=slot: s())
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        a = self._action
        self.act_open = a("&Open Files…", self.open_files_dialog, QKeySequence.StandardKey.Open)
        self.act_open_folder = a("Open &Folder…", self.open_folder_dialog, "Ctrl+Shift+O")
        self.act_pacs = a("&PACS: Query and Retrieve…", self.open_pacs, "Ctrl+Shift+P")
        self.act_quit = a("&Quit", self.close, QKeySequence.StandardKey.Quit)
        self.act_fit = a("&Fit to Window", lambda: self.active.fit(), "F")
        self.act_one = a("Actual Size (&1:1)", lambda: self.active.actual_size(), "Ctrl+1")
        self.act_zoom_in = a("Zoom &In", lambda: self.active.zoom_by(1.25), QKeySequence.StandardKey.ZoomIn)
        self.act_zoom_out = a("Zoom &Out", lambda: self.active.zoom_by(0.8), QKeySequence.StandardKey.ZoomOut)
        self.act_rotate = a("&Rotate 90°", lambda: self.active.rotate(90), "R")
        self.act_flip_h = a("Flip &Horizontal", lambda: self.active.set_flip(horizontal=not self.active.flip_h), "H")
        self.act_flip_v = a("Flip &Vertical", lambda: self.active.set_flip(vertical=not self.active.flip_v), "V")
        self.act_invert = a("&Invert", lambda: self.active.set_invert(not self.active.invert), "I")
        self.act_reset = a("Rese&t View", lambda: self.active.reset_view(), "Ctrl+R")
        self.act_overlays = a("Show &Overlays", self._set_overlays, "O", checkable=True)
        self.act_overlays.setChecked(True)
        self.act_sync = a("&Synchronise Scrolling", self._set_sync, None, checkable=True)
        self.act_sync.setChecked(True)
        self.act_cine = a("&Cine", self._toggle_cine, "Space", checkable=True)
        self.act_delete = a("&Delete Selected Annotation", self._delete_selected, QKeySequence.StandardKey.Delete)
        self.act_about = a("&About MedViewer", self.about)
        self.act_run_assistant = a("&Run the Assistant on This Series", lambda: self.assistant._run(), "Ctrl+Shift+A")
        self.act_assistant_overlays = a("Show Assistant &Overlays", self._set_assistant_overlays, "M",
                                        checkable=True)
        self.act_assistant_overlays.setChecked(True)
        self.act_heatmap = a("Show &Heatmap", lambda on: self.assistant.heatmap_box.setChecked(on), "Shift+H",
                             checkable=True)
        self.layout_actions = {}
        group = QActionGroup(self)
        for name, label, key in (("1x1", "1×1", "Alt+1"), ("1x2", "1×2", "Alt+2"), ("2x2", "2×2", "Alt+4"),
                                 ("mpr", "MPR", "Alt+M")):
            action = a(f"Layout {label}", lambda checked, n=name: checked and self.set_layout(n), key, checkable=True)
            group.addAction(action)
            self.layout_actions[name] = action
        self.tool_actions = {}
        self.layout_actions["1x1"].setChecked(True)
        tools = QActionGroup(self)
        for tool in TOOLS:
            action = a(TOOL_LABELS[tool], lambda checked, t=tool: checked and self.set_tool(t), TOOL_KEYS[tool],
                       checkable=True)
            tools.addAction(action)
            self.tool_actions[tool] = action
        self.tool_actions["pan"].setChecked(True)
        self.preset_actions: list[QAction] = []

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        file_menu.addAction(self.act_open)
        file_menu.addAction(self.act_open_folder)
        file_menu.addAction(self.act_pacs)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        file_menu.addSeparator()
        file_menu.addAction(self.act_quit)
        self.export = add_export_menu(self, file_menu, before=self.act_quit)
        file_menu.insertSeparator(self.act_quit)
        view = bar.addMenu("&View")
        for action in self.layout_actions.values():
            view.addAction(action)
        view.addSeparator()
        for action in (self.act_fit, self.act_one, self.act_zoom_in, self.act_zoom_out, self.act_rotate,
                       self.act_flip_h, self.act_flip_v, self.act_invert, self.act_reset):
            view.addAction(action)
        view.addSeparator()
        self.presets_menu = view.addMenu("Window &Presets")
        view.addAction(self.act_overlays)
        view.addAction(self.act_sync)
        view.addAction(self.act_cine)
        view.addSeparator()
        for dock in (self.series_dock, self.refused_dock, self.tags_dock):
            view.addAction(dock.toggleViewAction())
        tools = bar.addMenu("&Tools")
        for action in self.tool_actions.values():
            tools.addAction(action)
        tools.addSeparator()
        tools.addAction(self.act_delete)
        assistant = bar.addMenu("&Assistant")
        assistant.addAction(self.act_run_assistant)
        assistant.addAction(self.act_assistant_overlays)
        assistant.addAction(self.act_heatmap)
        assistant.addSeparator()
        assistant.addAction(self.tool_actions["brush"])
        assistant.addAction(self.tool_actions["eraser"])
        assistant.addAction(self.assistant_dock.toggleViewAction())
        help_menu = bar.addMenu("&Help")
        help_menu.addAction(self.act_about)
        self._update_recent_menu()

    def _build_toolbar(self) -> None:
        bar = QToolBar("Tools", self)
        bar.setObjectName("toolbar-main")
        self.addToolBar(bar)
        bar.addAction(self.act_open)
        bar.addSeparator()
        for tool in TOOLBAR_TOOLS:
            bar.addAction(self.tool_actions[tool])
        bar = QToolBar("View", self)
        bar.setObjectName("toolbar-view")
        self.addToolBar(bar)
        self.preset_combo = QComboBox(self)
        self.preset_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.preset_combo.setToolTip("Window presets")
        self.preset_combo.activated.connect(self._preset_chosen)
        bar.addWidget(self.preset_combo)
        for action in (self.act_invert, self.act_rotate, self.act_flip_h, self.act_flip_v, self.act_fit, self.act_one):
            bar.addAction(action)
        bar.addSeparator()
        for action in self.layout_actions.values():
            bar.addAction(action)
        bar.addSeparator()
        self.slab_spin = QSpinBox(self)
        self.slab_spin.setRange(1, 200)
        self.slab_spin.setPrefix("slab ")
        self.slab_spin.setToolTip("Thick-slab thickness in slices (MIP)")
        self.slab_spin.valueChanged.connect(lambda value: self.active.set_slab(value, self.slab_mode.currentText().lower()))
        self.slab_mode = QComboBox(self)
        self.slab_mode.addItems(["MIP", "MinIP", "Mean"])
        self.slab_mode.currentTextChanged.connect(lambda mode: self.active.set_slab(self.slab_spin.value(), mode.lower()))
        bar.addWidget(self.slab_spin)
        bar.addWidget(self.slab_mode)
        bar.addSeparator()
        bar.addAction(self.act_cine)
        self.fps_spin = QSpinBox(self)
        self.fps_spin.setRange(1, 60)
        self.fps_spin.setValue(int(self.settings.value("cine/fps", 15)))
        self.fps_spin.setSuffix(" fps")
        self.fps_spin.valueChanged.connect(self._fps_changed)
        bar.addWidget(self.fps_spin)

    # --- settings ---------------------------------------------------------------------------------

    def _restore_settings(self) -> None:
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 860)
            screen = self.screen().availableGeometry() if self.screen() is not None else None
            if screen is not None and screen.isValid():  # first start: fit the screen, never exceed it
                self.resize(min(1600, screen.width()), min(1000, screen.height()))
                self.move(screen.topLeft())
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state)
        else:
            self.resizeDocks([self.series_dock], [300], Qt.Orientation.Horizontal)

    def save_settings(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("cine/fps", self.fps_spin.value())
        self.settings.sync()

    def recent_paths(self) -> list[str]:
        value = self.settings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _remember(self, paths: list[str]) -> None:
        recent = [p for p in self.recent_paths() if p not in paths]
        self.settings.setValue("recent", (list(paths) + recent)[:MAX_RECENT])
        self._update_recent_menu()

    def _update_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.recent_paths()
        for path in recent:
            self.recent_menu.addAction(path, lambda p=path: self.open_paths([p]))
        self.recent_menu.setEnabled(bool(recent))

    # --- opening -----------------------------------------------------------------------------------

    def open_files_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Open DICOM files, pictures, NIfTI or ZIP", "",
                                                "All files (*)")
        if files:
            self.open_paths(files)

    def open_folder_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of images")
        if folder:
            self.open_paths([folder])

    def open_demo(self) -> None:
        from medviewer.ai.demo_data import demo_study_path

        self.open_paths([], prepare=demo_study_path)

    def open_pacs(self) -> None:
        """The PACS window (one per main window, kept while it lives); what it retrieves opens here."""
        from medviewer.ui.pacs import PacsWindow

        if getattr(self, "pacs_window", None) is None:
            self.pacs_window = PacsWindow(self.settings, self.tasks, self)
            self.pacs_window.arrived.connect(lambda folder, first: self.open_paths([folder], show=first))
            self.pacs_window.current_files = self._active_series_files
        self.pacs_window.show()
        self.pacs_window.raise_()

    def _active_series_files(self) -> list[str]:
        """The DICOM files on disk behind the active viewport's series (members of archives are left out)."""
        volume = self.active.volume
        if volume is None:
            return []
        sources = volume.acquired_sources or volume.sources
        files = {inst.source.path for inst in sources
                 if getattr(inst, "kind", "") == "dicom" and inst.source.member is None}
        return sorted(files)

    def open_paths(self, paths: list[str], prepare=None, show: bool = True) -> None:
        """Scan ``paths`` in a worker, list what was found, then load the main series (with ``show`` False
        only list it: a series arriving while another is read does not take its viewport)."""
        paths = [str(p) for p in paths]
        if paths:
            self._remember(paths)

        def job(context: JobContext):
            targets = paths + ([str(prepare())] if prepare is not None else [])
            result = scan(targets, progress=context.progress, cancel=context.cancel)
            context.partial(("scan", result))
            series = main_series(result)
            if series is None:
                return ("empty", targets, result)
            if not show:
                return ("listed", targets, result)
            volume = self._load_job(series, context)
            return ("loaded", series.key, volume)

        self.statusBar().showMessage("Reading headers…")
        self.tasks.start(job, "open", on_partial=self._on_partial, on_progress=self._on_progress,
                         on_finished=self._on_finished, on_failed=self._on_failed, on_cancelled=self._on_cancelled)

    def _load_job(self, series: Series, context: JobContext) -> Volume:
        self.loading.setdefault(series.key, set())
        return load(series, progress=context.progress, cancel=context.cancel,
                    on_slice=lambda volume, k: context.partial(("slice", series.key, volume, k)))

    def open_series(self, key: str, view: SliceView | None = None) -> None:
        """Show series ``key`` in ``view`` (the active viewport by default), loading it if needed."""
        view = view or self.active
        if self.grid.layout_name == "mpr" and view is not self.grid.frames[0].view:
            view = self.grid.frames[0].view
        if key in self.volumes:
            self._show(view, key, self.volumes[key])
            return
        if key in self._partial:
            self._show(view, key, self._partial[key], loaded=self.loading.get(key))
            return
        self._pending_view[key] = view
        if key in self.loading:
            return
        series = self.series_tree.series.get(key)
        if series is None:
            return

        def job(context: JobContext):
            return ("loaded", key, self._load_job(series, context))

        self.tasks.start(job, f"load {key}", on_partial=self._on_partial, on_progress=self._on_progress,
                         on_finished=self._on_finished, on_failed=self._on_failed,
                         on_cancelled=lambda k=key: self._load_cancelled(k))

    def _show(self, view: SliceView, key: str, volume: Volume, loaded: set[int] | None = None) -> None:
        view.bookmarks = self.export.bookmarks.setdefault(key, set())
        view.set_volume(volume, key, loaded=loaded)
        self.grid.set_active(view)
        self.series_tree.select_series(key)
        if self.grid.layout_name == "mpr" and view is self.grid.frames[0].view:
            self.grid.set_layout("1x1")
            self.grid.set_layout("mpr")
        self._show_cached_prediction(view)
        self._update_presets()

    def _on_partial(self, message) -> None:
        kind = message[0]
        if kind == "scan":
            result: ScanResult = message[1]
            self.series_tree.add_scan(result)
            if result.refused:
                # Harmless skips (sidecar files) are listed but do not pop the panel up; damage, crashes, or
                # nothing opened at all do.
                if self.refused_list.add(result.refused) or not result.series:
                    self.refused_dock.show()
            self._start_thumbnails(result.series)
            found = len(result.series)
            self.statusBar().showMessage(f"Found {found} series" + (
                f"; {len(result.refused)} file(s) not opened (see 'Not opened')" if result.refused else ""), 8000)
            if not result.series:
                self._report(self._nothing_message(result))
        elif kind == "slice":
            _, key, volume, k = message
            loaded = self.loading.setdefault(key, set())
            loaded.add(k)
            if key not in self._partial:
                self._partial[key] = volume
                view = self._pending_view.pop(key, None) or self._first_free_view()
                self._show(view, key, volume, loaded=loaded)
            else:
                for view in self.grid.visible_views():
                    if view.volume is volume:
                        view.slice_arrived(k)

    def _first_free_view(self) -> SliceView:
        active = self.active
        return active

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def _on_finished(self, result) -> None:
        if result[0] == "loaded":
            _, key, volume = result
            self.volumes[key] = volume
            self._partial.pop(key, None)
            self.loading.pop(key, None)
            for view in self.grid.visible_views():
                if view.volume is volume:
                    view._loaded = None
                    if volume.resampled:
                        # Resampled once every slice was decoded (tilt, gaps): new shape and geometry.
                        view.set_volume(volume, key, axis=view.axis)
                    view.render()
            if volume.missing_slices:
                self._list_missing_slices(volume)
            if volume.warnings:
                self.statusBar().showMessage("; ".join(volume.warnings), 10000)
            else:
                self.statusBar().showMessage(f"Loaded {volume.description or key}: {volume.shape[0]} slices", 5000)
            self._update_tags()
        elif result[0] == "empty":
            self.statusBar().showMessage("Nothing could be opened", 8000)

    def _list_missing_slices(self, volume: Volume) -> None:
        """Slices the decoder failed on (a crash included) go to Not opened, which opens by itself."""
        from medviewer.core.sources import Refused

        sources = volume.acquired_sources or volume.sources
        entries = []
        for k in volume.missing_slices:
            instance = sources[k] if 0 <= k < len(sources) else None
            source = getattr(instance, "source", None)
            path = str(getattr(source, "name", "") or f"{volume.description or 'series'} slice {k + 1}")
            entries.append(Refused(path, f"slice {k + 1} could not be decoded and is shown blank"))
        self.refused_list.add(entries)
        self.refused_dock.show()

    def _nothing_message(self, result: ScanResult) -> str:
        lines = [f"{r.path}: {r.reason}" for r in result.refused[:8]]
        more = len(result.refused) - len(lines)
        return "Nothing could be opened.\n\n" + "\n".join(lines) + (f"\n… and {more} more" if more > 0 else "")

    def _on_failed(self, message: str) -> None:
        self._report(message)

    def _report(self, message: str) -> None:
        """A message the user sees without the application stopping (non-blocking box)."""
        self.last_error = message
        self.statusBar().showMessage(message.splitlines()[0], 10000)
        box = QMessageBox(QMessageBox.Icon.Warning, "MedViewer", message, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self._last_box = box

    def _on_cancelled(self) -> None:
        self.statusBar().showMessage("Cancelled", 5000)
        for key in list(self.loading):
            self._load_cancelled(key)

    def _load_cancelled(self, key: str) -> None:
        volume = self._partial.pop(key, None)
        self.loading.pop(key, None)
        self._pending_view.pop(key, None)
        for view in self.grid.visible_views():
            if volume is not None and view.volume is volume:
                view.clear()
        self.statusBar().showMessage("Loading cancelled", 5000)

    def cancel_tasks(self) -> None:
        self.tasks.cancel_all()

    def _update_busy(self) -> None:
        busy = bool(self.tasks.running)
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)

    def _start_thumbnails(self, series_list: list[Series]) -> None:
        todo = list(series_list)

        def job(context: JobContext):
            for series in todo:
                context.check()
                try:
                    context.partial((series.key, thumbnail(series)))
                except Exception:  # noqa: BLE001 - a thumbnail is never worth an error message
                    pass
            return None

        if todo:
            self.tasks.start(job, "thumbnails", on_partial=lambda item: self.series_tree.set_thumbnail(*item))

    # --- drops -------------------------------------------------------------------------------------

    def dragEnterEvent(self, event):  # noqa: N802 - Qt override
        if event.mimeData().hasUrls():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event):  # noqa: N802 - Qt override
        paths = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if paths:
            self.open_paths(paths)
            event.acceptProposedAction()

    # --- viewer actions --------------------------------------------------------------------------

    @property
    def active(self) -> SliceView:
        return self.grid.active

    def set_tool(self, tool: str) -> None:
        for view in self.grid.visible_views():
            view.set_tool(tool)
        action = self.tool_actions.get(tool)
        if action is not None and not action.isChecked():
            action.setChecked(True)

    def set_layout(self, name: str) -> None:
        self.grid.set_layout(name)
        action = self.layout_actions[name]
        if not action.isChecked():
            action.setChecked(True)
        if not self.tool_actions:
            return
        if name == "mpr":
            self.tool_actions["crosshair"].setChecked(True)
        elif self.tool_actions["crosshair"].isChecked():
            self.tool_actions["pan"].setChecked(True)

    def _set_overlays(self, visible: bool) -> None:
        for view in self.grid.visible_views():
            view.set_overlays_visible(visible)

    def _set_sync(self, enabled: bool) -> None:
        self.grid.sync_scrolling = enabled

    def _toggle_cine(self, playing: bool) -> None:
        self.active.set_cine(playing, self.fps_spin.value())

    def _fps_changed(self, fps: int) -> None:
        if self.active.cine_playing:
            self.active.set_cine(True, fps)

    def _delete_selected(self) -> None:
        annotation = self.active.selected_annotation
        if annotation is not None:
            self.active.remove_annotation(annotation)

    def _active_changed(self, view: SliceView) -> None:
        self._show_cached_prediction(view)
        self._update_measurements(view)
        self._update_presets()
        self._update_tags()
        self.act_cine.blockSignals(True)
        self.act_cine.setChecked(view.cine_playing)
        self.act_cine.blockSignals(False)

    def _slice_changed(self, view: SliceView, index: int) -> None:
        if view is self.active and view.axis == 0:
            self.assistant.set_current_slice(index)
        if view is self.active and self.tags_dock.isVisible():
            self._update_tags()

    def _cursor_moved(self, text: str) -> None:
        self.cursor_label.setText(text)

    def _update_presets(self) -> None:
        volume = self.active.volume
        presets = windowing.window_presets(volume) if volume is not None else {}
        self._presets = presets
        self.preset_combo.clear()
        for action in self.preset_actions:
            self.removeAction(action)
        self.preset_actions = []
        self.presets_menu.clear()
        for number, (name, window) in enumerate(presets.items(), start=1):
            self.preset_combo.addItem(f"{number}  {name} ({window.width:g}/{window.center:g})", name)
            action = QAction(f"{name}  (W {window.width:g} L {window.center:g})", self)
            if number <= 9:
                action.setShortcut(QKeySequence(str(number)))
            action.triggered.connect(lambda _=False, n=name: self.apply_preset(n))
            self.addAction(action)
            self.presets_menu.addAction(action)
            self.preset_actions.append(action)
        self.preset_combo.setEnabled(bool(presets))

    def _preset_chosen(self, index: int) -> None:
        name = self.preset_combo.itemData(index)
        if name:
            self.apply_preset(name)

    def apply_preset(self, name: str) -> None:
        window = getattr(self, "_presets", {}).get(name)
        if window is not None:
            self.active.set_window(window)

    def _update_tags(self) -> None:
        if not self.tags_dock.isVisible():
            return
        view = self.active
        header = None
        if view.volume is not None and view.axis == 0 and view.volume.sources:
            try:
                header = view.volume.header(view.index)
            except (OSError, ValueError) as exc:
                self.statusBar().showMessage(f"Tags unavailable: {exc}", 5000)
        self.tag_browser.show_dataset(header)

    # --- the assistant ------------------------------------------------------------------------

    def _connect_assistant(self) -> None:
        from medviewer.ai.package import find_packages

        panel = self.assistant
        try:
            panel.set_packages(find_packages())
        except Exception as exc:  # noqa: BLE001 - a broken model folder must not stop the viewer
            panel.set_packages([])
            self.statusBar().showMessage(f"Model packages unavailable: {exc}", 10000)
        panel.runRequested.connect(self.run_assistant)
        panel.cancelRequested.connect(self.cancel_assistant)
        panel.findingActivated.connect(self.go_to_finding)
        panel.sliceRequested.connect(lambda k: self.active.set_slice(k))
        panel.maskStyleChanged.connect(self._apply_mask_style)
        panel.heatmapToggled.connect(self._heatmap_toggled)
        panel.brushChanged.connect(self._brush_changed)
        panel.undoRequested.connect(lambda: self.active.undo_mask_edit())
        panel.updateFindingsRequested.connect(self.update_findings)
        for frame in self.grid.frames:
            frame.view.annotationsChanged.connect(self._update_measurements)
            frame.view.maskEdited.connect(lambda _view: self.statusBar().showMessage(
                "Mask edited: 'Update findings' re-measures them", 5000))

    def _prediction_key(self, view: SliceView, paths: list[str] | None = None) -> tuple:
        paths = paths if paths is not None else self.assistant.selected_paths()
        return (view.series_key, tuple(sorted(paths)))

    def run_assistant(self, paths: list[str], device: str = "auto") -> None:
        """Run the checked models on the active viewport's series, in a worker."""
        view = self.active
        volume = view.volume
        if volume is None:
            self._report("Open a series first: the assistant runs on the active viewport's series.")
            return
        if view.series_key in self.loading:
            self._report("The series is still loading: run the assistant when it has finished.")
            return
        if self._assistant_worker is not None:
            return
        key = self._prediction_key(view, paths)
        if key in self.predictions:
            self._attach_prediction(volume, self.predictions[key])
            return
        from medviewer.ai.device import background_priority, inference_threads
        from medviewer.ai.infer import predict

        # Every core, as on the command line; the worker (and torch's threads it starts) runs at a lower
        # priority, so the GUI thread gets a core as soon as it wakes.
        threads = inference_threads()

        def job(context: JobContext):
            background_priority()
            return key, predict(volume, paths, device=device, threads=threads,
                                progress=context.progress, cancel=context.cancel,
                                partial=lambda prediction, model_id, indices: context.partial(
                                    (key, prediction, model_id, indices)))

        def current(callback):
            # Signals of a run the user cancelled (its last batch still finishing) are ignored.
            return lambda *args: self._assistant_worker is worker and callback(*args)

        self.assistant.set_running(True)
        self.assistant.show_prediction(None)
        self.statusBar().showMessage("Running the assistant…")
        worker = self._assistant_worker = self.tasks.start(
            job, "assistant", on_partial=current(self._assistant_partial),
            on_progress=current(self.assistant.set_progress), on_finished=current(self._assistant_finished),
            on_failed=current(self._assistant_failed), on_cancelled=current(self._assistant_cancelled))

    def _assistant_partial(self, message) -> None:
        key, prediction, _model_id, indices = message
        if self._running_prediction.get(key) is not prediction:
            self._running_prediction[key] = prediction
            volume = self.active.volume
            self.assistant.show_prediction(prediction)
            self.assistant.device_label.setText(prediction.device)
            self._attach_prediction(volume, prediction, panel=False)
        for view in self.grid.visible_views():
            if view.mask is prediction.mask or view.heatmap is prediction.heatmap:
                if view.axis != 0 or view.index in set(int(i) for i in indices):
                    view.render()
        if not self._panel_refresh.isActive():
            self._panel_refresh.start()

    def _assistant_finished(self, result) -> None:
        key, prediction = result
        self._panel_refresh.stop()
        self._assistant_worker = None
        self._running_prediction.pop(key, None)
        self.predictions[key] = prediction
        self.assistant.set_running(False)
        self.assistant.show_prediction(prediction)
        for view in self.grid.visible_views():
            if view.mask is prediction.mask:
                view.render()
        summary = f"Assistant: {prediction.verdict}, {len(prediction.findings)} finding(s) " \
                  f"in {prediction.timings.get('total_s', 0):.1f} s on {prediction.device}"
        self.statusBar().showMessage(summary, 10000)
        if prediction.warnings:
            self._report("The assistant's input checks warn:\n\n" + "\n".join(prediction.warnings))

    def _assistant_failed(self, message: str) -> None:
        self._panel_refresh.stop()
        self._assistant_worker = None
        self._clear_running_overlays()
        self.assistant.set_running(False)
        self.assistant.show_prediction(None)
        self._report(message)

    def _assistant_cancelled(self) -> None:
        self._panel_refresh.stop()
        self._assistant_worker = None
        self._clear_running_overlays()
        self.assistant.set_running(False)
        self.assistant.show_prediction(None)
        self.statusBar().showMessage("Assistant cancelled", 5000)

    def _clear_running_overlays(self) -> None:
        """A cancelled or failed run leaves no half-drawn overlay behind."""
        for prediction in self._running_prediction.values():
            for view in self.grid.frames:
                if view.view.mask is prediction.mask:
                    view.view.set_mask(None)
                if view.view.heatmap is prediction.heatmap:
                    view.view.set_heatmap(None)
        self._running_prediction.clear()

    def cancel_assistant(self) -> None:
        """Stop the run now: the worker stops after the batch it is in, and its late signals are ignored."""
        if self._assistant_worker is not None:
            self._assistant_worker.cancel()
            self._assistant_cancelled()

    def _attach_prediction(self, volume, prediction, panel: bool = True) -> None:
        if panel:
            self.assistant.show_prediction(prediction)
        colors = self.assistant.mask_colors() or {
            value: (255, 0, 0) for value in getattr(prediction, "labels", {})}
        for view in self.grid.visible_views():
            if view.volume is volume:
                if prediction.mask is not None:
                    view.set_mask(prediction.mask, colors)
                view.set_heatmap(prediction.heatmap, visible=self.assistant.heatmap_box.isChecked())
                self._apply_mask_style()

    def _show_cached_prediction(self, view: SliceView) -> None:
        if view.volume is None:
            return
        for (series_key, _paths), prediction in self.predictions.items():
            if series_key == view.series_key:
                self._attach_prediction(view.volume, prediction)
                return
        self.review_state.restore(view)  # a review kept from an earlier session

    def _apply_mask_style(self) -> None:
        panel = self.assistant
        for view in self.grid.visible_views():
            if view.mask is not None:
                view.mask_colors = panel.mask_colors() or view.mask_colors
                view.set_mask_style(opacity=panel.opacity.value() / 100, hidden=panel.hidden_labels(),
                                    contour=panel.contour.isChecked())

    def _heatmap_toggled(self, visible: bool) -> None:
        prediction = self.assistant.prediction
        for view in self.grid.visible_views():
            if prediction is not None and view.volume is not None and view.series_key == self.active.series_key:
                view.set_heatmap(prediction.heatmap, visible=visible)
        self.act_heatmap.blockSignals(True)
        self.act_heatmap.setChecked(visible)
        self.act_heatmap.blockSignals(False)

    def _set_assistant_overlays(self, visible: bool) -> None:
        for view in self.grid.frames:
            view.view.set_assistant_overlays_visible(visible)

    def _brush_changed(self, tool: str, size: int) -> None:
        for view in self.grid.visible_views():
            view.brush_size = size
            nodule = next((v for v, spec in (self.assistant.prediction.labels.items()
                                             if self.assistant.prediction else [])
                           if spec.get("name", "").lower() not in ("lung", "background")), 2)
            view.brush_label = nodule
        self.set_tool(tool or "pan")

    def go_to_finding(self, finding) -> None:
        """Centre the active viewport on a finding, on its most central slice."""
        view = self.active
        if view.volume is None:
            return
        from PySide6.QtCore import QPointF

        k, j, i = finding.centroid_index
        if view.axis != 0:
            view.set_volume(view.volume, view.series_key, axis=0)
        view.set_slice(int(round(k)))
        centre = view.image_item.mapToScene(QPointF(i + 0.5, j + 0.5))
        rect = view.viewbox.viewRect()
        rect.moveCenter(view.viewbox.mapSceneToView(centre))
        view.viewbox.setRange(rect, padding=0)

    def update_findings(self) -> None:
        """Re-measure findings from the (edited) mask, keeping reviews of findings that remain."""
        from medviewer.ai.findings import find_findings
        from medviewer.ai.prediction import is_finding_label

        prediction = self.assistant.prediction
        view = self.active
        if prediction is None or prediction.mask is None or view.volume is None:
            return
        old = list(prediction.findings)
        new = []
        for value, spec in sorted(prediction.labels.items()):
            if value == 0 or not is_finding_label(spec.get("name", "")):
                continue
            new.extend(find_findings(prediction.mask, view.volume, label_value=value, label_name=spec["name"],
                                     first_id=len(new) + 1))
        for finding in new:
            match = min(old, key=lambda f: np.linalg.norm(np.subtract(f.centroid_index, finding.centroid_index)),
                        default=None)
            if match is not None and np.linalg.norm(np.subtract(match.centroid_index, finding.centroid_index)) < 5:
                finding.review, finding.note, finding.confidence = match.review, match.note, match.confidence
                finding.max_probability, finding.mean_probability = match.max_probability, match.mean_probability
        prediction.findings = new
        self.assistant.refresh()

    def _update_measurements(self, view: SliceView) -> None:
        if view is not self.active:
            return
        lines = []
        for annotation in view.annotations:
            text = view.annotation_text(annotation)
            lines.append(f"slice {annotation.slice_index + 1}: {annotation.kind} {text}".strip())
        self.assistant.set_measurements(lines)

    def about(self) -> None:
        QMessageBox.about(self, "About MedViewer",
                          f"<b>MedViewer {__version__}</b><p>A DICOM viewer with a built-in diagnosis assistant."
                          "<p>The assistant's models are demonstration models trained on synthetic phantoms: "
                          "<b>not for clinical use</b>.")

    def closeEvent(self, event):  # noqa: N802 - Qt override
        self.save_settings()
        for view in self.grid.frames:
            view.view.set_cine(False)
        self.tasks.shutdown()
        super().closeEvent(event)

