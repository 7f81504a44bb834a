"""The assistant's inference engine against a naive loop, on a 300-slice chest CT phantom.

    python benchmarks/infer.py [--slices 300] [--device cpu|cuda|auto] [--threads N] [--repeat 1] [--quick]
                               [--json FILE]

Builds a seeded 300×256² phantom in memory (``phantom_volume``: no files) and times, in this one run and
on each device (default: the CPU, and CUDA too when torch sees a GPU), for each built-in model alone and
for both together:

* engine  ``medviewer.ai.predict(volume, models, device=...)`` with its defaults: batches cropped to
          the body, ``torch.inference_mode``, channels-last, AMP (bfloat16) on CUDA; the classifier's heatmap
          (computed from the forward pass) and the segmenter's mirrored second pass on slices with a
          candidate finding; the findings measured at the end. It runs the whole series.
* naive   what a first loop looks like: for each slice k, ``volume_batches(voxels, spec, [k])``, the
          model called eagerly in float32, contiguous memory format, autograd on (no ``inference_mode``
          or ``no_grad``), softmax/sigmoid, argmax to a label map; for the classifier also
          ``medviewer.ai.explain.grad_cam`` per slice (the same map as the engine's heatmap). To keep
          the run short it is timed on a subset of slices spread over the series (``--naive-slices``,
          default 40) and its per-slice rate is reported; its "s/series" column is that rate
          projected to the whole series.

The machine may be busy with other work, so the two paths are timed during the same seconds: the naive
slices run inside the engine's ``partial`` callback, spread over its batches in proportion to its
progress, and their time is taken off the engine's (``--separate``: one after the other instead).
``--repeat N`` runs each row N times and reports medians.

Rows "no heatmap" run both paths without the classifier's heatmap; the segmenter's "single pass" row
runs the engine without its mirrored pass (``tta=False``), the same work as the naive loop; "whole
slices" runs the engine without the body crop (``crop=False``), to show what the crop is worth. The ratio
column is engine slices/s over naive slices/s for the same work (the engine row above it for the default
rows). Before timing, each path runs one warm-up batch. Before the table, the naive outputs on the
subset are compared with the engine's (probability, heatmap and mask agreement), so both paths are known
to compute the same thing.

On CUDA it also reports the segmenter's network throughput at the engine's batch size (the series
preprocessed and resident on the GPU, forward + softmax + argmax under ``inference_mode``, channels-last
and bfloat16 autocast as the engine runs it, ``torch.cuda.synchronize()`` before the clock stops), and
the same with the label map copied back to the host (whole slices, no body crop: the network's own rate);
goal ≥ 2000 slices/s on an H100.

Goals (issue "slices/s for each built-in model"): the whole 300-slice series classified and segmented
in ≤ 15 s on 2 CPU cores, and ≥ 2× the naive loop. Absolute times depend on the machine and on what
else it runs; read the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SLICES = 300
SIZE = 256
SEED = 7
NAIVE_SLICES = 40
QUICK_SLICES = 40
QUICK_NAIVE = 10
GOAL_SERIES_S = 15.0  # both models, 300 slices, 2 CPU cores
GOAL_SPEEDUP = 2.0
GOAL_GPU_SEG_RATE = 2000.0  # slices/s, segmentation on an H100
GPU_REPEAT = 10  # network passes over the series for the GPU throughput figure


# --- set-up -------------------------------------------------------------------------------------

def make_volume(slices: int, seed: int):
    from medviewer.ai.demo_data import phantom_volume
    from medviewer.ai.phantom import PhantomConfig, generate_phantom

    phantom = generate_phantom(PhantomConfig(slices=slices, size=SIZE, nodule_count=(1, 3)), seed)
    return phantom_volume(phantom), phantom


def builtin_packages() -> dict[str, Path]:
    """The built-in packages by task ("classification", "segmentation")."""
    from medviewer.ai.package import find_packages

    found = {}
    for info in find_packages():
        if info.source == "builtin" and info.manifest is not None:
            found.setdefault(info.manifest.task, info.path)
    missing = {"classification", "segmentation"} - set(found)
    if missing:
        raise SystemExit(f"built-in model package(s) missing for {sorted(missing)} (resources/models)")
    return found


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def subset(slices: int, count: int) -> np.ndarray:
    """``count`` slice indices spread evenly over the series (all of them if fewer)."""
    count = max(1, min(count, slices))
    return np.unique(np.linspace(0, slices - 1, count).round().astype(int))


# --- the two paths ------------------------------------------------------------------------------

class Naive:
    """The first loop anyone writes: one slice at a time, eager float32, autograd on."""

    def __init__(self, loaded, device):
        import torch

        from medviewer.ai.infer import _temperature

        self.device = device
        self.model = loaded.model.to(device).eval().to(memory_format=torch.contiguous_format)
        self.manifest = loaded.manifest
        self.spec = loaded.manifest.input
        self.task = loaded.manifest.task
        self.temperature = _temperature(loaded.manifest)
        self.values = torch.tensor([label.value for label in loaded.manifest.outputs], device=device)

    def slice(self, voxels, k: int, heatmap: bool) -> dict:
        import torch
        import torch.nn.functional as F

        from medviewer.ai.explain import grad_cam

        rows, cols = voxels.shape[1:3]
        x = volume_input(voxels, self.spec, k).to(self.device)
        logits = self.model(x).float()
        out = {}
        if self.task == "classification":
            if logits.ndim == 1:
                logits = logits[:, None]
            count = len(self.manifest.outputs)
            scaled = logits / self.temperature
            p = torch.sigmoid(scaled) if count == 1 else torch.softmax(scaled, 1)
            out["probability"] = p[0, :count].detach().cpu().numpy()
            if heatmap:
                cam = grad_cam(self.model, x, class_index=0, output_size=(rows, cols), temperature=self.temperature)
                out["heatmap"] = cam[0].detach().cpu().numpy()
        else:
            if logits.shape[-2:] != (rows, cols):
                logits = F.interpolate(logits, size=(rows, cols), mode="bilinear", align_corners=False)
            p = torch.softmax(logits, 1)
            out["mask"] = self.values[p.argmax(1)[0]].to(torch.uint8).cpu().numpy()
        return out


def volume_input(voxels, spec, k: int):
    from medviewer.ai.preprocess import volume_batches

    return volume_batches(voxels, spec, [int(k)])


def naive_slices(volume, naives: list[Naive], ks, device, outputs: list[list[dict]], heatmap: bool) -> float:
    """Run the naive loop over slices ``ks``, appending to ``outputs``; the seconds it took."""
    synchronize(device)
    start = time.perf_counter()
    for k in ks:
        for n, naive in enumerate(naives):
            outputs[n].append(naive.slice(volume.voxels, int(k), heatmap))
    synchronize(device)
    return time.perf_counter() - start


def run_pair(volume, models, naives: list[Naive], indices: np.ndarray, device, threads, *, explain: bool = True,
             tta: bool = True, crop: bool = True, heatmap: bool = True, interleave: bool = True
             ) -> tuple[dict, dict]:
    """The engine over the whole series and the naive loop over ``indices``: (engine, naive) results.

    Interleaved (the default), the naive slices run inside the engine's ``partial`` callback, spread
    over its batches in proportion to its progress, and their time is taken off the engine's: both
    paths then share whatever else the machine was doing during the same seconds. Otherwise the naive
    loop runs first, then the engine.
    """
    from medviewer.ai import device as devices
    from medviewer.ai.infer import predict

    outputs: list[list[dict]] = [[] for _ in naives]
    state = {"done": 0, "next": 0, "naive_s": 0.0}
    total = volume.shape[0] * len(models)

    def partial(_prediction, _model_id, batch) -> None:
        state["done"] += len(batch)
        target = -(-len(indices) * state["done"] // total)  # ceil: naive progress keeps up with the engine's
        if target > state["next"]:
            ks = indices[state["next"]:target]
            state["next"] = target
            state["naive_s"] += naive_slices(volume, naives, ks, device, outputs, heatmap)

    if device.type == "cpu":
        devices.configure_threads(threads)  # predict sets it as well: the naive loop runs with the same count
    if not interleave:
        state["naive_s"] = naive_slices(volume, naives, indices, device, outputs, heatmap)
        state["next"] = len(indices)
    synchronize(device)
    start = time.perf_counter()
    prediction = predict(volume, models, device=device, threads=threads, explain=explain, tta=tta, crop=crop,
                         partial=partial if interleave else None)
    synchronize(device)
    inside = state["naive_s"] if interleave else 0.0
    seconds = time.perf_counter() - start - inside
    if state["next"] < len(indices):
        state["naive_s"] += naive_slices(volume, naives, indices[state["next"]:], device, outputs, heatmap)
    passes = sum(v for k, v in prediction.timings.items() if k != "total_s") - inside
    engine = {"seconds": seconds, "slices": volume.shape[0], "prediction": prediction, "network_s": passes,
              "findings_s": prediction.timings.get("total_s", seconds) - passes - inside}
    naive = {"seconds": state["naive_s"], "slices": len(indices), "outputs": outputs}
    return engine, naive


def warm_up(volume, engine_models, naives, device, threads) -> None:
    """One small batch through each path and model (oneDNN/cuDNN pick their kernels on first use)."""
    from dataclasses import replace

    from medviewer.ai.infer import predict

    count = min(8, volume.shape[0])
    part = replace(volume, voxels=volume.voxels[:count], slices=volume.slices[:count])
    predict(part, engine_models, device=device, threads=threads)
    for naive in naives:
        naive.slice(volume.voxels, count // 2, True)
    synchronize(device)


def agreement(engine: dict, timed: dict, naives: list[Naive], indices: np.ndarray) -> dict:
    """How far the naive outputs on the subset are from the engine's (same network, same input)."""
    prediction = engine["prediction"]
    result = {}
    for naive, outs in zip(naives, timed["outputs"]):
        if naive.task == "classification":
            got = np.stack([o["probability"][0] for o in outs])
            result["probability_max_diff"] = float(np.abs(got - prediction.slice_probabilities[indices, 0]).max())
            if prediction.heatmap is not None and "heatmap" in outs[0]:
                cams = np.stack([o["heatmap"] for o in outs])
                result["heatmap_max_diff"] = float(np.abs(cams - prediction.heatmap[indices].astype(np.float32)).max())
        else:
            masks = np.stack([o["mask"] for o in outs])
            result["mask_agreement"] = float((masks == prediction.mask[indices]).mean())
    return result


# --- CUDA: the segmenter's network throughput ----------------------------------------------------

def gpu_segment_rate(volume, loaded, device, repeat: int) -> dict:
    """Slices/s of the segmenter's forward pass at the engine's batch size, as the engine runs it."""
    import torch

    from medviewer.ai.infer import _autocast, _batch_size
    from medviewer.ai.preprocess import volume_batches

    net = loaded.model.to(device).eval().to(memory_format=torch.channels_last)
    spec = loaded.manifest.input
    size = _batch_size(device, loaded.manifest, None)
    slices, rows, cols = volume.shape
    images = volume_batches(volume.voxels, spec, np.arange(slices)).to(device)
    images = images.contiguous(memory_format=torch.channels_last)
    # ``repeat`` passes over the series, in batches of the engine's size (a batch may span two passes).
    order = np.tile(np.arange(slices), repeat)
    batches = [torch.as_tensor(order[s:s + size], device=device) for s in range(0, len(order), size)]
    host = torch.empty((min(size, len(order)), rows, cols), dtype=torch.uint8, pin_memory=True)

    def one(batch, copy: bool) -> None:
        x = images.index_select(0, batch).contiguous(memory_format=torch.channels_last)
        logits = net(x).float()
        if logits.shape[-2:] != (rows, cols):
            logits = torch.nn.functional.interpolate(logits, size=(rows, cols), mode="bilinear",
                                                     align_corners=False)
        labels = torch.softmax(logits, 1).argmax(1).to(torch.uint8)
        if copy:
            host[:len(batch)].copy_(labels, non_blocking=True)

    result = {"batch_size": size, "slices": len(order)}
    with torch.inference_mode(), _autocast(device):
        for copy in (False, True):
            one(batches[0], copy)  # warm-up
            synchronize(device)
            start = time.perf_counter()
            for batch in batches:
                one(batch, copy)
            synchronize(device)
            seconds = time.perf_counter() - start
            result["with_copy_rate" if copy else "network_rate"] = len(order) / seconds
    return result


# --- one device -----------------------------------------------------------------------------------

CASES = (
    # name, tasks, engine options, naive heatmap, the naive row it is compared with
    ("classifier", ("classification",), {}, True),
    ("classifier, no heatmap", ("classification",), {"explain": False}, False),
    ("segmenter", ("segmentation",), {}, None),
    ("segmenter, single pass", ("segmentation",), {"tta": False}, None),
    ("both", ("classification", "segmentation"), {}, True),
    ("both, no heatmap", ("classification", "segmentation"), {"explain": False}, False),
    ("both, whole slices", ("classification", "segmentation"), {"crop": False}, True),
)


def bench_device(device, volume, packages, args) -> dict:
    from medviewer.ai import device as devices
    from medviewer.ai.package import load_package

    threads = args.threads if device.type == "cpu" else None
    if device.type == "cpu":
        devices.configure_threads(threads)
    engine_models = {task: load_package(path, device=device) for task, path in packages.items()}
    naive_models = {task: Naive(load_package(path, device=device), device) for task, path in packages.items()}
    indices = subset(volume.shape[0], args.naive_slices)
    warm_up(volume, list(engine_models.values()), list(naive_models.values()), device, threads)

    rows = []
    checks = {}
    for name, tasks, options, heatmap in CASES:
        naives = [naive_models[t] for t in tasks]
        engines, timed = [], []
        for _ in range(args.repeat):
            engine, naive = run_pair(volume, [engine_models[t] for t in tasks], naives, indices, device, threads,
                                     heatmap=bool(heatmap), interleave=not args.separate, **options)
            engines.append(engine)
            timed.append(naive)
        if name in ("classifier", "segmenter, single pass"):  # the same work on both paths
            checks.update(agreement(engines[0], timed[0], naives, indices))
        engine_s = statistics.median(e["seconds"] for e in engines)
        naive_s = statistics.median(n["seconds"] for n in timed)
        ratio = statistics.median((e["slices"] / e["seconds"]) / (n["slices"] / n["seconds"])
                                  for e, n in zip(engines, timed))
        slices, naive_n = volume.shape[0], len(indices)
        rows.append({"model": name, "path": "engine", "slices": slices, "of": slices, "seconds": engine_s,
                     "rate": slices / engine_s, "series_s": engine_s, "ratio": ratio,
                     "network_s": statistics.median(e["network_s"] for e in engines),
                     "findings_s": statistics.median(e["findings_s"] for e in engines), "options": options,
                     "findings": len(engines[0]["prediction"].findings), "runs": [e["seconds"] for e in engines]})
        rows.append({"model": name, "path": "naive", "slices": naive_n, "of": slices, "seconds": naive_s,
                     "rate": naive_n / naive_s, "series_s": slices * naive_s / naive_n, "ratio": None,
                     "runs": [n["seconds"] for n in timed]})
        print(f"  {devices.device_name(device)}: {name} done", file=sys.stderr, flush=True)
    result = {"device": devices.device_name(device), "type": device.type, "rows": rows, "checks": checks,
              "naive_indices": indices.tolist()}
    if device.type == "cuda":
        import torch

        result["gpu_segment"] = gpu_segment_rate(volume, load_package(packages["segmentation"], device=device),
                                                 device, args.gpu_repeat)
        result["gpu_name"] = torch.cuda.get_device_name(device)
    return result


# --- report ---------------------------------------------------------------------------------------

def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(result: dict, args, cores: int) -> None:
    rows = result["rows"]
    series = rows[0]["of"]
    naive_n = next(r["slices"] for r in rows if r["path"] == "naive")
    print(f"\n{result['device']}: {series}-slice {SIZE}² phantom (seed {args.seed}); naive loop timed on {naive_n} "
          f"slices spread over the series, its s/series projected from that rate")
    header = (f"{'model':<24} {'path':<7} {'slices':>8} {'seconds':>8} {'slices/s':>9} {'s/series':>9} "
              f"{'engine/naive':>13}")
    print(header)
    print("-" * len(header))
    for r in rows:
        slices = f"{r['slices']}" if r["slices"] == r["of"] else f"{r['slices']}/{r['of']}"
        ratio = f"{r['ratio']:12.2f}×" if r["ratio"] is not None else ""
        print(f"{r['model']:<24} {r['path']:<7} {slices:>8} {r['seconds']:8.2f} {r['rate']:9.2f} "
              f"{r['series_s']:9.1f} {ratio:>13}")
    engines = [r for r in rows if r["path"] == "engine"]
    print("engine split (network passes / findings): " + ", ".join(
        f"{r['model']} {r['network_s']:.1f}/{r['findings_s']:.1f} s" for r in engines if "segmenter" in r["model"]
        or r["model"].startswith("both")))
    checks = result["checks"]
    if checks:
        print("naive vs engine on the subset: " + ", ".join(f"{k} {v:.4f}" for k, v in checks.items())
              + " (classifier rows with heatmap; mask against the single-pass engine)")
    both = next(r for r in engines if r["model"] == "both")
    projected = both["seconds"] * SLICES / both["slices"]
    if result["type"] == "cpu":
        scale = "" if both["slices"] == SLICES else f" (projected from {both['slices']} slices)"
        print(f"goal, both models on {SLICES} slices ≤ {GOAL_SERIES_S:.0f} s on 2 CPU cores: {projected:.1f} s"
              f"{scale} on {cores} usable core(s), {result['device']} → {verdict(projected <= GOAL_SERIES_S)}")
    print(f"goal, engine ≥ {GOAL_SPEEDUP:.0f}× the naive loop (both models, with heatmap): {both['ratio']:.2f}× → "
          f"{verdict(both['ratio'] >= GOAL_SPEEDUP)}; per model: " + ", ".join(
              f"{r['model']} {r['ratio']:.2f}×" for r in engines if r["model"] != "both"))
    gpu = result.get("gpu_segment")
    if gpu:
        print(f"segmenter network on {result.get('gpu_name')}: batch {gpu['batch_size']}, {gpu['slices']} slices: "
              f"{gpu['network_rate']:.0f} slices/s on the device, {gpu['with_copy_rate']:.0f} slices/s with the "
              f"label map copied to the host; whole engine row: "
              f"{next(r['rate'] for r in engines if r['model'] == 'segmenter'):.0f} slices/s")
        print(f"goal, segmentation ≥ {GOAL_GPU_SEG_RATE:.0f} slices/s on an H100: {gpu['network_rate']:.0f} → "
              f"{verdict(gpu['network_rate'] >= GOAL_GPU_SEG_RATE)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=None, help=f"slices in the series (default {SLICES})")
    parser.add_argument("--naive-slices", type=int, default=None,
                        help=f"slices the naive loop is timed on (default {NAIVE_SLICES})")
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default=None,
                        help="one device (auto: CUDA, then MPS, then the CPU); default: the CPU, and CUDA too "
                             "when available")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: the usable cores)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each row (medians reported; the ratio is the median of the paired ratios)")
    parser.add_argument("--separate", action="store_true",
                        help="run the naive loop before the engine instead of interleaved with its batches")
    parser.add_argument("--seed", type=int, default=SEED, help="phantom seed")
    parser.add_argument("--gpu-repeat", type=int, default=GPU_REPEAT,
                        help="passes over the series for the CUDA segmentation throughput")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_SLICES} slices, naive loop on {QUICK_NAIVE} (a smoke test, not the goal)")
    parser.add_argument("--json", type=Path, default=None, help="also save the results to this file")
    args = parser.parse_args()
    args.slices = args.slices or (QUICK_SLICES if args.quick else SLICES)
    args.naive_slices = args.naive_slices or (QUICK_NAIVE if args.quick else NAIVE_SLICES)

    import torch

    from medviewer.ai import device as devices

    if args.device is None:
        targets = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    else:
        targets = [devices.select_device(args.device)]
    total_start = time.perf_counter()
    volume, phantom = make_volume(args.slices, args.seed)
    packages = builtin_packages()
    cores = devices.usable_cores()
    results = []
    for target in targets:
        result = bench_device(target, volume, packages, args)
        results.append(result)
        report(result, args, cores)
    print(f"\n(torch {torch.__version__}, {cores} usable core(s), {torch.get_num_threads()} torch thread(s); "
          f"{len(phantom.nodules)} planted nodule(s); total {time.perf_counter() - total_start:.0f} s)")
    if args.json:
        payload = {"slices": args.slices, "naive_slices": args.naive_slices, "seed": args.seed,
                   "size": SIZE, "torch": torch.__version__, "python": platform.python_version(),
                   "cores": cores, "results": results,
                   "goals": {"series_s": GOAL_SERIES_S, "speedup": GOAL_SPEEDUP, "gpu_seg_rate": GOAL_GPU_SEG_RATE}}
        args.json.write_text(json.dumps(payload, indent=2, default=float) + "\n")
        print(f"saved {args.json}")


if __name__ == "__main__":
    main()
