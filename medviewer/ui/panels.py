"""Dock panels: the series browser, the list of files that were not opened, the tag browser."""

from __future__ import annotations

import os

import numpy as np
from pydicom.dataset import Dataset
from PySide6.QtCore import QMimeData, QSize, Qt, Signal
from PySide6.QtGui import QDrag, QIcon, QImage, QPixmap
from PySide6.QtWidgets import (
    QLineEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from medviewer.core.header import display_date
from medviewer.core.series import ScanResult, Series
from medviewer.core.sources import Refused

SERIES_MIME = "application/x-medviewer-series"
KEY_ROLE = Qt.ItemDataRole.UserRole + 1


def thumbnail_icon(pixels: np.ndarray) -> QIcon:
    """An icon from a small uint8 (rows, cols) or (rows, cols, 3) array."""
    pixels = np.ascontiguousarray(pixels)
    rows, cols = pixels.shape[:2]
    if pixels.ndim == 3:
        image = QImage(pixels.data, cols, rows, cols * 3, QImage.Format.Format_RGB888)
    else:
        image = QImage(pixels.data, cols, rows, cols, QImage.Format.Format_Grayscale8)
    return QIcon(QPixmap.fromImage(image.copy()))


class SeriesTree(QTreeWidget):
    """Patient → study → series, with a thumbnail, modality, description and count.

    Double-click opens a series in the active viewport; dragging one onto a viewport opens it
    there.
    """

    openRequested = Signal(str)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setHeaderLabels(["Series", "Modality", "Images"])
        self.setIconSize(QSize(48, 48))
        self.setColumnWidth(0, 220)
        self.setDragEnabled(True)
        self.setRootIsDecorated(True)
        self.itemDoubleClicked.connect(self._double_clicked)
        self._series_items: dict[str, QTreeWidgetItem] = {}
        self.series: dict[str, Series] = {}

    def add_scan(self, result: ScanResult) -> None:
        for (patient_id, patient_name), studies in result.patients().items():
            patient = self._child(self.invisibleRootItem(), f"patient:{patient_id}:{patient_name}",
                                  f"{patient_name.replace('^', ' ') or '(no name)'}" + (f"  [{patient_id}]" if patient_id else ""))
            for study in studies:
                label = "  ".join(filter(None, [display_date(study.date), study.description])) or "(study)"
                study_item = self._child(patient, f"study:{study.uid}", label)
                for series in study.series:
                    if series.key in self._series_items:
                        continue
                    self.series[series.key] = series
                    number = f"{series.number}: " if series.number is not None else ""
                    item = QTreeWidgetItem([f"{number}{series.description or '(no description)'}", series.modality,
                                            str(len(series.frames))])
                    item.setData(0, KEY_ROLE, series.key)
                    item.setToolTip(0, "\n".join([series.key] + series.warnings))
                    study_item.addChild(item)
                    self._series_items[series.key] = item
                study_item.setExpanded(True)
            patient.setExpanded(True)

    def _child(self, parent: QTreeWidgetItem, key: str, label: str) -> QTreeWidgetItem:
        for i in range(parent.childCount()):
            child = parent.child(i)
            if child.data(0, KEY_ROLE) == key:
                return child
        item = QTreeWidgetItem([label])
        item.setData(0, KEY_ROLE, key)
        parent.addChild(item)
        return item

    def set_thumbnail(self, key: str, pixels: np.ndarray) -> None:
        item = self._series_items.get(key)
        if item is not None:
            item.setIcon(0, thumbnail_icon(pixels))

    def select_series(self, key: str) -> None:
        item = self._series_items.get(key)
        if item is not None:
            self.setCurrentItem(item)

    def _double_clicked(self, item: QTreeWidgetItem, column: int) -> None:
        key = item.data(0, KEY_ROLE)
        if key in self.series:
            self.openRequested.emit(key)

    def startDrag(self, actions):  # noqa: N802 - Qt override
        item = self.currentItem()
        key = item.data(0, KEY_ROLE) if item is not None else None
        if key not in self.series:
            return
        mime = QMimeData()
        mime.setData(SERIES_MIME, key.encode())
        drag = QDrag(self)
        drag.setMimeData(mime)
        drag.exec(Qt.DropAction.CopyAction)


# Skips a user expects when opening a folder: sidecar files by their extension, a DICOMDIR index beside its
# files, a stray file that does not claim to be DICOM. Anything else (damage, a crash, unreadable, too large)
# is worth showing the panel for.
HARMLESS_PREFIXES = ("not an image (", "DICOMDIR index")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
PATH_ROLE = Qt.ItemDataRole.UserRole + 2


def split_refused_path(path: str) -> tuple[str, str]:
    """(file name, where it is) of a refused path; a ZIP member ``archive.zip!/dir/name`` is in the archive."""
    archive, sep, member = path.rpartition("!/")
    if sep:
        folder, _, name = member.rpartition("/")
        return name or member, archive + (f" \u203a {folder}" if folder else "")
    head, tail = os.path.split(path.rstrip("/\\") or path)
    return tail or path, head


def is_important(entry: Refused) -> bool:
    """Whether a refused file should open the Not opened panel by itself (see HARMLESS_PREFIXES)."""
    reason = entry.reason
    if reason.startswith(HARMLESS_PREFIXES):
        return False
    if reason == "not a DICOM file":
        return split_refused_path(entry.path)[0].lower().endswith(DICOM_SUFFIXES)
    return True


class RefusedList(QTreeWidget):
    """Every file that was not opened, with the reason, never silently dropped: the file name first,
    then the reason; the full path on hover."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setHeaderLabels(["File", "Reason"])
        self.setRootIsDecorated(False)
        self.setColumnWidth(0, 260)
        self.setAlternatingRowColors(True)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)

    def add(self, refused: list[Refused]) -> bool:
        """List ``refused``; True if one of them is important (see :func:`is_important`)."""
        important = False
        for entry in refused:
            name, folder = split_refused_path(entry.path)
            item = QTreeWidgetItem([name, entry.reason])
            tip = f"{entry.path}\n{entry.reason}" if not folder else f"{name}\nin {folder}\n{entry.reason}"
            item.setToolTip(0, tip)
            item.setToolTip(1, tip)
            item.setData(0, PATH_ROLE, entry.path)
            self.addTopLevelItem(item)
            important |= is_important(entry)
        return important

    def entries(self) -> list[tuple[str, str, str]]:
        """(shown name, reason, full path) of every row."""
        out = []
        for i in range(self.topLevelItemCount()):
            item = self.topLevelItem(i)
            out.append((item.text(0), item.text(1), item.data(0, PATH_ROLE)))
        return out


class TagBrowser(QWidget):
    """All attributes of the current slice's header, sequences included, searchable."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.search = QLineEdit(self)
        self.search.setPlaceholderText("Search keyword, tag (0010,0010) or value")
        self.search.setClearButtonEnabled(True)
        self.tree = QTreeWidget(self)
        self.tree.setHeaderLabels(["Tag", "Keyword", "VR", "Value"])
        self.tree.setColumnWidth(0, 100)
        self.tree.setColumnWidth(1, 200)
        self.tree.setColumnWidth(2, 36)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.search)
        layout.addWidget(self.tree)
        self.search.textChanged.connect(self.apply_filter)
        self._dataset: Dataset | None = None

    def show_dataset(self, dataset: Dataset | None) -> None:
        if dataset is self._dataset:
            return
        self._dataset = dataset
        self.tree.clear()
        if dataset is None:
            return
        meta = getattr(dataset, "file_meta", None)
        if meta is not None:
            self._add(self.tree.invisibleRootItem(), meta)
        self._add(self.tree.invisibleRootItem(), dataset)
        self.apply_filter(self.search.text())

    def _add(self, parent: QTreeWidgetItem, dataset: Dataset) -> None:
        for element in dataset:
            tag = f"({element.tag.group:04X},{element.tag.element:04X})"
            if element.VR == "SQ":
                item = QTreeWidgetItem([tag, element.keyword or element.name, "SQ", f"{len(element.value)} item(s)"])
                parent.addChild(item)
                for number, child in enumerate(element.value, start=1):
                    child_item = QTreeWidgetItem(["", f"Item {number}", "", ""])
                    item.addChild(child_item)
                    self._add(child_item, child)
            else:
                value = element.repval if element.tag not in (0x7FE00010,) else "(pixel data)"
                item = QTreeWidgetItem([tag, element.keyword or element.name, str(element.VR), str(value)[:300]])
                parent.addChild(item)

    def apply_filter(self, text: str) -> None:
        needle = text.strip().lower()

        def visit(item: QTreeWidgetItem) -> bool:
            matched_child = False
            for i in range(item.childCount()):
                matched_child |= visit(item.child(i))
            own = not needle or any(needle in item.text(c).lower() for c in range(4)) or (
                needle.replace(" ", "") in item.text(0).lower().replace(" ", ""))
            visible = own or matched_child
            item.setHidden(not visible)
            if needle and matched_child:
                item.setExpanded(True)
            return visible

        root = self.tree.invisibleRootItem()
        for i in range(root.childCount()):
            visit(root.child(i))

    def visible_keywords(self) -> list[str]:
        out = []

        def visit(item: QTreeWidgetItem) -> None:
            for i in range(item.childCount()):
                child = item.child(i)
                if not child.isHidden():
                    out.append(child.text(1))
                    visit(child)

        visit(self.tree.invisibleRootItem())
        return out
