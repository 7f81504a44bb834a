"""The image owns the window: at 1600×1000 the viewport takes at least 70 % of it, with Tags open too, and the
window does not grow past the size it was given."""

from __future__ import annotations

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from tests.ui.conftest import open_and_wait


def _ratio(win) -> float:
    grid = win.grid.geometry()
    return grid.width() * grid.height() / (win.width() * win.height())


def test_viewport_owns_most_of_a_1600_by_1000_window(qtbot, tmp_path, disc_folder):
    from medviewer.ui.app import make_app
    from medviewer.ui.main_window import MainWindow

    make_app()
    win = MainWindow(QSettings(str(tmp_path / "fresh.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    win.resize(1600, 1000)
    win.show()
    QApplication.processEvents()
    try:
        open_and_wait(qtbot, win, [disc_folder[0]])
        assert _ratio(win) >= 0.70, (win.grid.geometry(), win.size())
        win.tags_dock.show()
        win.tags_dock.raise_()
        QApplication.processEvents()
        assert win.tags_dock.isVisible()
        assert (win.width(), win.height()) == (1600, 1000)
        assert _ratio(win) >= 0.70, (win.grid.geometry(), win.size())
        image = win.grab().toImage()
        assert (image.width(), image.height()) == (1600, 1000)
    finally:
        win.tasks.shutdown()
        win.close()


def test_first_start_fits_the_available_screen(qtbot, tmp_path):
    from medviewer.ui.app import make_app
    from medviewer.ui.main_window import MainWindow

    make_app()
    win = MainWindow(QSettings(str(tmp_path / "fresh.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    screen = win.screen().availableGeometry()
    assert win.width() <= screen.width() and win.height() <= screen.height()
    win.tasks.shutdown()
