"""The viewer while the assistant runs: event-loop stalls, and how fast Cancel stops a run.

    python benchmarks/assistant_ui.py [--slices 120] [--cancels 5] [--threads N] [--heatmap] [--quick]
                                      [--no-cli] [--json FILE]

Runs offscreen (it sets QT_QPA_PLATFORM=offscreen itself). Writes a seeded chest CT phantom as a DICOM
study into a temporary folder, opens it in the real main window (``MainWindow.open_paths``) and then:

* stall    starts the built-in models as the Run button does (``assistant.run_button.click()``; the
           device is the panel's, "auto" unless ``--device``) and, until the panel has the finished
           prediction, a 5 ms ``QTimer`` records the gaps between its ticks on the GUI thread and
           scrolls the active viewer one slice per tick (back and forth, as a user holding the arrow
           key), so the per-batch overlay updates and their repaints are part of what is measured.
           Reports the longest gap, the 99th percentile and the mean, against the same timer and
           scrolling for an idle period of equal length afterwards (the baseline: the finished
           overlays shown, no run), and the run's total time. The longest GUI-thread calls per kind
           (the partial-result handler and its parts, progress, paints) and what overlapped the
           longest gaps are listed, so a missed goal points at its cause.
* cli      the same study and the same model packages through the command line, as a user runs it
           (``python -m medviewer predict FOLDER --model P ... --device D``, a subprocess, while the window
           stays open and idle): its engine time against the viewer's, printed as the ratio GUI / CLI (the
           viewer's engine time, and its time from the Run click to the finished prediction in the panel).
           Two further viewer runs follow, timed against the same CLI run: one with the view scrolled 30
           slices a second (a held arrow key) and one with the view still; each with its longest stall.
* cancel   ``--cancels`` times: starts a run (the cached prediction dropped first, so it really runs),
           waits until the first partial result has arrived (later repetitions wait for a further
           part of the run, so the click lands in different batches and in both models), clicks
           Cancel as a user does (``assistant.cancel_button.click()``) and measures the time until
           the panel reports the run ended (the window's cancelled handler has returned: the panel
           shows no run, its Cancel button is disabled) and until the worker's thread has stopped.
           The bound to compare with is the engine's time per batch, taken in the worker from the
           engine's own ``partial`` calls (its cancel token is checked between batches).

For each of the longest gaps the GUI thread's own time on a CPU and its time waiting for one (Linux
schedstat) are given: the rest of the gap it was blocked (the GIL held by the worker, or a lock).
``--threads N`` runs the engine with N torch threads instead of the viewer's choice (every usable core, as the
command line; the worker runs at a lower priority), to see what leaving a core to the GUI thread does.

Goals (issues 5 and 16): the event loop stalls ≤ 50 ms while the assistant runs; Cancel stops within 1 s; the
viewer's run takes at most 1.3× the command line's on the same study.
Absolute times depend on the machine and on what else it runs; the idle baseline is measured in the
same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before any Qt import

SLICES = 120
QUICK_SLICES = 32
SIZE = 256
SEED = 0
CANCELS = 5
TICK_MS = 5
GOAL_STALL_MS = 50.0
GOAL_CANCEL_S = 1.0
GOAL_CLI_RATIO = 1.3
PACED_HZ = 30.0
RUN_TIMEOUT_S = 900.0


def thread_schedstat():
    """A reader of this thread's (on-CPU ns, waiting-for-a-CPU ns) from Linux's schedstat, or None."""
    path = f"/proc/self/task/{threading.get_native_id()}/schedstat"
    try:
        with open(path) as fp:
            fp.read()
    except OSError:
        return None

    def read() -> tuple[int, int]:
        with open(path) as fp:
            on_cpu, waiting, _slices = fp.read().split()
        return int(on_cpu), int(waiting)

    return read


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


class Recorder:
    """Times GUI-thread calls by kind (instance attributes wrapped, and paints patched on the class)."""

    def __init__(self) -> None:
        import pyqtgraph as pg

        self.events: list[tuple[str, float, float]] = []  # (kind, start, end)
        self.longest: dict[str, float] = {}
        self.recording = False
        self.in_partial = False
        paint = pg.GraphicsView.paintEvent
        recorder = self

        def timed_paint(view, event):
            start = time.perf_counter()
            try:
                return paint(view, event)
            finally:
                recorder.add(f"paint {type(view).__name__}", start, time.perf_counter())

        pg.GraphicsView.paintEvent = timed_paint

    def add(self, kind: str, start: float, end: float) -> None:
        if not self.recording:
            return
        self.events.append((kind, start, end))
        self.longest[kind] = max(self.longest.get(kind, 0.0), end - start)

    def wrap(self, owner, name: str, kind: str | None = None, after=None) -> None:
        """Replace ``owner.name`` by a timed call (looked up by the window when it starts a worker)."""
        original = getattr(owner, name)
        recorder = self
        label = kind or name

        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                end = time.perf_counter()
                recorder.add(label, start, end)
                if after is not None:
                    after(end, *args)

        setattr(owner, name, call)

    def overlapping(self, start: float, end: float) -> list[tuple[str, float]]:
        found = [(kind, e - s) for kind, s, e in self.events if s < end and e > start]
        return sorted(found, key=lambda kv: -kv[1])


class EngineTrace:
    """Wraps ``medviewer.ai.infer.predict`` so each engine batch is time-stamped in the worker thread."""

    def __init__(self, threads: int | None = None) -> None:
        import medviewer.ai.infer as infer

        self.batches: list[tuple[str, int, float]] = []  # (model id, slices, time of its partial call)
        self.started: list[float] = []
        original = infer.predict
        trace = self

        def traced(volume, models, **kwargs):
            partial = kwargs.get("partial")

            def stamped(prediction, model_id, indices):
                trace.batches.append((model_id, len(indices), time.perf_counter()))
                if partial is not None:
                    partial(prediction, model_id, indices)

            kwargs["partial"] = stamped
            if threads is not None:
                kwargs["threads"] = threads
            trace.started.append(time.perf_counter())
            return original(volume, models, **kwargs)

        infer.predict = traced

    def reset(self) -> None:
        self.batches.clear()
        self.started.clear()

    def batch_times(self) -> dict[str, list[float]]:
        """Seconds per batch by model (the first batch of a run counted from the run's start)."""
        times: dict[str, list[float]] = {}
        previous = self.started[0] if self.started else None
        for model_id, _n, stamp in self.batches:
            if previous is not None:
                times.setdefault(model_id, []).append(stamp - previous)
            previous = stamp
        return times


class Driver:
    """Runs the Qt event loop with a 5 ms timer until a condition holds; records the ticks."""

    def __init__(self, app) -> None:
        from PySide6.QtCore import QEventLoop, Qt, QTimer

        self.app = app
        self.loop = QEventLoop()
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.deadline = QTimer()
        self.deadline.setSingleShot(True)
        self.deadline.timeout.connect(self.loop.quit)
        self.ticks: list[float] = []
        self.sched: list[tuple[int, int]] = []  # the GUI thread's schedstat at each tick
        self.schedstat = thread_schedstat()
        self.on_tick = None
        self.until = None
        self.timed_out = False

    def _tick(self) -> None:
        now = time.perf_counter()
        self.ticks.append(now)
        if self.schedstat is not None:
            self.sched.append(self.schedstat())
        if self.on_tick is not None:
            self.on_tick(now)
        if self.until is not None and self.until():
            self.loop.quit()

    def run(self, until, on_tick=None, timeout_s: float = RUN_TIMEOUT_S, start=None) -> float:
        """Start the timer, call ``start()``, run the loop until ``until()``; the start time."""
        self.ticks = []
        self.sched = [self.schedstat()] if self.schedstat is not None else []
        self.on_tick, self.until = on_tick, until
        self.timed_out = False
        self.deadline.start(int(timeout_s * 1000))
        self.timer.start()
        begin = time.perf_counter()
        if start is not None:
            start()
        if not until():
            self.loop.exec()
        self.timer.stop()
        self.timed_out = not self.deadline.isActive()
        self.deadline.stop()
        return begin


def gap_stats(begin: float, end: float, ticks: list[float], sched: list[tuple[int, int]]) -> dict:
    """Gaps between ticks from ``begin`` to ``end``; for the longest, the GUI thread's time on a CPU and
    waiting for one (``sched``: its schedstat at ``begin`` and at each tick; the rest of a gap it was
    blocked: waiting for the GIL or a lock, or idle until the timer was due)."""
    kept = [t for t in ticks if t <= end]
    edges = [begin] + kept + [end]
    gaps = []
    for n, (a, b) in enumerate(zip(edges, edges[1:])):
        cpu = wait = None
        if sched and n + 1 < len(sched) and n + 1 <= len(kept):
            cpu = (sched[n + 1][0] - sched[n][0]) / 1e9
            wait = (sched[n + 1][1] - sched[n][1]) / 1e9
        gaps.append((b - a, a - begin, a, b, cpu, wait))
    values = [g[0] for g in gaps]
    worst = sorted(gaps, key=lambda g: -g[0])[:3]
    return {"max_ms": 1000 * max(values), "p99_ms": 1000 * percentile(values, 0.99),
            "mean_ms": 1000 * statistics.fmean(values), "over_goal": sum(v * 1000 > GOAL_STALL_MS for v in values),
            "ticks": len(values), "seconds": end - begin, "worst": worst}


class Scroll:
    """One slice per tick through the active view, back and forth."""

    def __init__(self, view, hz: float = 0.0) -> None:
        self.view = view
        self.step = 1
        self.every_s = 0.0 if not hz else 1.0 / hz
        self.last = float("-inf")

    @classmethod
    def paced(cls, view, hz: float) -> Scroll:
        """One slice ``hz`` times a second (a held arrow key repeats about 30 times a second)."""
        scroll = cls(view)
        scroll.every_s = 1.0 / hz
        return scroll

    def __call__(self, now: float) -> None:
        view = self.view
        if view.volume is None or view.count < 2:
            return
        if now - self.last < self.every_s:
            return
        self.last = now
        if not 0 <= view.index + self.step < view.count:
            self.step = -self.step
        view.step_slice(self.step)


# --- set-up -----------------------------------------------------------------------------------

def write_study(folder: Path, slices: int) -> Path:
    from medviewer.ai.demo_data import write_phantom_dicom
    from medviewer.ai.phantom import PhantomConfig, generate_phantom

    config = PhantomConfig(slices=slices, size=SIZE, nodule_count=(1, 3))
    phantom = generate_phantom(config, SEED)
    return write_phantom_dicom(phantom, folder, study_name="assistant-bench") / "CT"


def open_window(app, folder: Path, settings_dir: Path, size: tuple[int, int]):
    from PySide6.QtCore import QSettings

    from medviewer.ui.main_window import MainWindow

    settings = QSettings(str(settings_dir / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings)
    window.resize(*size)
    window.show()
    driver = Driver(app)
    driver.run(lambda: bool(window.volumes) and not window.tasks.running, timeout_s=120,
               start=lambda: window.open_paths([str(folder)]))
    if not window.volumes:
        raise SystemExit(f"the series did not open (last error: {window.last_error!r})")
    return window, driver


# --- stall ------------------------------------------------------------------------------------

def measure_stall(app, window, driver: Driver, recorder: Recorder, trace: EngineTrace, device: str,
                  scrolling: bool = True) -> dict:
    panel = window.assistant
    view = window.active
    if not panel.selected_paths():
        raise SystemExit("no model package is checked in the assistant panel (built-in packages missing?)")
    panel.device_combo.setCurrentText(device)
    state: dict = {"finished_at": None, "partials": [], "emitted": 0}

    def finished(end, *_args):
        state["finished_at"] = end

    def partial_arrived(end, message):
        state["partials"].append((end, len(message[3])))

    recorder.wrap(window, "_assistant_partial", after=partial_arrived)
    recorder.wrap(window, "_assistant_finished", after=finished)
    recorder.wrap(window, "_assistant_cancelled")
    recorder.wrap(panel, "set_progress", "assistant.set_progress")
    recorder.wrap(panel, "refresh", "assistant.refresh")
    recorder.wrap(panel, "show_prediction", "assistant.show_prediction")
    recorder.wrap(window, "_attach_prediction")
    for frame in window.grid.frames:
        recorder.wrap(frame.view, "render", "SliceView.render")

    trace.reset()
    recorder.recording = True
    scroll = Scroll(view) if scrolling else None
    begin = driver.run(lambda: state["finished_at"] is not None, on_tick=scroll,
                       start=panel.run_button.click)
    end = state["finished_at"] or time.perf_counter()
    recorder.recording = False
    if driver.timed_out or state["finished_at"] is None:
        raise SystemExit(f"the assistant did not finish in {RUN_TIMEOUT_S:.0f} s (last error: {window.last_error!r})")
    during = gap_stats(begin, end, driver.ticks, driver.sched)
    during["causes"] = [recorder.overlapping(g[2], g[3])[:4] for g in during["worst"]]
    handlers = dict(recorder.longest)
    events = list(recorder.events)
    batches = trace.batch_times()
    emitted = [stamp for _m, _n, stamp in trace.batches]
    arrived = [t for t, _n in state["partials"]]
    latency = [a - e for e, a in zip(emitted, arrived)]

    # The baseline: the same timer and scrolling for as long, with the finished overlays, no run.
    recorder.events, recorder.longest = [], {}
    recorder.recording = True
    length = end - begin
    stop_at = time.perf_counter() + length
    idle_begin = driver.run(lambda: time.perf_counter() >= stop_at, on_tick=scroll)
    idle_end = time.perf_counter()
    recorder.recording = False
    idle = gap_stats(idle_begin, idle_end, driver.ticks, driver.sched)
    idle["causes"] = [recorder.overlapping(g[2], g[3])[:4] for g in idle["worst"]]
    idle_handlers = dict(recorder.longest)
    recorder.events, recorder.longest = [], {}

    partial_calls = [e - s for kind, s, e in events if kind == "_assistant_partial"]
    return {"run_s": length, "during": during, "idle": idle, "handlers": handlers, "idle_handlers": idle_handlers,
            "batches": batches, "signal_latency_s": latency, "partial_calls_s": partial_calls,
            "prediction": next(iter(window.predictions.values()), None)}


def measure_paced_run(window, driver: Driver, hz: float) -> dict:
    """A further run (the cached prediction dropped) with the view scrolled ``hz`` slices a second."""
    panel = window.assistant
    window.predictions.clear()
    done = {"at": None}
    original = window._assistant_finished

    def finished(result):
        try:
            return original(result)
        finally:
            done["at"] = time.perf_counter()

    window._assistant_finished = finished
    try:
        # Until its thread has stopped too: a late end of this run must not be taken for a later one's.
        begin = driver.run(lambda: done["at"] is not None and not window.tasks.running,
                           on_tick=Scroll.paced(window.active, hz) if hz else None, start=panel.run_button.click)
    finally:
        window._assistant_finished = original
    if done["at"] is None:
        raise SystemExit(f"the paced run did not finish (last error: {window.last_error!r})")
    prediction = next(iter(window.predictions.values()))
    gaps = gap_stats(begin, done["at"], driver.ticks, driver.sched)
    return {"hz": hz, "run_s": done["at"] - begin, "engine_s": prediction.timings.get("total_s", float("nan")),
            "max_ms": gaps["max_ms"], "p99_ms": gaps["p99_ms"]}


# --- cli --------------------------------------------------------------------------------------

CLI_LINE = re.compile(r": (\d+) slices on (.+), ([0-9.]+) s$", re.MULTILINE)


def measure_cli(folder: Path, models: list[str], device: str, out: Path) -> dict:
    """``medviewer predict`` on the same study with the same packages, in a subprocess: its engine time."""
    command = [sys.executable, "-m", "medviewer", "predict", str(folder), "--out", str(out), "--device", device,
               "--force"]
    for model in models:
        command += ["--model", model]
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    wall = time.perf_counter() - started
    match = CLI_LINE.search(run.stdout)
    if run.returncode != 0 or match is None:
        raise SystemExit(f"medviewer predict failed (exit {run.returncode}): {(run.stderr or run.stdout)[-500:]}")
    return {"engine_s": float(match.group(3)), "wall_s": wall, "device": match.group(2),
            "slices": int(match.group(1)), "command": " ".join(command[1:4]) + " …"}


def report_cli(stall: dict, cli: dict) -> None:
    prediction = stall["prediction"]
    gui_engine = (getattr(prediction, "timings", {}) or {}).get("total_s", float("nan"))
    ratio = gui_engine / cli["engine_s"]
    click_ratio = stall["run_s"] / cli["engine_s"]
    print(f"\nviewer against the command line ({cli['command']}, same study, same {len(prediction.models)} models)")
    print(f"  viewer: engine {gui_engine:.2f} s on {prediction.device}; Run click → finished in the panel "
          f"{stall['run_s']:.2f} s")
    print(f"  CLI:    engine {cli['engine_s']:.2f} s on {cli['device']}; whole process {cli['wall_s']:.2f} s")
    print(f"  ratio GUI/CLI: engine {ratio:.2f}, click-to-panel {click_ratio:.2f} (goal ≤ {GOAL_CLI_RATIO}) → "
          f"{verdict(ratio <= GOAL_CLI_RATIO)}; longest stall while running {stall['during']['max_ms']:.0f} ms, "
          f"99th percentile {stall['during']['p99_ms']:.0f} ms (goal ≤ {GOAL_STALL_MS:.0f} ms) → "
          f"{verdict(stall['during']['max_ms'] <= GOAL_STALL_MS)}")
    cli["ratio_engine"], cli["ratio_click"] = ratio, click_ratio
    for paced in cli.get("paced", []):
        paced["ratio_engine"] = paced["engine_s"] / cli["engine_s"]
        how = f"scrolled {paced['hz']:.0f} slices/s (a held arrow key)" if paced["hz"] else "the view still"
        print(f"  a further viewer run with {how}: engine {paced['engine_s']:.2f} s, ratio GUI/CLI "
              f"{paced['ratio_engine']:.2f} → {verdict(paced['ratio_engine'] <= GOAL_CLI_RATIO)}; longest stall "
              f"{paced['max_ms']:.0f} ms, 99th percentile {paced['p99_ms']:.0f} ms → "
              f"{verdict(paced['max_ms'] <= GOAL_STALL_MS)}")


# --- cancel -----------------------------------------------------------------------------------

def cancel_once(window, driver: Driver, trace: EngineTrace, fraction: float, total_slices: int) -> dict:
    """One run, cancelled by a click once the first partial result (and ``fraction`` of the slices) arrived."""
    panel = window.assistant
    window.predictions.clear()  # a cached prediction would be shown instead of running again
    state: dict = {"clicked": None, "panel_idle": None, "thread_ended": None, "finished": False, "done": 0}
    original_partial = window._assistant_partial
    original_cancelled = window._assistant_cancelled
    original_finished = window._assistant_finished

    def partial(message):
        state["done"] += len(message[3])
        return original_partial(message)

    def cancelled():
        try:
            return original_cancelled()
        finally:
            state["panel_idle"] = time.perf_counter()

    def finished(result):
        state["finished"] = True
        try:
            return original_finished(result)
        finally:
            state["panel_idle"] = time.perf_counter()

    def ended(_worker):
        state["thread_ended"] = time.perf_counter()

    def tick(_now):
        if state["clicked"] is None and state["done"] > 0 and state["done"] >= fraction * total_slices:
            state["clicked"] = time.perf_counter()
            state["at_slices"] = state["done"]
            state["model"] = trace.batches[-1][0] if trace.batches else ""
            panel.cancel_button.click()

    window._assistant_partial, window._assistant_cancelled = partial, cancelled
    window._assistant_finished = finished
    window.tasks.ended.connect(ended)
    trace.reset()
    try:
        driver.run(lambda: state["panel_idle"] is not None and state["thread_ended"] is not None, on_tick=tick,
                   timeout_s=RUN_TIMEOUT_S, start=panel.run_button.click)
    finally:
        window.tasks.ended.disconnect(ended)
        window._assistant_partial, window._assistant_cancelled = original_partial, original_cancelled
        window._assistant_finished = original_finished
    if state["clicked"] is None or state["panel_idle"] is None or state["thread_ended"] is None:
        raise SystemExit(f"a cancelled run did not end (last error: {window.last_error!r})")
    view = window.active
    batches = trace.batch_times()
    return {
        "at_slices": state["at_slices"], "of": total_slices, "model": state["model"],
        "panel_s": state["panel_idle"] - state["clicked"],
        "thread_s": state["thread_ended"] - state["clicked"],
        "finished_instead": state["finished"],
        "cleared": view.mask is None and view.heatmap is None and panel.prediction is None
        and not panel.cancel_button.isEnabled(),
        "max_batch_s": max((t for v in batches.values() for t in v), default=float("nan")),
    }


def measure_cancel(window, driver: Driver, trace: EngineTrace, repeats: int) -> list[dict]:
    total_slices = window.active.volume.shape[0] * len(window.assistant.selected_paths())
    # The first click right after the first partial result, the others further into the run (both models).
    return [cancel_once(window, driver, trace, rep / max(repeats, 1) * 0.8, total_slices) for rep in range(repeats)]


# --- report -----------------------------------------------------------------------------------

def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def describe(causes: list[tuple[str, float]]) -> str:
    return ", ".join(f"{kind} {1000 * s:.0f} ms" for kind, s in causes) or "no timed GUI call"


def describe_gap(gap: tuple) -> str:
    length, at, _a, _b, cpu, wait = gap
    text = f"{1000 * length:.0f} ms at {at:.2f} s"
    if cpu is not None:
        text += (f" (GUI thread on a CPU {1000 * cpu:.0f} ms, waiting for a CPU {1000 * wait:.0f} ms, "
                 f"blocked {1000 * max(length - cpu - wait, 0):.0f} ms)")
    return text


def report(stall: dict, cancels: list[dict], args, slices: int, cores: int) -> None:
    during, idle = stall["during"], stall["idle"]
    prediction = stall["prediction"]
    device = getattr(prediction, "device", "?")
    print(f"\nassistant on a {slices}-slice {SIZE}² CT phantom in MainWindow, both built-in models, {device}; "
          f"{cores} usable core(s); the active view scrolled one slice per {TICK_MS} ms tick"
          + ("; heatmap shown" if args.heatmap else ""))
    header = f"{'event-loop gap':<28} {'assistant running':>18} {'idle (baseline)':>16} {'goal':>10} {'':>8}"
    print(header)
    print("-" * len(header))
    ok = during["max_ms"] <= GOAL_STALL_MS
    print(f"{'longest':<28} {during['max_ms']:15.1f} ms {idle['max_ms']:13.1f} ms {'≤ 50 ms':>10} {verdict(ok):>8}")
    print(f"{'99th percentile':<28} {during['p99_ms']:15.1f} ms {idle['p99_ms']:13.1f} ms")
    print(f"{'mean':<28} {during['mean_ms']:15.1f} ms {idle['mean_ms']:13.1f} ms")
    print(f"{'gaps > 50 ms':<28} {during['over_goal']:18d} {idle['over_goal']:16d}")
    print(f"{'ticks':<28} {during['ticks']:18d} {idle['ticks']:16d}")
    print(f"{'seconds':<28} {during['seconds']:18.1f} {idle['seconds']:16.1f}")
    timings = getattr(prediction, "timings", {}) or {}
    print(f"run: {stall['run_s']:.1f} s from the Run click to the finished prediction in the panel "
          f"(engine {timings.get('total_s', float('nan')):.1f} s: "
          + ", ".join(f"{k[:-2]} {v:.1f} s" for k, v in timings.items() if k != "total_s") + ")")
    for n, (gap, causes) in enumerate(zip(during["worst"], during["causes"]), start=1):
        print(f"  gap {n} while running: {describe_gap(gap)} — {describe(causes)}")
    for gap, causes in zip(idle["worst"][:1], idle["causes"][:1]):
        print(f"  longest idle gap: {describe_gap(gap)} — {describe(causes)}")
    worst = sorted(stall["handlers"].items(), key=lambda kv: -kv[1])
    print("  longest GUI-thread call per kind while running: "
          + ", ".join(f"{name} {1000 * s:.1f} ms" for name, s in worst))
    calls = stall["partial_calls_s"]
    if calls:
        print(f"  partial results: {len(calls)}, handler median {1000 * statistics.median(calls):.1f} ms, "
              f"max {1000 * max(calls):.1f} ms; worker→GUI delivery median "
              f"{1000 * statistics.median(stall['signal_latency_s']):.1f} ms, "
              f"max {1000 * max(stall['signal_latency_s']):.1f} ms")

    print(f"\ncancel ({len(cancels)} runs; Cancel clicked after the first partial result, then further into the run)")
    header = f"{'run':<4} {'clicked at':>16} {'model':<26} {'panel idle':>11} {'thread ended':>13} {'cleared':>8}"
    print(header)
    print("-" * len(header))
    for n, c in enumerate(cancels, start=1):
        at = f"{c['at_slices']}/{c['of']} slices"
        note = " (finished first)" if c["finished_instead"] else ""
        print(f"{n:<4} {at:>16} {str(c['model']):<26} {1000 * c['panel_s']:8.0f} ms {1000 * c['thread_s']:10.0f} ms "
              f"{'yes' if c['cleared'] else 'NO':>8}{note}")
    panel = [c["panel_s"] for c in cancels]
    batch = stall["batches"]
    all_batches = [t for v in batch.values() for t in v]
    print(f"click → panel reports the run ended: max {1000 * max(panel):.0f} ms, median "
          f"{1000 * statistics.median(panel):.0f} ms")
    if all_batches:
        print("engine time per batch (the bound: cancel is checked between batches): "
              + ", ".join(f"{model} median {1000 * statistics.median(v):.0f} ms, max {1000 * max(v):.0f} ms"
                          for model, v in batch.items()))
    print(f"\ngoals: event-loop stall ≤ {GOAL_STALL_MS:.0f} ms while running: {during['max_ms']:.0f} ms → "
          f"{verdict(during['max_ms'] <= GOAL_STALL_MS)}; Cancel stops within {GOAL_CANCEL_S:.0f} s: "
          f"{max(panel):.2f} s → {verdict(max(panel) <= GOAL_CANCEL_S)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=None, help=f"slices in the study (default {SLICES})")
    parser.add_argument("--cancels", type=int, default=CANCELS, help="cancel repetitions")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="the panel's device choice (default auto, as the panel starts)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for the runs (default: the viewer's choice, every usable core)")
    parser.add_argument("--no-scroll", action="store_true", help="leave the view still while the assistant runs")
    parser.add_argument("--nice", type=int, default=None,
                        help="how much lower the worker's priority is (default: the viewer's, "
                             "medviewer.ai.device.BACKGROUND_NICE; 0: the same as the GUI thread)")
    parser.add_argument("--no-cli", action="store_true", help="skip the command-line run (no GUI/CLI ratio)")
    parser.add_argument("--heatmap", action="store_true", help="show the Grad-CAM heatmap while scrolling")
    parser.add_argument("--window", default="1280x800", help="main window size WxH")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_SLICES} slices, 3 cancels (a smoke test)")
    parser.add_argument("--json", type=Path, default=None, help="also save the results to this file")
    args = parser.parse_args()
    slices = args.slices or (QUICK_SLICES if args.quick else SLICES)
    cancels = min(args.cancels, 3) if args.quick else args.cancels
    size = tuple(int(v) for v in args.window.lower().split("x"))

    import pyqtgraph as pg

    from medviewer.ai.device import usable_cores
    from medviewer.core import pool
    from medviewer.ui.app import make_app

    if args.nice is not None:
        from medviewer.ai import device as devices

        devices.background_priority.__defaults__ = (args.nice,)
    total_start = time.perf_counter()
    pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)  # as medviewer.ui.app.run does
    app = make_app()
    recorder = Recorder()
    trace = EngineTrace(args.threads)
    pool.warm_up()
    with tempfile.TemporaryDirectory(prefix="medviewer-assistant-bench-") as tmp:
        folder = write_study(Path(tmp), slices)
        window, driver = open_window(app, folder, Path(tmp), size)
        try:
            if args.heatmap:
                window.assistant.heatmap_box.setChecked(True)
            stall = measure_stall(app, window, driver, recorder, trace, args.device, scrolling=not args.no_scroll)
            cli = None
            if not args.no_cli:
                cli = measure_cli(folder, window.assistant.selected_paths(), args.device, Path(tmp) / "cli-out")
                cli["paced"] = [measure_paced_run(window, driver, hz) for hz in (PACED_HZ, 0.0)]
            cancel = measure_cancel(window, driver, trace, cancels)
            report(stall, cancel, args, slices, usable_cores())
            if cli is not None:
                stall["cli"] = cli
                report_cli(stall, cli)
        finally:
            window.tasks.shutdown()
            window.close()
            app.processEvents()
            pool.shutdown()
    print(f"\n(total {time.perf_counter() - total_start:.0f} s)")
    if args.json:
        stall = dict(stall)
        prediction = stall.pop("prediction")
        for part in ("during", "idle"):
            stall[part] = {k: v for k, v in stall[part].items() if k != "worst"} | {
                "worst": [{"gap_ms": 1000 * g[0], "at_s": g[1], "on_cpu_ms": g[4] and 1000 * g[4],
                           "waiting_for_cpu_ms": g[5] and 1000 * g[5]} for g in stall[part]["worst"]]}
        payload = {"slices": slices, "size": SIZE, "seed": SEED, "cores": usable_cores(),
                   "device": getattr(prediction, "device", None), "heatmap": args.heatmap,
                   "goals": {"stall_ms": GOAL_STALL_MS, "cancel_s": GOAL_CANCEL_S},
                   "goal_cli_ratio": GOAL_CLI_RATIO, "stall": stall, "cancel": cancel}
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"saved {args.json}")


if __name__ == "__main__":  # the process pool's workers import this module: keep its top level light
    main()
