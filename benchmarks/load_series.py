"""Loading a 300-slice 512×512 CT series: MedViewer against the floor, pydicom and SimpleITK.

    python benchmarks/load_series.py [--slices 300] [--size 512] [--repeat 3]

Writes (or reuses) the series under benchmarks/data/, uncompressed and JPEG 2000 lossless,
then times in one run, each method in its own fresh process (so peak memory is its own):

* floor      read every file's bytes, nothing else
* pydicom    one file at a time: dcmread, pixel_array, rescale, stack into a preallocated volume
* simpleitk  ImageSeriesReader over GetGDCMSeriesFileNames (what ITK-based tools use)
* medviewer  medviewer.scan + medviewer.load, with the process pool already started (the
             viewer starts it once, at launch); the pool's start-up is reported separately

and prints median seconds, ratios to SimpleITK and to the floor, bytes per voxel of the
volume, peak resident memory above the process's baseline, and the time until the first
slice was available to a viewer. Absolute times vary between machines and runs; read the
ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data"


def rss_mb() -> float:
    with open("/proc/self/statm") as fp:
        return int(fp.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """High-water mark of resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    with open("/proc/self/status") as fp:
        for line in fp:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def series_files(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.iterdir() if p.suffix == ".dcm")


# --- the methods, each run in a child process ------------------------------------------------

def run_floor(folder: Path) -> dict:
    files = series_files(folder)
    start = time.perf_counter()
    total = 0
    for name in files:
        with open(name, "rb") as fp:
            total += len(fp.read())
    return {"seconds": time.perf_counter() - start, "bytes": total}


def run_pydicom(folder: Path) -> dict:
    import numpy as np
    import pydicom

    files = series_files(folder)
    start = time.perf_counter()
    first_at = None
    datasets = [pydicom.dcmread(name) for name in files]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    volume = np.empty((len(datasets), datasets[0].Rows, datasets[0].Columns), dtype=np.int16)
    for k, ds in enumerate(datasets):
        volume[k] = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        if first_at is None:
            first_at = time.perf_counter() - start
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "first_slice": first_at, "bytes_per_voxel": volume.itemsize,
            "shape": list(volume.shape)}


def run_simpleitk(folder: Path) -> dict:
    import SimpleITK as sitk

    start = time.perf_counter()
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    reader.SetFileNames(names)
    image = reader.Execute()
    array = sitk.GetArrayViewFromImage(image)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "first_slice": None, "bytes_per_voxel": array.itemsize, "shape": list(array.shape),
            "threads": sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}


def run_medviewer(folder: Path) -> dict:
    import medviewer
    from medviewer.core import pool

    start = time.perf_counter()
    pool.warm_up()
    pool_start = time.perf_counter() - start
    start = time.perf_counter()
    result = medviewer.scan(folder)
    scanned = time.perf_counter() - start
    (series,) = result.series
    first = {}

    def on_slice(volume, k):
        first.setdefault("at", time.perf_counter() - start)

    volume = medviewer.load(series, on_slice=on_slice)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "scan": scanned, "load": seconds - scanned, "first_slice": first.get("at"),
            "bytes_per_voxel": volume.voxels.itemsize, "shape": list(volume.shape), "pool_start": pool_start,
            "warnings": volume.warnings, "dtype": str(volume.voxels.dtype)}


METHODS = {"floor": run_floor, "pydicom": run_pydicom, "simpleitk": run_simpleitk, "medviewer": run_medviewer}


def child(method: str, folder: Path, cold: bool) -> None:
    if method == "medviewer":
        from medviewer.core import pool

        pool.warm_up()  # the viewer starts its pool at launch, before any study is opened
    if cold and not drop_page_cache():
        raise SystemExit("--cold needs permission to write /proc/sys/vm/drop_caches (root)")
    baseline = rss_mb()
    result = METHODS[method](folder)
    result["peak_mb"] = peak_rss_mb() - baseline
    print(json.dumps(result))


# --- the driver ------------------------------------------------------------------------------

def ensure_series(slices: int, size: int, compression: str) -> Path:
    """Write the benchmark series once (a synthetic chest CT phantom) and reuse it after."""
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless

    from medviewer.ai.demo_data import write_phantom_dicom
    from medviewer.ai.phantom import PhantomConfig, generate_phantom

    name = f"ct-{slices}x{size}-{compression}"
    study = DATA / name
    done = study / "complete"
    if done.exists():
        return study / "CT"
    DATA.mkdir(parents=True, exist_ok=True)
    print(f"writing {name} (once) ...", file=sys.stderr, flush=True)
    config = PhantomConfig(slices=slices, size=size, slice_thickness_mm=1.0, nodule_count=(2, 2))
    phantom = generate_phantom(config, seed=7)
    syntax = JPEG2000Lossless if compression == "j2k" else ExplicitVRLittleEndian
    folder = write_phantom_dicom(phantom, DATA, study_name=name, transfer_syntax=syntax)
    done.write_text("ok")
    return folder / "CT"


def drop_page_cache() -> bool:
    """Empty the OS page cache so files come from disk (needs root; False where not allowed)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fp:
            fp.write("1\n")
        return True
    except OSError:
        return False


def measure(method: str, folder: Path, repeat: int, cold: bool = False) -> list[dict]:
    runs = []
    for _ in range(repeat):
        command = [sys.executable, __file__, "--child", method, str(folder)]
        if cold:
            command.append("--cold")
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{method} failed:\n{out.stderr}")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return runs


def median(runs: list[dict], key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def report(label: str, folder: Path, repeat: int, cold: bool) -> dict:
    results = {m: measure(m, folder, repeat, cold) for m in METHODS}
    sitk = median(results["simpleitk"], "seconds")
    floor = median(results["floor"], "seconds")
    cache = "files read from disk (page cache dropped before each run)" if cold else "files in the page cache"
    print(f"\n{label}, {cache}: {folder}  ({len(series_files(folder))} files, "
          f"{results['floor'][0]['bytes'] / 2**20:.0f} MiB; median of {repeat} fresh processes)")
    print(f"{'method':<11} {'seconds':>8} {'× SimpleITK':>12} {'× floor':>8} {'first slice':>12} "
          f"{'B/voxel':>8} {'peak MiB':>9}")
    for method, runs in results.items():
        seconds = median(runs, "seconds")
        first = median(runs, "first_slice")
        bpv = runs[0].get("bytes_per_voxel", "")
        first_text = f"{first:.3f}s {first / seconds:4.0%}" if first is not None else "—"
        print(f"{method:<11} {seconds:8.3f} {seconds / sitk:12.2f} {seconds / floor:8.1f} {first_text:>12} "
              f"{bpv!s:>8} {median(runs, 'peak_mb'):9.0f}")
    mv = results["medviewer"]
    print(f"medviewer split: scan {median(mv, 'scan'):.3f}s + load {median(mv, 'load'):.3f}s; "
          f"pool start-up (once per program) {median(mv, 'pool_start'):.3f}s; volume dtype {mv[0]['dtype']}")
    return {m: {key: median(r, key) for key in ("seconds", "first_slice", "peak_mb", "scan", "load")}
            for m, r in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=("raw", "j2k"), help="one of the two series")
    parser.add_argument("--cache", choices=("warm", "cold", "both"), default="both",
                        help="files in the page cache, read from disk (needs root), or both (default)")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.cold)
        return
    caches = {"warm": [False], "cold": [True], "both": [False, True]}[args.cache]
    if True in caches and not drop_page_cache():
        print("cannot drop the page cache here (not root): measuring warm only", file=sys.stderr)
        caches = [False]
    summary = {}
    for compression, label in (("raw", "uncompressed (Explicit VR Little Endian)"), ("j2k", "JPEG 2000 lossless")):
        if args.only and args.only != compression:
            continue
        folder = ensure_series(args.slices, args.size, compression)
        for cold in caches:
            summary[(compression, cold)] = report(label, folder, args.repeat, cold)
    print(f"\ncores: {os.cpu_count()}")
    for (compression, cold), r in summary.items():
        goal = 0.5 if compression == "raw" else 0.6
        mv = r["medviewer"]
        ratio = mv["seconds"] / r["simpleitk"]["seconds"]
        floor = mv["seconds"] / r["floor"]["seconds"]
        first = (mv["first_slice"] or 0) / mv["seconds"]
        first_load = (mv["first_slice"] - mv["scan"]) / mv["load"] if mv.get("load") else float("nan")
        print(f"{compression} {'cold' if cold else 'warm'}: medviewer/SimpleITK {ratio:.2f} (goal ≤ {goal}), "
              f"medviewer/floor {floor:.1f} (goal ≤ 3), first slice at {first:.0%} of scan+load and "
              f"{first_load:.0%} of load (goal ≤ 10%)")

if __name__ == "__main__":
    main()
