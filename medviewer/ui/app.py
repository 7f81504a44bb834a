"""Start the viewer: the Qt application, a dark reading-room theme, the main window."""

from __future__ import annotations

import os
import sys

from PySide6.QtCore import QCoreApplication, QSettings, Qt
from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication

from medviewer.resources import ICON_SIZES, icon_path
from medviewer.version import __version__


def dark_palette() -> QPalette:
    """Dark greys and muted accents: bright chrome distracts from images in a dim reading room."""
    palette = QPalette()
    colors = {
        QPalette.ColorRole.Window: QColor(37, 37, 40),
        QPalette.ColorRole.WindowText: QColor(220, 220, 220),
        QPalette.ColorRole.Base: QColor(25, 25, 28),
        QPalette.ColorRole.AlternateBase: QColor(40, 40, 44),
        QPalette.ColorRole.ToolTipBase: QColor(50, 50, 55),
        QPalette.ColorRole.ToolTipText: QColor(230, 230, 230),
        QPalette.ColorRole.Text: QColor(220, 220, 220),
        QPalette.ColorRole.Button: QColor(45, 45, 50),
        QPalette.ColorRole.ButtonText: QColor(220, 220, 220),
        QPalette.ColorRole.BrightText: QColor(255, 80, 80),
        QPalette.ColorRole.Highlight: QColor(61, 143, 209),
        QPalette.ColorRole.HighlightedText: QColor(255, 255, 255),
        QPalette.ColorRole.Link: QColor(100, 170, 230),
    }
    for role, color in colors.items():
        palette.setColor(role, color)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(110, 110, 110))
    return palette


def make_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if app is None:
        QCoreApplication.setOrganizationName("MedViewer")
        QCoreApplication.setApplicationName("MedViewer")
        QCoreApplication.setApplicationVersion(__version__)
        app = QApplication(argv if argv is not None else [sys.argv[0]])
        app.setStyle("Fusion")
        app.setPalette(dark_palette())
        app.setDesktopFileName("medviewer")  # resources/medviewer.desktop: the task bar finds its icon
        icon = QIcon()
        for size in ICON_SIZES:
            path = icon_path(size)
            if path is not None:
                icon.addFile(str(path))
        if not icon.isNull():
            app.setWindowIcon(icon)
    return app


def run(paths: list[str], demo: bool = False) -> int:
    """Open the main window on ``paths`` (and/or the demo study) and run until it closes."""
    import pyqtgraph as pg

    from medviewer.core import pool
    from medviewer.ui.main_window import MainWindow

    pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)
    app = make_app()
    window = MainWindow(QSettings())
    window.show()

    def shutdown() -> None:
        window.tasks.shutdown()
        pool.shutdown()

    app.aboutToQuit.connect(shutdown)
    app.setQuitOnLastWindowClosed(True)
    window.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
    if demo:
        window.open_demo()
    if paths:
        window.open_paths(paths)
    if os.environ.get("MEDVIEWER_QUIT_AFTER_MS"):
        # For smoke tests and screenshots: quit on a timer.
        from PySide6.QtCore import QTimer

        QTimer.singleShot(int(os.environ["MEDVIEWER_QUIT_AFTER_MS"]), window.close)
    return app.exec()
