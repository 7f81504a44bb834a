"""The assistant panel: choose models, run them in the background, read and review the findings.

The panel never runs a model itself: it asks the main window to start a worker and receives
the Prediction as it fills. It shows the study verdict with its probability, a per-slice
probability plot (threshold line, current slice, click to jump), the findings table (click to
centre the viewer on one; accept, reject, note), the legend of the mask's labels with
toggles, opacity and fill/contour, the heatmap toggle, the input-quality warnings, and the
measurements made with the viewer's tools.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSlider,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from medviewer.ai.prediction import Finding, Prediction, label_rgb

REVIEW_COLORS = {"pending": QColor(200, 200, 200), "accepted": QColor(90, 200, 110), "rejected": QColor(220, 90, 90)}


def hex_to_rgb(value: str) -> tuple[int, int, int]:
    return label_rgb(value) or (255, 0, 0)


class AssistantPanel(QWidget):
    runRequested = Signal(list, str)  # model package paths, device preference
    cancelRequested = Signal()
    findingActivated = Signal(object)  # Finding
    sliceRequested = Signal(int)
    maskStyleChanged = Signal()
    heatmapToggled = Signal(bool)
    reviewChanged = Signal(object)  # Finding
    brushChanged = Signal(str, int)  # tool ("brush", "eraser", ""), size in pixels
    undoRequested = Signal()
    updateFindingsRequested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.packages = []
        self.refused_packages = []
        self.prediction: Prediction | None = None
        self._current_slice = 0
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)

        # Models and device.
        models_box = QGroupBox("Models")
        models_layout = QVBoxLayout(models_box)
        self.model_list = QListWidget()
        self.model_list.setMaximumHeight(90)
        self.model_list.currentItemChanged.connect(self._show_card)
        self.card = QLabel("")
        self.card.setWordWrap(True)
        self.card.setTextFormat(Qt.TextFormat.PlainText)
        self.card.setStyleSheet("color: #bbb; font-size: 10px;")
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cpu", "cuda", "mps"])
        self.device_label = QLabel("")
        row = QHBoxLayout()
        row.addWidget(QLabel("Device"))
        row.addWidget(self.device_combo)
        row.addWidget(self.device_label, 1)
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run on this series")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.run_button.clicked.connect(self._run)
        self.cancel_button.clicked.connect(self.cancelRequested)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        models_layout.addWidget(self.model_list)
        models_layout.addWidget(self.card)
        models_layout.addLayout(row)
        models_layout.addLayout(buttons)
        models_layout.addWidget(self.progress)
        layout.addWidget(models_box)

        self.verdict = QLabel("No results yet")
        self.verdict.setStyleSheet("font-size: 13px; font-weight: bold;")
        self.warnings = QLabel("")
        self.warnings.setWordWrap(True)
        self.warnings.setStyleSheet("color: #ffb347;")
        layout.addWidget(self.verdict)
        layout.addWidget(self.warnings)

        # Per-slice probability.
        self.plot = pg.PlotWidget(background=(25, 25, 28))
        self.plot.setMaximumHeight(130)
        self.plot.setLabel("left", "p")
        self.plot.setLabel("bottom", "slice")
        self.plot.setYRange(0, 1)
        self.plot.setXRange(0, 1)  # an empty plot shows 0..1, not pyqtgraph's default span around 0
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.curve = self.plot.plot([], [], pen=pg.mkPen((80, 180, 255), width=2))
        self.threshold_line = pg.InfiniteLine(0.5, angle=0, pen=pg.mkPen((255, 170, 60), style=Qt.PenStyle.DashLine))
        self.slice_line = pg.InfiniteLine(0, angle=90, pen=pg.mkPen((230, 230, 230), width=1))
        self.plot.addItem(self.threshold_line)
        self.plot.addItem(self.slice_line)
        self.plot.scene().sigMouseClicked.connect(self._plot_clicked)
        layout.addWidget(self.plot)

        # Findings.
        self.table = QTableWidget(0, 7)
        self.table.setHorizontalHeaderLabels(["Label", "Slices", "mL", "Diameter mm", "Probability", "Confidence",
                                              "Review"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.verticalHeader().setVisible(False)
        self.table.cellClicked.connect(self._row_clicked)
        self.table.setMinimumHeight(110)
        layout.addWidget(self.table)
        review = QHBoxLayout()
        self.accept_button = QPushButton("Accept")
        self.reject_button = QPushButton("Reject")
        self.note_edit = QLineEdit()
        self.note_edit.setPlaceholderText("Note on the selected finding")
        self.accept_button.clicked.connect(lambda: self.set_review("accepted"))
        self.reject_button.clicked.connect(lambda: self.set_review("rejected"))
        self.note_edit.editingFinished.connect(self._note_edited)
        review.addWidget(self.accept_button)
        review.addWidget(self.reject_button)
        review.addWidget(self.note_edit, 1)
        layout.addLayout(review)

        # Overlays.
        overlay_box = QGroupBox("Overlays")
        form = QFormLayout(overlay_box)
        self.legend = QWidget()
        self.legend_layout = QHBoxLayout(self.legend)
        self.legend_layout.setContentsMargins(0, 0, 0, 0)
        self.label_boxes: dict[int, QCheckBox] = {}
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(45)
        self.opacity.valueChanged.connect(lambda _: self.maskStyleChanged.emit())
        self.filled = QRadioButton("Filled")
        self.contour = QRadioButton("Contour")
        self.filled.setChecked(True)
        self.contour.toggled.connect(lambda _: self.maskStyleChanged.emit())
        style = QHBoxLayout()
        style.addWidget(self.filled)
        style.addWidget(self.contour)
        self.heatmap_box = QCheckBox("Grad-CAM heatmap")
        self.heatmap_box.toggled.connect(self.heatmapToggled)
        form.addRow("Labels", self.legend)
        form.addRow("Opacity", self.opacity)
        form.addRow("Mask", _wrap(style))
        form.addRow("", self.heatmap_box)
        layout.addWidget(overlay_box)

        # Mask correction.
        edit_box = QGroupBox("Correct the mask")
        edit = QHBoxLayout(edit_box)
        self.brush_button = QPushButton("Brush")
        self.eraser_button = QPushButton("Eraser")
        for button in (self.brush_button, self.eraser_button):
            button.setCheckable(True)
        self.brush_button.toggled.connect(lambda on: self._brush_toggled("brush", on))
        self.eraser_button.toggled.connect(lambda on: self._brush_toggled("eraser", on))
        self.brush_size = QSpinBox()
        self.brush_size.setRange(1, 60)
        self.brush_size.setValue(6)
        self.brush_size.setSuffix(" px")
        self.brush_size.valueChanged.connect(lambda _: self._emit_brush())
        self.undo_button = QPushButton("Undo")
        self.undo_button.clicked.connect(self.undoRequested)
        self.update_button = QPushButton("Update findings")
        self.update_button.clicked.connect(self.updateFindingsRequested)
        for widget in (self.brush_button, self.eraser_button, self.brush_size, self.undo_button, self.update_button):
            edit.addWidget(widget)
        layout.addWidget(edit_box)

        self.measurements = QListWidget()
        self.measurements.setMaximumHeight(90)
        layout.addWidget(QLabel("Measurements"))
        layout.addWidget(self.measurements)
        layout.addStretch(1)
        self.set_enabled_for_results(False)

    # --- models -----------------------------------------------------------------------------

    def set_packages(self, packages) -> None:
        self.packages = [p for p in packages if p.manifest is not None]
        self.model_list.clear()
        for info in self.packages:
            m = info.manifest
            item = QListWidgetItem(f"{m.name} {m.version}  [{info.source}]")
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if info.source == "builtin" else Qt.CheckState.Unchecked)
            item.setData(Qt.ItemDataRole.UserRole, str(info.path))
            self.model_list.addItem(item)
        # A broken package is listed, greyed out and never run, with the reason it was refused: the
        # others still work, and the user sees why the one they installed is missing.
        self.refused_packages = [p for p in packages if p.manifest is None]
        for info in self.refused_packages:
            item = QListWidgetItem(f"{Path(info.path).name}  [refused: {info.error or 'broken package'}]")
            item.setFlags(Qt.ItemFlag.ItemIsEnabled)
            item.setForeground(Qt.GlobalColor.gray)
            item.setToolTip(f"{info.path}\n{info.error or 'broken package'}")
            item.setData(Qt.ItemDataRole.UserRole, str(info.path))
            self.model_list.addItem(item)
        if self.packages:
            self.model_list.setCurrentRow(0)
        self.run_button.setEnabled(bool(self.packages))
        if not self.packages:
            self.card.setText("No model packages found (built-in, user folder).")

    def selected_paths(self) -> list[str]:
        paths = []
        for row in range(self.model_list.count()):
            item = self.model_list.item(row)
            if item.checkState() == Qt.CheckState.Checked:
                paths.append(item.data(Qt.ItemDataRole.UserRole))
        return paths

    def _show_card(self, current, _previous=None) -> None:
        from medviewer.ai.package import model_card

        if current is None:
            return
        path = current.data(Qt.ItemDataRole.UserRole)
        info = next((p for p in self.packages if str(p.path) == path), None)
        if info is not None:
            self.card.setText(model_card(info.manifest))
            return
        refused = next((p for p in self.refused_packages if str(p.path) == path), None)
        if refused is not None:
            self.card.setText(f"Not usable: {refused.error or 'broken package'}")

    def _run(self) -> None:
        paths = self.selected_paths()
        if paths:
            self.runRequested.emit(paths, self.device_combo.currentText())

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running and bool(self.packages))
        self.cancel_button.setEnabled(running)
        self.progress.setVisible(running)
        if running:
            self.progress.setRange(0, 0)

    def set_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    # --- results ------------------------------------------------------------------------------

    def set_enabled_for_results(self, enabled: bool) -> None:
        for widget in (self.accept_button, self.reject_button, self.note_edit, self.brush_button,
                       self.eraser_button, self.undo_button, self.update_button, self.heatmap_box):
            widget.setEnabled(enabled)

    def show_prediction(self, prediction: Prediction | None) -> None:
        self.prediction = prediction
        self._build_legend()
        self.refresh()

    def refresh(self) -> None:
        """Redraw verdict, plot and table from the prediction (cheap; called per batch)."""
        prediction = self.prediction
        if prediction is None:
            self.verdict.setText("No results yet")
            self.curve.setData([], [])
            self.plot.setXRange(0, 1, padding=0.02)
            self.table.setRowCount(0)
            self.warnings.setText("")
            self.set_enabled_for_results(False)
            return
        if prediction.slice_probabilities is not None and len(prediction.classes):
            done = prediction.done_slices if prediction.done_slices is not None else np.ones(
                len(prediction.sop_instance_uids), bool)
            x = np.nonzero(done)[0]
            self.curve.setData(x, prediction.slice_probabilities[x, 0])
            self.plot.setXRange(0, max(len(prediction.sop_instance_uids) - 1, 1), padding=0.02)
        threshold = next((m.get("threshold") for m in prediction.models if m.get("task") == "classification"), None)
        self.threshold_line.setValue(threshold or 0.5)
        self.threshold_line.setVisible(threshold is not None)
        if prediction.complete:
            p = prediction.study_probability
            text = f"Study: {prediction.verdict}" + (f" (highest slice p = {p:.2f})" if p is not None else "")
            accepted = sum(f.review == "accepted" for f in prediction.findings)
            rejected = sum(f.review == "rejected" for f in prediction.findings)
            text += f"; {len(prediction.findings)} finding(s)"
            if accepted or rejected:
                text += f", {accepted} accepted, {rejected} rejected"
            self.verdict.setText(text)
        else:
            done = int(prediction.done_slices.sum()) if prediction.done_slices is not None else 0
            self.verdict.setText(f"Running… {done}/{len(prediction.sop_instance_uids)} slices")
        self.warnings.setText("\n".join(f"⚠ {w}" for w in prediction.warnings))
        self._fill_table()
        self.set_enabled_for_results(prediction.complete)
        self.heatmap_box.setEnabled(prediction.heatmap is not None)

    def _fill_table(self) -> None:
        findings = self.prediction.findings if self.prediction else []
        self.table.setRowCount(len(findings))
        for row, f in enumerate(findings):
            values = [f.label, f"{f.slices[0] + 1}–{f.slices[1] + 1}", f"{f.volume_ml:.2f}", f"{f.diameter_mm:.1f}",
                      f"{f.max_probability:.2f}", "—" if f.confidence is None else f"{f.confidence:.2f}",
                      f.review + (" ✎" if f.note else "")]
            for column, value in enumerate(values):
                item = QTableWidgetItem(value)
                if column == 6:
                    item.setForeground(REVIEW_COLORS.get(f.review, REVIEW_COLORS["pending"]))
                item.setToolTip(f.note or "")
                self.table.setItem(row, column, item)

    def _build_legend(self) -> None:
        while self.legend_layout.count():
            item = self.legend_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.label_boxes = {}
        if self.prediction is None:
            return
        for value, spec in sorted(self.prediction.labels.items()):
            if value == 0:
                continue
            box = QCheckBox(spec.get("name", str(value)))
            box.setChecked(True)
            r, g, b = hex_to_rgb(spec.get("color", "#ff0000"))
            box.setStyleSheet(f"QCheckBox {{ color: rgb({r},{g},{b}); font-weight: bold; }}")
            box.toggled.connect(lambda _: self.maskStyleChanged.emit())
            self.legend_layout.addWidget(box)
            self.label_boxes[value] = box

    def mask_colors(self) -> dict[int, tuple[int, int, int]]:
        if self.prediction is None:
            return {}
        return {value: hex_to_rgb(spec.get("color", "#ff0000")) for value, spec in self.prediction.labels.items()}

    def hidden_labels(self) -> set[int]:
        return {value for value, box in self.label_boxes.items() if not box.isChecked()}

    def set_current_slice(self, index: int) -> None:
        self._current_slice = index
        self.slice_line.setValue(index)

    def _plot_clicked(self, event) -> None:
        if self.prediction is None:
            return
        point = self.plot.getPlotItem().vb.mapSceneToView(event.scenePos())
        index = int(round(point.x()))
        if 0 <= index < len(self.prediction.sop_instance_uids):
            self.sliceRequested.emit(index)

    # --- review ---------------------------------------------------------------------------------

    def selected_finding(self) -> Finding | None:
        row = self.table.currentRow()
        if self.prediction is None or not (0 <= row < len(self.prediction.findings)):
            return None
        return self.prediction.findings[row]

    def _row_clicked(self, row: int, _column: int) -> None:
        finding = self.prediction.findings[row]
        self.note_edit.setText(finding.note)
        self.findingActivated.emit(finding)

    def select_finding(self, finding_id: int) -> None:
        for row, finding in enumerate(self.prediction.findings if self.prediction else []):
            if finding.id == finding_id:
                self.table.selectRow(row)
                self._row_clicked(row, 0)
                return

    def set_review(self, state: str) -> None:
        finding = self.selected_finding()
        if finding is None:
            return
        finding.review = state
        row = self.table.currentRow()
        self.refresh()
        self.table.selectRow(row)
        self.reviewChanged.emit(finding)

    def _note_edited(self) -> None:
        finding = self.selected_finding()
        if finding is not None and finding.note != self.note_edit.text():
            finding.note = self.note_edit.text()
            row = self.table.currentRow()
            self.refresh()
            self.table.selectRow(row)
            self.reviewChanged.emit(finding)

    # --- mask editing --------------------------------------------------------------------------

    def _brush_toggled(self, tool: str, on: bool) -> None:
        other = self.eraser_button if tool == "brush" else self.brush_button
        if on and other.isChecked():
            other.blockSignals(True)
            other.setChecked(False)
            other.blockSignals(False)
        self._emit_brush()

    def _emit_brush(self) -> None:
        tool = "brush" if self.brush_button.isChecked() else "eraser" if self.eraser_button.isChecked() else ""
        self.brushChanged.emit(tool, self.brush_size.value())

    def set_measurements(self, lines: list[str]) -> None:
        self.measurements.clear()
        self.measurements.addItems(lines)


def _wrap(layout) -> QWidget:
    widget = QWidget()
    layout.setContentsMargins(0, 0, 0, 0)
    widget.setLayout(layout)
    return widget
