"""File → Export: the view as PNG or on the clipboard, the PDF report, the DICOM objects, an anonymised copy;
and slice bookmarks, which the report and the key images include.

The dialogs run on the GUI thread; everything that renders a report, encodes an image or writes a file runs in a
worker through :mod:`medviewer.export`, which writes each export all or nothing. An existing file or folder is
replaced only after the user said so (the save dialog's own question, or ours for folders).

Every dialog starts in the folder of the last export (remembered in the settings, ``export/last_folder``), else
in the folder of the series' files; when an export has been written the status bar says "Saved … to PATH".
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QObject
from PySide6.QtGui import QAction, QGuiApplication, QImage
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox


def _safe_name(text: str, fallback: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text or "").strip("-.")
    return name[:60] or fallback


def png_bytes(image: QImage) -> bytes:
    """``image`` encoded as PNG (QImage is safe to use on a worker thread)."""
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, "PNG"):
        raise OSError(5, "the image could not be encoded as PNG")
    buffer.close()
    return bytes(data)


class ExportMenu(QObject):
    """The export actions of a :class:`~medviewer.ui.main_window.MainWindow`."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.bookmarks: dict[str, set[int]] = {}  # series key -> bookmarked slice indices (acquired order)
        self.last_written: list[Path] = []
        self.last_message = ""
        a = window._action
        self.act_png = a("Save View as &PNG…", self.save_png, "Ctrl+Shift+S")
        self.act_copy = a("&Copy View to Clipboard", self.copy_view, "Ctrl+Shift+C")
        self.act_report = a("&Report (PDF)…", lambda: self.save_report(anonymize=False), "Ctrl+E")
        self.act_report_anonymous = a("&Anonymised Report (PDF)…", lambda: self.save_report(anonymize=True))
        self.act_dicom = a("&DICOM Segmentation, Report and Key Images…", self.save_dicom)
        self.act_anonymize = a("Anonymised &Copy of the Series…", self.save_anonymized)
        self.act_bookmark = a("&Bookmark Slice", self.toggle_bookmark, "Ctrl+B",
                              tip="Bookmarked slices go into the report and the key images")

    def menu(self, parent) -> QMenu:
        menu = QMenu("&Export", parent)
        for action in (self.act_png, self.act_copy, None, self.act_report, self.act_report_anonymous, None,
                       self.act_dicom, self.act_anonymize):
            if action is None:
                menu.addSeparator()
            else:
                menu.addAction(action)
        return menu

    # --- what is shown ------------------------------------------------------------------------------
    def _view(self):
        """The active view with its series, or None after telling the user there is none."""
        view = self.window.active
        if view.volume is None:
            self.window._report("Open a series first: export works on the active viewport's series.")
            return None
        return view

    def _prediction(self, view):
        """The assistant's finished prediction for the view's series, if any."""
        for (series_key, _paths), prediction in self.window.predictions.items():
            if series_key == view.series_key and getattr(prediction, "complete", False):
                return prediction
        return None

    def _bookmarks(self, view) -> list[int]:
        return sorted(self.bookmarks.get(view.series_key, ()))

    def toggle_bookmark(self) -> None:
        view = self._view()
        if view is None:
            return
        if view.axis != 0:
            self.window.statusBar().showMessage("Bookmarks mark acquired slices: switch to the acquired plane", 5000)
            return
        marks = self.bookmarks.setdefault(view.series_key, set())
        if view.index in marks:
            marks.discard(view.index)
            text = f"Slice {view.index + 1} is no longer bookmarked"
        else:
            marks.add(view.index)
            text = f"Slice {view.index + 1} bookmarked ({len(marks)} in this series)"
        view.bookmarks = marks
        view._update_overlay_text()
        self.window.statusBar().showMessage(text, 5000)

    # --- the jobs -------------------------------------------------------------------------------------
    # --- where the dialogs start -----------------------------------------------------------------------
    SETTINGS_KEY = "export/last_folder"

    def start_folder(self, view) -> str:
        """The last export's folder if it still exists, else the folder of the series' files, else home."""
        last = self.window.settings.value(self.SETTINGS_KEY, "")
        if last and os.path.isdir(str(last)):
            return str(last)
        for item in view.volume.sources if view.volume is not None else ():
            path = getattr(getattr(item, "source", None), "path", None)
            if path and os.path.isdir(os.path.dirname(os.path.abspath(path))):
                return os.path.dirname(os.path.abspath(path))
        return str(Path.home())

    def _remember_folder(self, folder: str | Path) -> None:
        self.window.settings.setValue(self.SETTINGS_KEY, str(Path(folder).resolve()))

    # --- the jobs -------------------------------------------------------------------------------------
    def _start(self, job, what: str, target: str | Path) -> None:
        """Run ``job`` in a worker; when it has written, the status bar says "Saved ``what`` to ``target``"."""
        window = self.window
        window.statusBar().showMessage(f"Writing {what}…")

        def finished(paths) -> None:
            self.last_written = [Path(p) for p in paths]
            self.last_message = f"Saved {what} to {target}"
            window.statusBar().showMessage(self.last_message, 15000)

        window.tasks.start(job, "export", on_finished=finished,
                           on_failed=lambda message: window._report(f"Export failed: {message}"),
                           on_cancelled=lambda: window.statusBar().showMessage("Export cancelled", 5000))

    def _ask_save_path(self, title: str, suggested: str, kind: str, suffix: str) -> str | None:
        """A file name from the save dialog, ending in ``suffix``; None if the user cancelled. The dialog asks
        before replacing the name it returns; a name we complete with the suffix is asked about here."""
        start = os.path.join(self.start_folder(self.window.active), suggested)
        path, _ = QFileDialog.getSaveFileName(self.window, title, start, f"{kind} (*{suffix})")
        if not path:
            return None
        self._remember_folder(Path(path).parent)
        if not path.lower().endswith(suffix):
            path += suffix
            if not self._confirm_replace([Path(path)]):
                return None
        return path

    def save_png(self, path: str | None = None) -> None:
        view = self._view()
        if view is None:
            return
        if path is None:
            path = self._ask_save_path("Save View as PNG", f"{_safe_name(view.volume.description, 'view')}-"
                                       f"{view.index + 1}.png", "PNG image", ".png")
            if path is None:
                return
        image = view.grab().toImage()  # painting happens here, on the GUI thread; encoding and writing do not

        def job(context):
            from medviewer.core.safe import write_bytes

            return [write_bytes(path, png_bytes(image), force=True)]  # the dialog asked before replacing

        self._start(job, "the view", path)

    def copy_view(self) -> None:
        view = self._view()
        if view is None:
            return
        QGuiApplication.clipboard().setImage(view.grab().toImage())
        self.window.statusBar().showMessage("View copied to the clipboard", 5000)

    def save_report(self, anonymize: bool = False, path: str | None = None) -> None:
        view = self._view()
        if view is None:
            return
        if path is None:
            suggested = f"{_safe_name(view.volume.description, 'report')}{'-anonymised' if anonymize else ''}.pdf"
            path = self._ask_save_path("Save Report", suggested, "PDF document", ".pdf")
            if path is None:
                return
        volume, prediction = view.volume, self._prediction(view)
        bookmarks = self._bookmarks(view)
        annotations = [a for a in view.annotations if a.axis == 0]
        window = view.window_level

        def job(context):
            from medviewer.export.report import write_report

            return [write_report(path, volume, prediction, bookmarks=bookmarks, annotations=annotations,
                                 anonymize=anonymize, window=(window.center, window.width) if window else None,
                                 force=True)]

        self._start(job, "the report", path)

    def _confirm_replace(self, targets: list[Path]) -> bool:
        existing = [t for t in targets if t.exists()]
        if not existing:
            return True
        names = "\n".join(str(t) for t in existing[:5])
        answer = QMessageBox.question(self.window, "Replace?", f"These already exist and would be replaced:\n\n{names}",
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def save_dicom(self, folder: str | None = None, force: bool | None = None) -> None:
        view = self._view()
        if view is None:
            return
        prediction = self._prediction(view)
        if prediction is None:
            self.window._report("Run the assistant on this series first: the DICOM objects hold its results.")
            return
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self.window, "Folder for the DICOM objects",
                                                      self.start_folder(view))
            if not folder:
                return
            self._remember_folder(folder)
        out = Path(folder)
        targets = [out / "seg.dcm", out / "sr.dcm", out / "key-images"]
        if force is None:
            force = self._confirm_replace(targets)
            if not force and any(t.exists() for t in targets):
                return
        volume, bookmarks = view.volume, self._bookmarks(view)
        annotations = [a for a in view.annotations if a.axis == 0]

        def job(context):
            from medviewer.export.bundle import write_dicom_bundle

            return write_dicom_bundle(volume, prediction, out, bookmarks=bookmarks, annotations=annotations,
                                      force=force)

        self._start(job, "the DICOM objects", out)

    def save_anonymized(self, target: str | None = None, force: bool | None = None) -> None:
        view = self._view()
        if view is None:
            return
        volume = view.volume
        # one entry per file (a multi-frame file backs several slices)
        sources = list({id(i.source): i.source for i in volume.sources if hasattr(i, "source")}.values())
        if not sources:
            self.window._report("Only DICOM series can be anonymised: this one was opened from pictures or NIfTI.")
            return
        if target is None:
            parent = QFileDialog.getExistingDirectory(self.window, "Where to put the anonymised copy",
                                                      self.start_folder(view))
            if not parent:
                return
            self._remember_folder(parent)
            target = str(Path(parent) / f"{_safe_name(volume.description, 'series')}-anonymised")
        if force is None:
            force = self._confirm_replace([Path(target)])
            if not force and Path(target).exists():
                return

        def job(context):
            from medviewer.export.anonymize import anonymize

            result = anonymize(sources, target, force=force, progress=context.progress, cancel=context.cancel)
            return [result.folder]

        self._start(job, "the anonymised copy", target)


def add_export_menu(window, file_menu: QMenu, before: QAction) -> ExportMenu:
    """Create the export actions of ``window`` and put their menu into ``file_menu`` before ``before``."""
    export = ExportMenu(window)
    file_menu.insertMenu(before, export.menu(file_menu))
    file_menu.insertAction(before, export.act_bookmark)
    return export


__all__ = ["ExportMenu", "add_export_menu", "png_bytes"]
