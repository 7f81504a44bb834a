"""The Not opened panel: the file name first, then the reason, the folder on hover; it opens by itself when
something important was refused (everything of a drop, damage, a decoder crash), not for harmless skips."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from medviewer.core.sources import Refused
from medviewer.ui.panels import RefusedList, is_important, split_refused_path
from tests.ui.conftest import open_and_wait


def _rows(panel: RefusedList) -> list[tuple[str, str, str, str]]:
    out = []
    for i in range(panel.topLevelItemCount()):
        item = panel.topLevelItem(i)
        out.append((item.text(0), item.text(1), item.toolTip(0), item.toolTip(1)))
    return out


def test_rows_show_the_name_then_the_reason_and_the_folder_on_hover(qtbot, tmp_path):
    panel = RefusedList()
    qtbot.addWidget(panel)
    deep = tmp_path / "a" / "very" / "long" / "folder" / "name" / "that" / "would" / "be" / "cut"
    important = panel.add([Refused(str(deep / "IM0001.dcm"), "damaged DICOM header (bad tag)"),
                           Refused(f"{tmp_path / 'study.zip'}!/CT/IM7", "encrypted ZIP member")])
    assert important
    (name, reason, tip, tip_reason), (zname, zreason, ztip, _) = _rows(panel)
    assert (name, reason) == ("IM0001.dcm", "damaged DICOM header (bad tag)")
    assert str(deep) in tip and "damaged DICOM header" in tip and tip == tip_reason
    assert (zname, zreason) == ("IM7", "encrypted ZIP member")
    assert str(tmp_path / "study.zip") in ztip and "CT" in ztip
    assert panel.headerItem().text(0) == "File" and panel.headerItem().text(1) == "Reason"
    assert [path for *_rest, path in panel.entries()] == [str(deep / "IM0001.dcm"), f"{tmp_path / 'study.zip'}!/CT/IM7"]
    assert split_refused_path("/x/y/z.dcm") == ("z.dcm", "/x/y")


def test_what_is_important():
    assert not is_important(Refused("/s/notes.txt", "not an image (.txt file)"))
    assert not is_important(Refused("/s/labels.npy", "not an image (.npy file)"))
    assert not is_important(Refused("/s/DICOMDIR", "DICOMDIR index, not an image (open it or its folder to read its files)"))
    assert not is_important(Refused("/s/LICENSE", "not a DICOM file"))
    assert is_important(Refused("/s/IM1.dcm", "not a DICOM file"))  # claims to be DICOM
    assert is_important(Refused("/s/IM2", "could not be read (the reader crashed on this file)"))
    assert is_important(Refused("/s/IM3", "truncated or incomplete: the file ends before its pixel data (x)"))
    assert is_important(Refused("/s/IM4", "cannot be read: permission denied"))


def test_harmless_skips_do_not_open_the_panel(qtbot, window, disc_folder):
    folder, _ = disc_folder
    (folder / "notes.txt").write_text("hello")
    np.save(folder / "labels.npy", np.zeros(3))
    open_and_wait(qtbot, window, [folder])
    names = {name for name, *_ in window.refused_list.entries()}
    assert {"notes.txt", "labels.npy"} <= names
    assert not window.refused_dock.isVisibleTo(window)


def test_a_damaged_file_opens_the_panel(qtbot, window, disc_folder):
    folder, _ = disc_folder
    (folder / "broken.dcm").write_bytes(b"\x00" * 200)
    open_and_wait(qtbot, window, [folder])
    assert ("broken.dcm", "not a DICOM file", str(folder / "broken.dcm")) in window.refused_list.entries()
    assert window.refused_dock.isVisibleTo(window)


def test_a_drop_of_nothing_openable_opens_the_panel(qtbot, window, tmp_path):
    files = []
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("x")
        files.append(QUrl.fromLocalFile(str(tmp_path / name)))
    mime = QMimeData()
    mime.setUrls(files)
    event = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    qtbot.waitUntil(lambda: not window.tasks.running and window.refused_list.topLevelItemCount() == 2, timeout=10000)
    assert window.refused_dock.isVisibleTo(window)
    assert sorted(name for name, *_ in window.refused_list.entries()) == ["a.txt", "b.txt"]


def test_slices_the_decoder_failed_on_open_the_panel(qtbot, window, disc_folder):
    folder, _ = disc_folder
    view = open_and_wait(qtbot, window, [folder])
    assert not window.refused_dock.isVisibleTo(window)
    volume = view.volume
    volume.missing_slices = [2]
    volume.warnings.append("1 slice(s) could not be decoded and are shown blank: slice 3 (x): decoder crashed")
    window._on_finished(("loaded", view.series_key, volume))
    assert window.refused_dock.isVisibleTo(window)
    (name, reason, path), = window.refused_list.entries()
    assert name == "IM003.dcm" and path == str(folder / "IM003.dcm") and "slice 3" in reason
