"""Retrieving a 500-instance series from a real Orthanc: MedViewer's C-GET and C-MOVE against dcmtk's getscu and
movescu in the same run.

    python benchmarks/pacs_retrieve.py [--instances 500] [--rounds 3] [--json FILE]

Starts Orthanc on 127.0.0.1 (tests/net/orthanc.py), stores a generated CT series of ``--instances``
slices (512 x 512, 16-bit) with MedViewer's C-STORE, then for each round retrieves the whole series four
ways into fresh folders: ``medviewer.net.dimse.get``, ``medviewer.net.dimse.move`` (to our own listener),
``getscu`` and ``movescu`` (dcmtk, the baseline; /usr/bin, not the pynetdicom shims of the same names).
Prints instances/s per method (median of the rounds) and the ratio to the dcmtk tool doing the same
operation; dcmtk runs with its largest receive PDU (128 kB). Absolute figures depend on the machine; the ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medviewer.net import dimse  # noqa: E402
from medviewer.net.nodes import NetSettings, Node  # noqa: E402
from tests.net.orthanc import start_orthanc, stop_orthanc  # noqa: E402

GETSCU = "/usr/bin/getscu"
MOVESCU = "/usr/bin/movescu"


def make_series(folder: Path, count: int, size: int = 512) -> tuple[str, list[Path]]:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    source.Rows = source.Columns = size
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(1)
    base = rng.integers(-1000, 1500, (size, size), dtype=np.int16)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        ds = source.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber, ds.ImagePositionPatient = k + 1, [0, 0, float(k)]
        ds.PixelData = (base + k).astype(np.int16).tobytes()
        path = folder / f"{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return study, paths


def _count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    for tool in (GETSCU, MOVESCU):
        if not Path(tool).exists():
            print(f"{tool} is missing (Debian package dcmtk)", file=sys.stderr)
            return 1

    work = Path(tempfile.mkdtemp(prefix="medviewer-pacs-bench-"))
    server, process = start_orthanc(work / "orthanc")
    try:
        settings = NetSettings(ae_title=server.our_aet, port=server.our_port, timeout_s=30)
        node = Node("orthanc", server.aet, "127.0.0.1", server.dicom_port)
        study, paths = make_series(work / "series", args.instances)
        started = time.perf_counter()
        sent = dimse.send(node, settings, paths)
        store_s = time.perf_counter() - started
        assert len(sent.sent) == args.instances, sent.failed[:3]
        print(f"stored {args.instances} instances of {paths[0].stat().st_size / 1e6:.2f} MB with C-STORE in "
              f"{store_s:.1f} s ({args.instances / store_s:.0f}/s)")

        def ours_get(out: Path) -> None:
            dimse.get(node, settings, study, out)

        def ours_move(out: Path) -> None:
            dimse.move(node, settings, study, out)

        common = ["-aet", server.our_aet, "-aec", server.aet, "127.0.0.1", str(server.dicom_port),
                  "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "-S",
                  "--max-pdu", "131072"]  # dcmtk's largest receive PDU (its default, 16 kB, is slower still)

        def dcmtk_get(out: Path) -> None:
            subprocess.run([GETSCU, *common, "-od", str(out)], check=True, capture_output=True, timeout=600)

        def dcmtk_move(out: Path) -> None:
            # movescu listens on our AE's port: Orthanc sends to the address it knows for MEDVIEWER.
            subprocess.run([MOVESCU, *common, "-aem", server.our_aet, "--port", str(server.our_port), "-od", str(out)],
                           check=True, capture_output=True, timeout=600)

        methods = {"medviewer C-GET": ours_get, "getscu (dcmtk)": dcmtk_get,
                   "medviewer C-MOVE": ours_move, "movescu (dcmtk)": dcmtk_move}
        times: dict[str, list[float]] = {name: [] for name in methods}
        for r in range(args.rounds):
            for name, method in methods.items():
                out = work / f"out-{r}-{name.split()[0]}-{name.split()[1].strip('()')}"
                out.mkdir()
                started = time.perf_counter()
                method(out)
                elapsed = time.perf_counter() - started
                got = _count(out)
                if got != args.instances:
                    print(f"{name}: {got} of {args.instances} instances arrived", file=sys.stderr)
                    return 1
                times[name].append(elapsed)
                shutil.rmtree(out)
        rate = {name: args.instances / statistics.median(t) for name, t in times.items()}
        print(f"{'method':<18} {'median s':>9} {'inst/s':>8} {'vs dcmtk':>9}")
        baseline = {"medviewer C-GET": "getscu (dcmtk)", "medviewer C-MOVE": "movescu (dcmtk)"}
        for name in methods:
            ratio = rate[name] / rate[baseline[name]] if name in baseline else 1.0
            print(f"{name:<18} {statistics.median(times[name]):>9.2f} {rate[name]:>8.0f} {ratio:>8.2f}x")
        if args.json:
            args.json.write_text(json.dumps({"instances": args.instances, "rounds": args.rounds, "times_s": times,
                                             "instances_per_s": rate}, indent=2))
    finally:
        stop_orthanc(process)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
