"""Scrolling and loading in the viewer: MedViewer's SliceView against pyqtgraph's ImageView.

    python benchmarks/render.py [--repeat 5] [--view 800x800] [--repaint events|viewport]

Runs offscreen (it sets QT_QPA_PLATFORM=offscreen itself) on the 300×512² uncompressed CT series
that ``benchmarks/load_series.py`` writes under benchmarks/data/ (written once, reused after),
and prints one table. Everything is measured in this one process, side by side:

* loading    ``MainWindow.open_paths([folder])`` in the real main window (process pool started
             and page cache warm beforehand): a 5 ms ``QTimer`` records the gaps between its ticks
             from the call until ``window.volumes`` is filled. Reports the longest gap and the
             99th percentile (goal: ≤ 50 ms), the times until the series list is filled, until
             the active view first has the volume and until its first slice is painted, against
             the full load; and the longest single GUI-thread call per kind (``_on_partial``
             scan/slice, ``_on_progress``, ``_on_finished``, ``GraphicsView.paintEvent``).
* scrolling  the loaded volume in a ``SliceView`` (``set_volume`` once, then ``set_slice(k)``
             for all 300 slices), without and with a mask overlay: a uint8 label map (0/1/2,
             the phantom's labels.npy) shown by a second ``pg.ImageItem`` child of
             ``view.image_item`` with a 256-entry RGBA lookup table and levels (0, 255), its
             image replaced on every ``sliceChanged``. Goal: ≥ 150 slices/s; the overlay within
             20 % of no overlay.
* baseline   ``pg.ImageView().setImage(slice)`` with its default options (auto-levels,
             auto-range, histogram) for the same 300 int16 slices in a widget of the same size.

Each slice change is followed by a real repaint: ``--repaint events`` (default) runs
``app.processEvents()``, which paints what the event loop would (image, overlay labels, scale
bar; for ImageView also its histogram); ``--repaint viewport`` calls ``viewport().repaint()`` on
the graphics view only, which leaves ImageView's histogram widget and the viewer's text overlays
unpainted (it flatters the baseline most: read the default). (``QWidget.repaint()`` on the view
itself is not used: it calls ``ImageItem.paint`` but leaves the old slice on screen, so it
measures nothing.) Every ``ImageItem.paint`` is counted and each run reports
painted/slices; before the timed runs a screen grab checks that the repaint method really puts a
new slice on screen. Scrolling runs are interleaved (viewer, viewer+mask, baseline) ``--repeat``
times and the median is reported; the table also splits each viewer slice into pyqtgraph's
``ImageItem.render`` (array to QImage) and the rest of ``paint`` (drawing the QImage scaled).

Absolute numbers depend on the machine (and offscreen raster painting is CPU only); read the
ratios. The whole run takes well under two minutes once the series exists.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt import

ROOT = Path(__file__).resolve().parent

SLICES = 300
SIZE = 512
GOAL_SLICES_PER_S = 150.0
GOAL_OVERLAY_LOSS = 0.20
GOAL_STALL_MS = 50.0
TICK_MS = 5


class PaintProbe:
    """Counts and times ``ImageItem.paint``/``render`` per item (patched on the class, once)."""

    def __init__(self) -> None:
        import pyqtgraph as pg

        self.paints: dict[int, int] = {}
        self.paint_s: dict[int, float] = {}
        self.render_s: dict[int, float] = {}
        self.watch_first: set[int] = set()
        self.first_paint_at: float | None = None
        self.longest_view_paint = 0.0  # one GraphicsView.paintEvent, while loading
        self.track_views = False
        paint, render = pg.ImageItem.paint, pg.ImageItem.render
        view_paint = pg.GraphicsView.paintEvent
        probe = self

        def counted_paint(item, painter, *args):
            start = time.perf_counter()
            result = paint(item, painter, *args)
            end = time.perf_counter()
            key = id(item)
            probe.paints[key] = probe.paints.get(key, 0) + 1
            probe.paint_s[key] = probe.paint_s.get(key, 0.0) + end - start
            if probe.first_paint_at is None and key in probe.watch_first and item.image is not None:
                probe.first_paint_at = end
            return result

        def timed_render(item):
            start = time.perf_counter()
            render(item)
            key = id(item)
            probe.render_s[key] = probe.render_s.get(key, 0.0) + time.perf_counter() - start

        def timed_view_paint(view, event):
            start = time.perf_counter()
            result = view_paint(view, event)
            if probe.track_views:
                probe.longest_view_paint = max(probe.longest_view_paint, time.perf_counter() - start)
            return result

        pg.ImageItem.paint = counted_paint
        pg.ImageItem.render = timed_render
        pg.GraphicsView.paintEvent = timed_view_paint

    def snapshot(self, item) -> tuple[int, float, float]:
        key = id(item)
        return self.paints.get(key, 0), self.paint_s.get(key, 0.0), self.render_s.get(key, 0.0)


# --- loading in the main window --------------------------------------------------------------

def measure_loading(app, probe: PaintProbe, folder: Path) -> dict:
    from PySide6.QtCore import QEventLoop, QObject, QSettings, Qt, QTimer

    from medviewer.ui.main_window import MainWindow

    tmp = tempfile.TemporaryDirectory(prefix="medviewer-bench-")
    settings = QSettings(str(Path(tmp.name) / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings)
    window.show()
    for _ in range(5):
        app.processEvents()

    start = time.perf_counter()
    marks: dict[str, float] = {}
    handlers: dict[str, float] = {}

    class Relay(QObject):
        """Times one handler. A bound method of a GUI-thread QObject, so the worker's signals stay
        queued to the GUI thread exactly as with the window's own methods (a plain function
        connected to a worker's signal would run on the worker's thread)."""

        def __init__(self, name: str):
            super().__init__(window)
            self.name = name
            self.original = getattr(window, name)

        def call(self, *args):
            t = time.perf_counter()
            try:
                return self.original(*args)
            finally:
                now = time.perf_counter()
                kind = self.name
                if args and isinstance(args[0], tuple) and args[0] and isinstance(args[0][0], str):
                    kind = f"{self.name}({args[0][0]})"
                handlers[kind] = max(handlers.get(kind, 0.0), now - t)
                if kind == "_on_partial(scan)":
                    marks.setdefault("scanned", now)
                if "volume_set" not in marks and window.active.volume is not None:
                    marks["volume_set"] = now
                if self.name == "_on_finished" and window.volumes and "loaded" not in marks:
                    marks["loaded"] = now

    def wrap(name: str) -> None:
        setattr(window, name, Relay(name).call)  # open_paths looks these up when it starts the worker

    for name in ("_on_partial", "_on_progress", "_on_finished", "_on_failed"):
        if hasattr(window, name):
            wrap(name)
    probe.watch_first = {id(frame.view.image_item) for frame in window.grid.frames}
    probe.first_paint_at = None
    probe.track_views, probe.longest_view_paint = True, 0.0

    ticks: list[float] = []
    loop = QEventLoop()

    def tick() -> None:
        ticks.append(time.perf_counter())
        if window.volumes:
            loop.quit()

    timer = QTimer()
    timer.setTimerType(Qt.TimerType.PreciseTimer)
    timer.setInterval(TICK_MS)
    timer.timeout.connect(tick)
    deadline = QTimer()
    deadline.setSingleShot(True)
    deadline.timeout.connect(loop.quit)
    deadline.start(90_000)

    timer.start()
    start = time.perf_counter()
    window.open_paths([str(folder)])
    if not window.volumes:
        loop.exec()
    timer.stop()
    deadline.stop()
    end = time.perf_counter()
    probe.watch_first = set()
    probe.track_views = False
    handlers["GraphicsView.paintEvent"] = probe.longest_view_paint

    if not window.volumes:
        raise SystemExit(f"loading did not finish in 90 s (last error: {window.last_error!r})")
    (volume,) = window.volumes.values()
    edges = [start] + ticks
    gaps = [(b - a, a - start) for a, b in zip(edges, edges[1:])]
    longest, longest_at = max(gaps)
    ordered = sorted(g for g, _ in gaps)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    result = {
        "volume": volume,
        "window": window,
        "settings_dir": tmp,
        "full_load": marks.get("loaded", end) - start,
        "volume_set": marks["volume_set"] - start if "volume_set" in marks else None,
        "scanned": marks["scanned"] - start if "scanned" in marks else None,
        "first_paint": probe.first_paint_at - start if probe.first_paint_at else None,
        "longest_gap": longest,
        "longest_gap_at": longest_at,
        "p99_gap": p99,
        "gaps_over_goal": sum(1 for g, _ in gaps if g * 1000 > GOAL_STALL_MS),
        "ticks": len(ticks),
        "handlers": handlers,
    }
    return result


# --- scrolling ----------------------------------------------------------------------------------

def label_map(folder: Path, volume) -> tuple:
    """The phantom's ground truth (0/1/2) in the loaded volume's slice order, or a threshold map."""
    import numpy as np

    from medviewer.ai.demo_data import truth_files

    path, _truth = truth_files(folder.parent)
    if path is not None:
        labels = np.load(path)
        if labels.shape == volume.shape and labels.dtype == np.uint8:
            return np.ascontiguousarray(labels), "labels.npy"
    labels = np.zeros(volume.shape, dtype=np.uint8)
    for k in range(volume.shape[0]):
        labels[k][volume.voxels[k] < -400] = 1
        labels[k][volume.voxels[k] > 300] = 2
    return labels, "HU thresholds"


class Scroller:
    """One widget scrolled through the volume with a given repaint method."""

    def __init__(self, app, probe: PaintProbe, method: str):
        self.app = app
        self.probe = probe
        self.method = method

    def repaint(self, graphics_view) -> None:
        if self.method == "viewport":
            graphics_view.viewport().repaint()
        else:
            self.app.processEvents()

    def run(self, graphics_view, step, items, count: int) -> dict:
        """Call ``step(k)`` for every slice (starting at 1, ending at 0), repainting after each."""
        order = list(range(1, count)) + [0]
        before = [self.probe.snapshot(item) for item in items]
        start = time.perf_counter()
        for k in order:
            step(k)
            self.repaint(graphics_view)
        seconds = time.perf_counter() - start
        after = [self.probe.snapshot(item) for item in items]
        paints = [a[0] - b[0] for a, b in zip(after, before)]
        paint_s = [a[1] - b[1] for a, b in zip(after, before)]
        render_s = [a[2] - b[2] for a, b in zip(after, before)]
        return {"seconds": seconds, "rate": len(order) / seconds, "slices": len(order), "paints": paints,
                "paint_ms": [1000 * s / len(order) for s in paint_s],
                "render_ms": [1000 * s / len(order) for s in render_s]}


def screen_changes(app, scroller: Scroller, widget, graphics_view, step, a: int, b: int) -> bool:
    """Whether showing slice ``b`` after slice ``a`` (with the scroller's repaint) changes the screen."""
    from PySide6.QtCore import QRect
    from PySide6.QtGui import QGuiApplication

    screen = QGuiApplication.primaryScreen()
    viewport = graphics_view.viewport()
    top = widget.window()
    origin = viewport.mapTo(top, viewport.rect().topLeft())
    w, h = viewport.width(), viewport.height()
    area = QRect(origin.x() + w // 4, origin.y() + h // 4, w // 2, h // 2)
    step(a)
    for _ in range(3):
        app.processEvents()
    first = screen.grabWindow(top.winId()).toImage().copy(area)
    step(b)
    scroller.repaint(graphics_view)
    second = screen.grabWindow(top.winId()).toImage().copy(area)
    return first != second


def measure_scrolling(app, probe: PaintProbe, volume, labels, view_size: tuple[int, int], repeat: int,
                      method: str) -> dict:
    import pyqtgraph as pg

    from medviewer.ui.viewport import SliceView

    count = volume.shape[0]
    scroller = Scroller(app, probe, method)

    view = SliceView()
    view.resize(*view_size)
    view.show()
    view.set_volume(volume, "bench", index=0)
    for _ in range(3):
        app.processEvents()

    # The overlay goes through the viewer's own path (SliceView.set_mask): one uint8 ImageItem
    # with a 256-entry RGBA lookup table, cropped to the labelled part of each slice.
    colors = {1: (60, 200, 255), 2: (255, 60, 60), 3: (255, 200, 0)}
    state: dict = {"overlay": None}

    def add_overlay() -> None:
        view.set_mask(labels, colors)
        state["overlay"] = view.mask_item

    def remove_overlay() -> None:
        view.set_mask(None)
        state["overlay"] = None

    baseline = pg.ImageView()
    baseline.resize(*view_size)
    baseline.show()
    slices = volume.voxels

    def baseline_step(k: int) -> None:
        baseline.setImage(slices[k])

    baseline_step(0)
    for _ in range(3):
        app.processEvents()

    checks = {
        "viewer": screen_changes(app, scroller, view, view, view.set_slice, count // 4, count // 2),
        "baseline": screen_changes(app, scroller, baseline, baseline.ui.graphicsView, baseline_step,
                                   count // 4, count // 2),
    }
    # Warm-up: a few slices each, untimed.
    for k in range(1, 21):
        view.set_slice(k)
        scroller.repaint(view)
        baseline_step(k)
        scroller.repaint(baseline.ui.graphicsView)

    runs: dict[str, list[dict]] = {"viewer": [], "overlay": [], "baseline": []}
    for _ in range(repeat):
        view.set_slice(0)
        app.processEvents()
        runs["viewer"].append(scroller.run(view, view.set_slice, [view.image_item], count))
        add_overlay()
        view.set_slice(0)
        app.processEvents()
        runs["overlay"].append(scroller.run(view, view.set_slice, [view.image_item, state["overlay"]], count))
        remove_overlay()
        baseline_step(0)
        app.processEvents()
        runs["baseline"].append(scroller.run(baseline.ui.graphicsView, baseline_step, [baseline.imageItem], count))

    view.close()
    baseline.close()
    app.processEvents()
    return {"runs": runs, "checks": checks}


def summarize(runs: list[dict]) -> dict:
    rates = [r["rate"] for r in runs]
    median_run = sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]
    return {"rate": statistics.median(rates), "rates": rates, "run": median_run,
            "paints_ok": all(min(r["paints"]) >= r["slices"] for r in runs)}


# --- report -------------------------------------------------------------------------------------

def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(load: dict, scroll: dict, args, view_size, label_source: str, pool_s: float) -> None:
    import pyqtgraph as pg
    import PySide6

    runs = scroll["runs"]
    viewer, overlay, base = (summarize(runs[k]) for k in ("viewer", "overlay", "baseline"))
    print()
    print(f"MedViewer render benchmark: offscreen, PySide6 {PySide6.__version__}, pyqtgraph {pg.__version__}, "
          f"{SLICES}×{SIZE}² int16 CT, widgets {view_size[0]}×{view_size[1]}, repaint={args.repaint}, "
          f"median of {args.repeat}")
    print()
    header = (f"{'scrolling ' + str(SLICES) + ' slices':34s} {'slices/s':>9s} {'ms/slice':>9s} {'vs baseline':>12s} "
              f"{'painted':>12s} {'render ms':>10s} {'draw ms':>8s}   runs (slices/s)")
    print(header)
    print("-" * len(header))
    rows = (("medviewer SliceView", viewer), ("medviewer SliceView + mask overlay", overlay),
            ("pyqtgraph ImageView (baseline)", base))
    for name, s in rows:
        run = s["run"]
        painted = "/".join(str(p) for p in run["paints"])
        render_ms = "+".join(f"{v:.2f}" for v in run["render_ms"])
        draw_ms = "+".join(f"{p - r:.2f}" for p, r in zip(run["paint_ms"], run["render_ms"]))
        print(f"{name:34s} {s['rate']:9.1f} {1000 / s['rate']:9.2f} {s['rate'] / base['rate']:11.2f}× "
              f"{painted + '/' + str(run['slices']):>12s} {render_ms:>10s} {draw_ms:>8s}   "
              + ", ".join(f"{r:.0f}" for r in s["rates"]))
    loss = 1 - overlay["rate"] / viewer["rate"]
    print()
    print(f"  (render ms: pyqtgraph ImageItem.render per slice, array → QImage; draw ms: the rest of "
          f"ImageItem.paint, drawing it scaled; '+' separates image and overlay. Mask: {label_source}.)")
    every = viewer["paints_ok"] and overlay["paints_ok"] and base["paints_ok"]
    checks = scroll["checks"]
    print(f"  every slice painted: {'yes' if every else 'NO'}; new slice on screen after repaint (screen grab): "
          f"viewer {'yes' if checks['viewer'] else 'NO'}, baseline {'yes' if checks['baseline'] else 'NO'}")
    print(f"  goal viewer ≥ {GOAL_SLICES_PER_S:.0f} slices/s: {viewer['rate']:.0f} → {verdict(viewer['rate'] >= GOAL_SLICES_PER_S)};"
          f" with overlay ≥ {GOAL_SLICES_PER_S:.0f}: {overlay['rate']:.0f} → {verdict(overlay['rate'] >= GOAL_SLICES_PER_S)}")
    print(f"  goal overlay within {GOAL_OVERLAY_LOSS:.0%} of no overlay: {loss:+.0%} slower → "
          f"{verdict(loss <= GOAL_OVERLAY_LOSS)}")
    print()
    print(f"loading in MainWindow (open_paths, {SLICES}×{SIZE}² uncompressed; process pool started first in "
          f"{pool_s:.2f} s, page cache warm)")
    print("-" * len(header))

    def seconds(value):
        return f"{value:.2f} s" if value is not None else "never"

    print(f"{'scan result shown (series list)':40s} {seconds(load['scanned'])}")
    print(f"{'first slice: active view has volume':40s} {seconds(load['volume_set'])}")
    print(f"{'first slice painted':40s} {seconds(load['first_paint'])}")
    print(f"{'full load (window.volumes filled)':40s} {seconds(load['full_load'])}")
    if load["volume_set"] is not None:
        print(f"{'first slice / full load':40s} {load['volume_set'] / load['full_load']:.2f}")
    print(f"{'event-loop gap, longest':40s} {1000 * load['longest_gap']:.1f} ms "
          f"(at {load['longest_gap_at']:.2f} s after open)")
    print(f"{'event-loop gap, 99th percentile':40s} {1000 * load['p99_gap']:.1f} ms  "
          f"({load['ticks']} ticks of a {TICK_MS} ms timer; {load['gaps_over_goal']} gaps > {GOAL_STALL_MS:.0f} ms)")
    print(f"  goal longest gap ≤ {GOAL_STALL_MS:.0f} ms: {verdict(load['longest_gap'] * 1000 <= GOAL_STALL_MS)}")
    if load["handlers"]:
        worst = sorted(load["handlers"].items(), key=lambda kv: -kv[1])
        print("  longest single GUI-thread call per kind (a gap can hold several, e.g. showing the first slice "
              "and then painting it): "
              + ", ".join(f"{name} {1000 * s:.1f} ms" for name, s in worst))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="scrolling runs per method (median reported)")
    parser.add_argument("--view", default="800x800", help="widget size WxH for both viewers")
    parser.add_argument("--repaint", choices=("events", "viewport"), default="events",
                        help="how each slice change is painted (see the module docstring)")
    args = parser.parse_args()
    view_size = tuple(int(v) for v in args.view.lower().split("x"))

    sys.path.insert(0, str(ROOT))
    from load_series import ensure_series, series_files

    total_start = time.perf_counter()
    folder = ensure_series(SLICES, SIZE, "raw")
    for name in series_files(folder):  # warm the page cache: time the viewer, not the disk
        with open(name, "rb") as fp:
            fp.read()

    import pyqtgraph as pg

    from medviewer.core import pool
    from medviewer.ui.app import make_app

    pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)  # as medviewer.ui.app.run does
    app = make_app()
    probe = PaintProbe()
    pool_start = time.perf_counter()
    pool.warm_up()
    pool_s = time.perf_counter() - pool_start
    try:
        load = measure_loading(app, probe, folder)
        volume = load["volume"]
        if volume.shape != (SLICES, SIZE, SIZE):
            raise SystemExit(f"unexpected volume shape {volume.shape}")
        labels, label_source = label_map(folder, volume)
        window = load.pop("window")
        window.close()
        app.processEvents()
        scroll = measure_scrolling(app, probe, volume, labels, view_size, args.repeat, args.repaint)
        report(load, scroll, args, view_size, label_source, pool_s)
        load["settings_dir"].cleanup()
    finally:
        pool.shutdown()
    print(f"\n(total {time.perf_counter() - total_start:.0f} s)")


if __name__ == "__main__":  # the process pool's workers import this module: keep its top level light
    main()
