"""The PACS window: nodes and MedViewer's own AE (persisted in QSettings), C-ECHO "Test", C-FIND query,
C-GET / C-MOVE retrieve into the study cache with progress and Cancel, and sending the open series or
chosen files (exported SEG/SR/key images, anonymised copies).

Every network call runs in a worker (:mod:`medviewer.ui.workers`); pynetdicom's own threads report
only through the job's progress callback, which reaches this window as a signal. Nothing here blocks
the GUI thread on the network.
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from medviewer.core.errors import MedViewerError
from medviewer.net.nodes import NetSettings, Node, SettingsError
from medviewer.ui.workers import TaskManager

SETTINGS_KEY = "pacs/settings"
NODE_COLUMNS = ("Name", "AE title", "Host", "Port", "DICOMweb URL")
LEVEL_COLUMNS = {
    "STUDY": ("PatientName", "PatientID", "StudyDate", "StudyDescription", "ModalitiesInStudy", "AccessionNumber",
              "NumberOfStudyRelatedInstances", "StudyInstanceUID"),
    "SERIES": ("SeriesNumber", "Modality", "SeriesDescription", "NumberOfSeriesRelatedInstances", "SeriesInstanceUID",
               "StudyInstanceUID"),
    "PATIENT": ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "NumberOfPatientRelatedStudies"),
}


def load_qsettings(store: QSettings) -> NetSettings:
    text = store.value(SETTINGS_KEY)
    if not text:
        return NetSettings()
    try:
        return NetSettings.from_json(json.loads(str(text)), "saved PACS settings")
    except (ValueError, SettingsError):
        return NetSettings()


def save_qsettings(store: QSettings, settings: NetSettings) -> None:
    store.setValue(SETTINGS_KEY, json.dumps(settings.to_json()))
    store.sync()


def study_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("medviewer", appauthor=False)) / "studies"


class NodesDialog(QDialog):
    """MedViewer's AE title and port, the PACS nodes, and a C-ECHO test of the selected node."""

    def __init__(self, settings: NetSettings, tasks: TaskManager, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("PACS nodes")
        self.tasks = tasks
        self.ae_edit = QLineEdit(settings.ae_title)
        self.port_spin = QSpinBox()
        self.port_spin.setRange(1, 65535)
        self.port_spin.setValue(settings.port)
        self.timeout_spin = QSpinBox()
        self.timeout_spin.setRange(1, 600)
        self.timeout_spin.setValue(int(settings.timeout_s))
        form = QFormLayout()
        form.addRow("MedViewer's AE title", self.ae_edit)
        form.addRow("Listening port (C-MOVE)", self.port_spin)
        form.addRow("Timeout (s)", self.timeout_spin)
        self.table = QTableWidget(0, len(NODE_COLUMNS))
        self.table.setHorizontalHeaderLabels(NODE_COLUMNS)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        for node in settings.nodes:
            self._add_row(node)
        add = QPushButton("Add")
        add.clicked.connect(lambda: self._add_row(Node(name=f"pacs{self.table.rowCount() + 1}", ae_title="PACS",
                                                       host="127.0.0.1", port=104)))
        remove = QPushButton("Remove")
        remove.clicked.connect(lambda: self.table.removeRow(self.table.currentRow()))
        self.test_button = QPushButton("Test (C-ECHO)")
        self.test_button.clicked.connect(self.test_selected)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        for widget in (add, remove, self.test_button):
            row.addWidget(widget)
        row.addStretch(1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._save)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.table)
        layout.addLayout(row)
        layout.addWidget(self.status)
        layout.addWidget(buttons)
        self.result_settings: NetSettings | None = None
        self.resize(760, 420)

    def _add_row(self, node: Node) -> None:
        r = self.table.rowCount()
        self.table.insertRow(r)
        for c, value in enumerate((node.name, node.ae_title, node.host, str(node.port), node.url)):
            self.table.setItem(r, c, QTableWidgetItem(value))
        self.table.selectRow(r)

    def settings(self) -> NetSettings:
        """What the dialog shows, checked (SettingsError names the bad value)."""
        nodes = []
        for r in range(self.table.rowCount()):
            cells = [(self.table.item(r, c).text().strip() if self.table.item(r, c) else "")
                     for c in range(len(NODE_COLUMNS))]
            try:
                port = int(cells[3] or 104)
            except ValueError:
                raise SettingsError(f"PACS node {cells[0]}", f"port {cells[3]!r} is not a number") from None
            nodes.append(Node(name=cells[0], ae_title=cells[1], host=cells[2], port=port, url=cells[4]).check())
        return NetSettings.from_json(NetSettings(ae_title=self.ae_edit.text().strip(), port=self.port_spin.value(),
                                                 timeout_s=float(self.timeout_spin.value()), nodes=nodes).to_json())

    def _save(self) -> None:
        try:
            self.result_settings = self.settings()
        except MedViewerError as exc:
            self.status.setText(str(exc))
            return
        self.accept()

    def test_selected(self) -> None:
        from medviewer.net.service import echo

        try:
            settings = self.settings()
            node = settings.nodes[self.table.currentRow()]
        except MedViewerError as exc:
            self.status.setText(str(exc))
            return
        except IndexError:
            self.status.setText("Select a node to test.")
            return
        self.test_button.setEnabled(False)
        self.status.setText(f"Testing {node}…")

        def done(seconds):
            self.test_button.setEnabled(True)
            self.status.setText(f"{node}: C-ECHO answered in {seconds * 1000:.0f} ms")

        def failed(message):
            self.test_button.setEnabled(True)
            self.status.setText(message)

        self.tasks.start(lambda context: echo(node, settings), "echo", on_finished=done, on_failed=failed,
                         on_cancelled=lambda: failed("Test cancelled"))


class PacsWindow(QDialog):
    """Query a node and retrieve studies or series.

    A study comes series by series, the largest first: ``arrived(folder, first)`` as each series is complete
    (the viewer opens the first and lists the others while the rest of the study arrives); ``retrieved(folder)``
    when the whole retrieve is done."""

    arrived = Signal(str, bool)
    retrieved = Signal(str)

    def __init__(self, store: QSettings, tasks: TaskManager, parent: QWidget | None = None,
                 cache_dir: Path | None = None):
        super().__init__(parent)
        self.setWindowTitle("PACS")
        self.store = store
        self.tasks = tasks
        self.cache_dir = cache_dir or study_cache_dir()
        self.net = load_qsettings(store)
        self.worker = None
        self.node_combo = QComboBox()
        nodes_button = QPushButton("Nodes…")
        nodes_button.clicked.connect(self.edit_nodes)
        self.own_label = QLabel()
        top = QHBoxLayout()
        top.addWidget(QLabel("Node"))
        top.addWidget(self.node_combo, 1)
        top.addWidget(nodes_button)
        top.addWidget(self.own_label)
        self.level_combo = QComboBox()
        self.level_combo.addItems(["STUDY", "SERIES", "PATIENT"])
        self.filters = {name: QLineEdit() for name in ("patient_name", "patient_id", "date", "modality", "accession",
                                                        "study_uid")}
        self.filters["patient_name"].setPlaceholderText("DOE^J*")
        self.filters["date"].setPlaceholderText("YYYYMMDD or YYYYMMDD-YYYYMMDD")
        form = QFormLayout()
        form.addRow("Level", self.level_combo)
        for name, label in (("patient_name", "Patient name"), ("patient_id", "Patient ID"), ("date", "Study date"),
                            ("modality", "Modality"), ("accession", "Accession"), ("study_uid", "Study UID")):
            form.addRow(label, self.filters[name])
        self.search_button = QPushButton("Search")
        self.search_button.setDefault(True)
        self.search_button.clicked.connect(self.search)
        self.table = QTableWidget(0, 0)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.method_combo = QComboBox()
        self.method_combo.addItems(["C-GET", "C-MOVE"])
        self.retrieve_button = QPushButton("Retrieve and open")
        self.retrieve_button.clicked.connect(self.retrieve)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m instances")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.send_open_button = QPushButton("Send open series")
        self.send_open_button.setToolTip("C-STORE (or STOW-RS) the DICOM files of the series in the active viewport")
        self.send_open_button.clicked.connect(lambda: self.send_paths(self.current_files()))
        self.send_files_button = QPushButton("Send files…")
        self.send_files_button.setToolTip("Send DICOM files: exported SEG, SR, key images, an anonymised copy")
        self.send_files_button.clicked.connect(self._send_files_dialog)
        bottom = QHBoxLayout()
        for widget in (self.method_combo, self.retrieve_button, self.cancel_button, self.progress,
                       self.send_open_button, self.send_files_button):
            bottom.addWidget(widget)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addLayout(form)
        layout.addWidget(self.search_button)
        layout.addWidget(self.table, 1)
        layout.addLayout(bottom)
        layout.addWidget(self.status)
        self.matches: list[dict] = []
        self._refresh_nodes()
        self.resize(980, 680)

    # --- nodes ---------------------------------------------------------------------------------

    def _refresh_nodes(self) -> None:
        self.node_combo.clear()
        for node in self.net.nodes:
            self.node_combo.addItem(str(node), node.name)
        self.own_label.setText(f"this viewer: {self.net.ae_title} on port {self.net.port}")
        self.own_label.setToolTip("Register this AE title, this computer's address and port in the PACS for C-MOVE")
        has = bool(self.net.nodes)
        for button in (self.search_button, self.retrieve_button, self.send_open_button, self.send_files_button):
            button.setEnabled(has)
        if not has:
            self.status.setText("No PACS node configured: add one with Nodes….")

    def edit_nodes(self) -> None:
        dialog = NodesDialog(self.net, self.tasks, self)
        if dialog.exec() and dialog.result_settings is not None:
            self.set_settings(dialog.result_settings)

    def set_settings(self, settings: NetSettings) -> None:
        self.net = settings
        save_qsettings(self.store, settings)
        self._refresh_nodes()

    def node(self) -> Node | None:
        name = self.node_combo.currentData()
        return next((n for n in self.net.nodes if n.name == name), None)

    # --- query ---------------------------------------------------------------------------------

    def search(self) -> None:
        from medviewer.net.service import find

        node = self.node()
        if node is None or self.worker is not None:
            return
        level = self.level_combo.currentText()
        filters = {name: edit.text().strip() for name, edit in self.filters.items()}
        settings = self.net
        self._busy(True, f"Searching {node}…")
        self.worker = self.tasks.start(lambda context: find(node, settings, level, cancel=context.cancel, **filters),
                                       "pacs-find", on_finished=lambda m: self._found(level, m),
                                       on_failed=self._failed, on_cancelled=lambda: self._failed("Search cancelled"))

    def _found(self, level: str, matches: list[dict]) -> None:
        self.worker = None
        self._busy(False, f"{len(matches)} match(es)")
        self.matches = matches
        columns = LEVEL_COLUMNS[level]
        self.table.clear()
        self.table.setColumnCount(len(columns))
        self.table.setHorizontalHeaderLabels(columns)
        self.table.setRowCount(len(matches))
        for r, match in enumerate(matches):
            for c, key in enumerate(columns):
                self.table.setItem(r, c, QTableWidgetItem(match.get(key, "")))
        self.table.resizeColumnsToContents()
        if matches:
            self.table.selectRow(0)

    # --- retrieve ------------------------------------------------------------------------------

    def retrieve(self) -> None:
        from medviewer.net.service import retrieve

        node = self.node()
        row = self.table.currentRow()
        if node is None or self.worker is not None:
            return
        if not 0 <= row < len(self.matches) or not self.matches[row].get("StudyInstanceUID"):
            self.status.setText("Search at study or series level and select a row to retrieve.")
            return
        match = self.matches[row]
        study, series = match["StudyInstanceUID"], match.get("SeriesInstanceUID") or None
        method = self.method_combo.currentText()
        settings, cache = self.net, self.cache_dir
        folder = cache / study if series is None else cache / study / series
        self._arrived = 0

        def job(context):
            result = retrieve(node, settings, study, cache, method=method, series_uid=series,
                              on_series=lambda where, files: context.partial((where, len(files))),
                              progress=context.progress, cancel=context.cancel)
            return result, folder

        self.progress.setRange(0, 0)
        self._busy(True, f"Retrieving from {node} with {method}…")
        self.worker = self.tasks.start(job, "pacs-retrieve", on_progress=self._progress, on_finished=self._retrieved,
                                       on_partial=self._series_arrived, on_failed=self._failed,
                                       on_cancelled=lambda: self._failed("Retrieve cancelled: the series that "
                                                                         "arrived whole are open; the rest of what "
                                                                         "arrived is in the cache"))

    def _series_arrived(self, message) -> None:
        where, count = message
        self._arrived += 1
        self.status.setText(f"Series {self._arrived} arrived ({count} instance(s)); "
                            + ("opening it while the rest arrive…" if self._arrived == 1 else "listed in Series…"))
        self.arrived.emit(where, self._arrived == 1)

    def _progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def _retrieved(self, answer) -> None:
        result, folder = answer
        self.worker = None
        text = f"{result.completed} instance(s) retrieved"
        if self._arrived > 1:
            text += f" in {self._arrived} series"
        if result.failed or result.warning:
            text += f", {result.failed} failed, {result.warning} with warnings"
        if result.not_stored:
            text += f"; not stored: {result.not_stored[0]}"
        self._busy(False, text)
        if result.files:
            self.retrieved.emit(str(folder))

    # --- send ---------------------------------------------------------------------------------

    def current_files(self) -> list[str]:
        """The files of the series to send; the main window replaces this with its active series'."""
        return []

    def _send_files_dialog(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        paths, _ = QFileDialog.getOpenFileNames(self, "Send DICOM files", "", "DICOM files (*.dcm);;All files (*)")
        if paths:
            self.send_paths(paths)

    def send_paths(self, paths: list[str]) -> None:
        from medviewer.net.service import send

        node = self.node()
        if node is None or self.worker is not None:
            return
        if not paths:
            self.status.setText("Nothing to send: open a DICOM series first, or choose files.")
            return
        settings = self.net
        self.progress.setRange(0, len(paths))
        self._busy(True, f"Sending {len(paths)} file(s) to {node}…")

        def done(result) -> None:
            self.worker = None
            text = f"{len(result.sent)} of {len(paths)} file(s) sent to {node}"
            if result.failed:
                text += f"; not sent: {result.failed[0]}" + (f" (and {len(result.failed) - 1} more)"
                                                             if len(result.failed) > 1 else "")
            self._busy(False, text)

        self.worker = self.tasks.start(lambda context: send(node, settings, paths, progress=context.progress,
                                                            cancel=context.cancel),
                                       "pacs-send", on_progress=self._progress, on_finished=done,
                                       on_failed=self._failed, on_cancelled=lambda: self._failed("Send cancelled"))

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def _failed(self, message: str) -> None:
        self.worker = None
        self._busy(False, message)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)

    def _busy(self, busy: bool, text: str) -> None:
        self.status.setText(text)
        for button in (self.search_button, self.retrieve_button, self.send_open_button, self.send_files_button):
            button.setEnabled(not busy and bool(self.net.nodes))
        self.cancel_button.setEnabled(busy)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.cancel()
        super().closeEvent(event)
