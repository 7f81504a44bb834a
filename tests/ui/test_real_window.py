"""The real main window on a real X server (Xvfb): opens a study, shows it, exits with code 0.

The other UI tests run on Qt's offscreen platform. This one starts ``Xvfb`` on a free display
and runs a small script in a subprocess with ``QT_QPA_PLATFORM=xcb``: it writes a small demo
study, opens it in ``MainWindow`` (as ``medviewer.ui.app.run`` sets the window up), waits until
the series is loaded, saves a screenshot of the screen and of the window, closes the window and
exits with the application's exit code. The test checks the exit code, the screenshots and that
the viewport shows an image (many grey levels), not a blank or black area.

Skipped when ``Xvfb`` is not on PATH (``apt-get install xvfb``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

XVFB = shutil.which("Xvfb")

pytestmark = pytest.mark.skipif(XVFB is None, reason="Xvfb is not on PATH (apt-get install xvfb; .ci/run installs it)")

SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import time
    from pathlib import Path


    def main() -> int:
        import pyqtgraph as pg
        from PySide6.QtCore import QPoint, QSettings, QTimer
        from PySide6.QtGui import QGuiApplication

        from medviewer.ai.demo_data import write_phantom_dicom
        from medviewer.ai.phantom import PhantomConfig, generate_phantom
        from medviewer.core import pool
        from medviewer.ui.app import make_app
        from medviewer.ui.main_window import MainWindow

        out = Path(sys.argv[1])
        config = PhantomConfig(slices=40, size=128, slice_thickness_mm=2.5, nodule_count=(1, 1),
                               nodule_diameter_mm=(10.0, 16.0))
        study = write_phantom_dicom(generate_phantom(config, seed=0), out / "data")

        pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)
        app = make_app()
        settings = QSettings(str(out / "settings.ini"), QSettings.Format.IniFormat)
        window = MainWindow(settings)
        window.show()

        def shutdown() -> None:
            window.tasks.shutdown()
            pool.shutdown()

        app.aboutToQuit.connect(shutdown)
        app.setQuitOnLastWindowClosed(True)
        report = {"platform": QGuiApplication.platformName(), "study": str(study)}
        started = {}

        def fail(message: str, code: int) -> None:
            report["error"] = message
            (out / "report.json").write_text(json.dumps(report))
            app.exit(code)

        def screenshot() -> None:
            view = window.active
            viewport = view.viewport()
            top_left = viewport.mapToGlobal(QPoint(0, 0))
            report["viewport"] = [top_left.x(), top_left.y(), viewport.width(), viewport.height()]
            report["window"] = [window.x(), window.y(), window.width(), window.height()]
            report["slice"] = [view.index, view.count]
            report["loaded"] = sorted(window.volumes)
            screen = QGuiApplication.primaryScreen()
            report["screen"] = [screen.geometry().width(), screen.geometry().height()]
            report["screen_saved"] = screen.grabWindow(0).save(str(out / "screen.png"))
            report["window_saved"] = window.grab().save(str(out / "window.png"))
            (out / "report.json").write_text(json.dumps(report))
            window.close()  # the last window: the application quits with its exit code

        assistant = len(sys.argv) > 2 and sys.argv[2] == "assistant"

        def poll_assistant() -> None:
            if window._assistant_worker is not None:
                QTimer.singleShot(100, poll_assistant)
                return
            if not window.predictions:
                fail(f"the assistant gave no result: {window.last_error}", 5)
                return
            prediction = next(iter(window.predictions.values()))
            report["findings"] = len(prediction.findings)
            if prediction.findings:
                window.go_to_finding(prediction.findings[0])
            window.assistant.heatmap_box.setChecked(True)
            QTimer.singleShot(700, screenshot)

        def poll() -> None:
            if window.last_error:
                fail(f"error while loading: {window.last_error}", 4)
            elif window.volumes and window.active.volume is not None:
                report["load_seconds"] = time.perf_counter() - started["at"]
                if assistant:
                    from medviewer.ai.package import find_packages

                    models = [str(p.path) for p in find_packages() if p.source == "builtin" and p.manifest]
                    window.run_assistant(models, "cpu")
                    QTimer.singleShot(100, poll_assistant)
                else:
                    QTimer.singleShot(700, screenshot)  # a few paints later
            else:
                QTimer.singleShot(50, poll)

        started["at"] = time.perf_counter()
        window.open_paths([str(study)])
        QTimer.singleShot(50, poll)
        QTimer.singleShot(90_000, lambda: fail("not loaded within 90 s", 3))
        return app.exec()


    if __name__ == "__main__":  # the process pool's workers import this file
        sys.exit(main())
    """
)


def _start_xvfb(tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """Xvfb on the first free display from :91; waits for its socket (or gives up)."""
    log_path = tmp_path / "xvfb.log"
    for number in range(91, 121):
        socket = Path(f"/tmp/.X11-unix/X{number}")
        if socket.exists() or Path(f"/tmp/.X{number}-lock").exists():
            continue
        with open(log_path, "ab") as log:  # the child keeps its own descriptor
            process = subprocess.Popen([XVFB, f":{number}", "-screen", "0", "1280x900x24", "-nolisten", "tcp"],
                                       stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if socket.exists():
                return process, number
            if process.poll() is not None:  # display taken meanwhile, or Xvfb failed: try the next
                break
            time.sleep(0.05)
        _stop(process)
    log = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
    raise RuntimeError(f"could not start Xvfb on displays :91-:120:\n{log}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _read_png(path: Path) -> np.ndarray:
    """(rows, cols, 3) uint8 RGB, read with Qt (no display needed for QImage)."""
    from PySide6.QtGui import QImage

    image = QImage(str(path))
    assert not image.isNull(), f"{path} is not a readable image"
    image = image.convertToFormat(QImage.Format.Format_RGB888)
    width, height, stride = image.width(), image.height(), image.bytesPerLine()
    buffer = np.frombuffer(image.constBits(), dtype=np.uint8, count=stride * height).reshape(height, stride)
    return buffer[:, : width * 3].reshape(height, width, 3).copy()


def _run_window(tmp_path: Path, *extra: str):
    script = tmp_path / "show_study.py"
    script.write_text(SCRIPT)
    process, display = _start_xvfb(tmp_path)
    try:
        root = str(Path(__file__).resolve().parents[2])
        python_path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH", "")]))
        env = dict(os.environ, DISPLAY=f":{display}", QT_QPA_PLATFORM="xcb", PYTHONPATH=python_path,
                   XDG_CONFIG_HOME=str(tmp_path / "config"))
        env.pop("WAYLAND_DISPLAY", None)
        run = subprocess.run([sys.executable, str(script), str(tmp_path), *extra], env=env, capture_output=True,
                             text=True, timeout=300, cwd=tmp_path)
    finally:
        _stop(process)
    return run


def _builtin_models() -> bool:
    from medviewer.ai.package import find_packages

    return sum(p.source == "builtin" and p.manifest is not None for p in find_packages()) >= 2


def test_real_window_opens_a_study_and_exits_cleanly(tmp_path):
    run = _run_window(tmp_path)
    _check_screenshot(tmp_path, run)


@pytest.mark.skipif(not _builtin_models(), reason="the built-in model packages are not in resources/models")
def test_real_window_shows_the_assistant_overlays(tmp_path):
    run = _run_window(tmp_path, "assistant")
    report, crop = _check_screenshot(tmp_path, run)
    assert report.get("findings", 0) >= 1, report
    # Mask and heatmap colours on the finding's slice: many clearly coloured (non-grey) pixels.
    rgb = crop.astype(np.int16)
    colourful = (np.abs(rgb[..., 0] - rgb[..., 1]) > 40) | (np.abs(rgb[..., 1] - rgb[..., 2]) > 40)
    assert colourful.sum() > 200, f"no overlay colours on screen ({colourful.sum()} pixels); report {report}"


def _check_screenshot(tmp_path: Path, run):

    output = f"stdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-3000:]}"
    report_path = tmp_path / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    assert run.returncode == 0, f"exit code {run.returncode}; report {report}\n{output}"
    assert report.get("platform") == "xcb", report
    assert report.get("loaded"), report
    screen_png = tmp_path / "screen.png"
    assert report.get("screen_saved") and screen_png.exists(), report
    assert report.get("window_saved") and (tmp_path / "window.png").exists(), report

    screen = _read_png(screen_png)
    assert screen.shape[:2] == (900, 1280), screen.shape
    x, y, width, height = report["viewport"]
    assert width > 200 and height > 200, report
    # The central half of the viewport: the phantom's body, drawn in a CT window.
    crop = screen[y + height // 4: y + 3 * height // 4, x + width // 4: x + 3 * width // 4]
    assert crop.size, (report, screen.shape)
    gray = crop.astype(np.float32).mean(axis=2)
    levels = np.unique(gray).size
    assert gray.std() > 10 and levels > 20, (
        f"viewport looks blank: std {gray.std():.1f}, {levels} grey levels; report {report}\n{output}")
    return report, crop
