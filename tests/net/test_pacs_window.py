"""The PACS window as a user drives it, against the real Orthanc: File > PACS through its QAction, nodes
edited and tested with C-ECHO, a study search, C-GET and C-MOVE into the cache, and the study opened in the
viewer; failures as a message in the window, never a frozen GUI."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pydicom  # noqa: E402
import pytest  # noqa: E402
from PySide6.QtCore import QSettings  # noqa: E402

from medviewer.net import dimse  # noqa: E402
from medviewer.net.nodes import NetSettings, Node  # noqa: E402
from tests.net.test_dimse import make_series  # noqa: E402


@pytest.fixture
def window(qtbot, tmp_path, orthanc):
    from medviewer.ui.app import make_app
    from medviewer.ui.main_window import MainWindow

    make_app()
    win = MainWindow(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    yield win
    win.tasks.shutdown()
    win.close()


@pytest.fixture
def study(orthanc, tmp_path):
    orthanc.clear()
    paths = make_series(tmp_path / "series", 4, patient="WINDOW^TEST")
    first = pydicom.dcmread(paths[0])
    paths += make_series(tmp_path / "scout", 2, patient="WINDOW^TEST", study=first.StudyInstanceUID)
    settings = NetSettings(ae_title=orthanc.our_aet, port=orthanc.our_port, timeout_s=5)
    node = Node("orthanc", orthanc.aet, "127.0.0.1", orthanc.dicom_port)
    assert len(dimse.send(node, settings, paths).sent) == 6
    return first, pydicom.dcmread(paths[-1])


def _configure(qtbot, pacs, orthanc):
    from medviewer.ui.pacs import NodesDialog

    dialog = NodesDialog(pacs.net, pacs.tasks, pacs)
    qtbot.addWidget(dialog)
    dialog.ae_edit.setText(orthanc.our_aet)
    dialog.port_spin.setValue(orthanc.our_port)
    dialog._add_row(Node("orthanc", orthanc.aet, "127.0.0.1", orthanc.dicom_port))
    dialog.test_button.click()
    qtbot.waitUntil(lambda: "C-ECHO answered" in dialog.status.text(), timeout=15000)
    dialog._save()
    assert dialog.result_settings is not None
    pacs.set_settings(dialog.result_settings)


@pytest.mark.parametrize("method", ["C-GET", "C-MOVE"])
def test_search_retrieve_and_open(qtbot, window, orthanc, study, tmp_path, method):
    window.act_pacs.trigger()
    pacs = window.pacs_window
    assert pacs.isVisible() and "No PACS node configured" in pacs.status.text()
    pacs.cache_dir = tmp_path / "cache"
    _configure(qtbot, pacs, orthanc)
    assert pacs.node_combo.count() == 1
    # persisted: a new window reads the same node back from QSettings
    from medviewer.ui.pacs import load_qsettings

    assert load_qsettings(window.settings).nodes[0].ae_title == orthanc.aet
    pacs.filters["patient_name"].setText("WINDOW*")
    pacs.search_button.click()
    qtbot.waitUntil(lambda: pacs.worker is None and pacs.table.rowCount() == 1, timeout=15000)
    assert pacs.status.text() == "1 match(es)"
    pacs.method_combo.setCurrentText(method)
    big, small = study
    arrivals = []
    pacs.arrived.connect(lambda folder, first: arrivals.append((folder, first)))
    with qtbot.waitSignal(pacs.retrieved, timeout=30000) as opened:
        pacs.retrieve_button.click()
    # series by series, the largest first: it opened while the other was still to come
    cache = tmp_path / "cache" / big.StudyInstanceUID
    assert arrivals == [(str(cache / big.SeriesInstanceUID), True), (str(cache / small.SeriesInstanceUID), False)]
    assert opened.args[0] == str(cache)
    assert pacs.status.text().startswith("6 instance(s) retrieved in 2 series")
    assert pacs.progress.value() == pacs.progress.maximum() == 6
    qtbot.waitUntil(lambda: len(window.series_tree.series) == 2 and bool(window.volumes)
                    and not window.tasks.running, timeout=30000)
    # the first (largest) series is in the viewport; the later one was listed, not shown over it
    assert window.active.volume.voxels.shape[0] == 4
    assert str(window.active.volume.series_uid) == str(big.SeriesInstanceUID)


def test_a_node_that_is_not_there_is_a_message_not_a_freeze(qtbot, window, orthanc, tmp_path):
    window.act_pacs.trigger()
    pacs = window.pacs_window
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        pacs.set_settings(NetSettings(nodes=[Node("gone", "GONE", "127.0.0.1", port)]))
        pacs.search_button.click()
        qtbot.waitUntil(lambda: pacs.worker is None, timeout=15000)
    assert "no DICOM listener" in pacs.status.text() and "connection refused" in pacs.status.text()
    assert pacs.search_button.isEnabled() and not pacs.cancel_button.isEnabled()


def test_send_the_open_series(qtbot, window, orthanc, tmp_path):
    from tests.ui.conftest import write_disc_series

    orthanc.clear()
    folder, _ = write_disc_series(tmp_path / "disc")
    window.open_paths([str(folder)])
    qtbot.waitUntil(lambda: bool(window.volumes) and not window.tasks.running, timeout=30000)
    window.act_pacs.trigger()
    pacs = window.pacs_window
    pacs.set_settings(NetSettings(ae_title=orthanc.our_aet, port=orthanc.our_port, timeout_s=5,
                                  nodes=[Node("orthanc", orthanc.aet, "127.0.0.1", orthanc.dicom_port)]))
    pacs.send_open_button.click()
    qtbot.waitUntil(lambda: pacs.worker is None and "sent to" in pacs.status.text(), timeout=30000)
    assert pacs.status.text().startswith("10 of 10 file(s) sent to orthanc")
    assert len(orthanc.http("/instances")) == 10
