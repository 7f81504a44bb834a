"""Peak memory of MedViewer's commands on each decompression bomb and impossible claim.

Every case is built into a temporary folder by the fuzz campaign's own builders
(``scripts/fuzz_ingest.py``), then given to the real command line in a fresh process
(``medviewer info --json`` for images, ``medviewer models`` for a model package), as a user would.
The process is reaped with ``os.wait4``; its ``ru_maxrss`` is the peak resident memory of the command
and of the pool processes it waited for (Linux reports the largest of them). A baseline -- the
same command on one intact CT file -- is measured in the same run so the bombs' figures can be read
against the import cost of the program itself.

    python3 scripts/bomb_rss.py [--limit-mb 1024] [--timeout 300] [--json FILE] [--keep DIR]

Exits 1 when a case's peak goes over the limit, it takes longer than the timeout, it crashes (a
signal), or its stderr holds a traceback; each refused case must say why in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import fuzz_ingest as fz  # noqa: E402 - the builders live beside this script


@dataclass
class Case:
    name: str
    what: str
    build: Callable[[Path], Path]  # builds into a folder, returns the path to hand to the command
    command: str = "info"


def _seed(name: str) -> Path:
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file(name))


def _frames_claim(folder: Path) -> Path:
    """A 1-frame JPEG 2000 file whose header claims 999,999,999 frames."""
    import pydicom

    ds = pydicom.dcmread(_seed("US1_J2KR.dcm"))
    ds.NumberOfFrames = 999_999_999
    path = folder / "frames-claim.dcm"
    ds.save_as(path)
    return path


def _pixels_claim(folder: Path) -> Path:
    """An uncompressed header claiming 65535 x 65535 x 100,000 frames (800 TB) over a few bytes."""
    import pydicom

    ds = pydicom.dcmread(_seed("CT_small.dcm"))
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 100_000
    path = folder / "pixels-claim.dcm"
    ds.save_as(path)
    return path


def _nested_sequences(folder: Path) -> Path:
    data = _seed("CT_small.dcm").read_bytes()
    at = data.find(b"\x08\x00\x20\x00")
    sq = b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff"
    item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
    ends = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    path = folder / "nested-10000.dcm"
    path.write_bytes(data[:at] + (sq + item) * 10_000 + ends * 10_000 + data[at:])
    return path


def _into(name: str, builder: Callable[[Path], None]) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / name
        builder(path)
        return path

    return build


def _nested_manifest(folder: Path) -> Path:
    package = folder / "deep-package"
    fz.nested_manifest(package)
    return package


def _intact(folder: Path) -> Path:
    path = folder / "CT_small.dcm"
    shutil.copyfile(_seed("CT_small.dcm"), path)
    return path


CASES = [
    Case("zip ratio", "1 GB of zeros deflated into one ZIP member (about 1 MB)",
         _into("ratio.zip", lambda p: fz.zip_ratio_bomb(p, megabytes=1024))),
    Case("zip overlap", "2,000 members that all point at one 32 MB compressed stream",
         _into("overlap.zip", lambda p: fz.zip_overlap_bomb(p, members=2000))),
    Case("zip many members", "a ZIP of 100,000 one-byte members",
         _into("many.zip", lambda p: fz.zip_many_members(p, members=100_000))),
    Case("nifti gzip", "a gzipped NIfTI whose 1 GB of voxels is really there",
         _into("bomb.nii.gz", fz.nifti_gzip_bomb)),
    Case("nifti-2 claim", "a NIfTI-2 header claiming 1 x 1 x 10^11 voxels over 16 bytes",
         _into("claim.nii", lambda p: fz.nifti_claim(p, (1, 1, 10**11), False, b"\0" * 16))),
    Case("nifti gzip claim", "a gzipped NIfTI claiming 30000 x 30000 x 30 voxels",
         _into("claim.nii.gz", lambda p: fz.nifti_claim(p, (30000, 30000, 30), True, b"\0" * 128))),
    Case("tiff pages", "24 deflated TIFF pages of 10000 x 10000 (2.4 GB decoded)",
         _into("pages.tif", lambda p: fz.tiff_bomb(p, pages=24))),
    Case("png", "a PNG of 30000 x 30000 pixels (900 MB decoded)",
         _into("big.png", lambda p: fz.png_bomb(p, side=30000))),
    Case("deflate", "a Deflated Explicit VR file whose data set inflates to 1 GB",
         _into("deflate.dcm", lambda p: fz.deflate_bomb(p, _seed("CT_small.dcm")))),
    Case("frames claim", "NumberOfFrames 999,999,999 in a small JPEG 2000 file", _frames_claim),
    Case("pixels claim", "Rows x Columns x Frames claiming 800 TB over CT_small's pixels", _pixels_claim),
    Case("nested sequences", "10,000 nested sequences in a CT header", _nested_sequences),
    Case("nested manifest", "a model package whose manifest.json nests 200,000 deep",
         _nested_manifest, command="models"),
]
BASELINE = Case("baseline", "medviewer info on one intact CT file", _intact)


@dataclass
class Result:
    name: str
    what: str
    bytes_on_disk: int
    exit_code: int | None
    signal: int | None
    seconds: float
    peak_rss_mb: float
    stderr_first_line: str
    traceback: bool
    timed_out: bool


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def measure(case: Case, folder: Path, timeout: float) -> Result:
    folder.mkdir(parents=True, exist_ok=True)
    target = case.build(folder)
    argv = [sys.executable, "-m", "medviewer", case.command]
    argv += ["--json", str(target)] if case.command in ("info", "models") else [str(target)]
    env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
    stderr = folder / "stderr.txt"
    started = time.perf_counter()
    with open(stderr, "wb") as err:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=folder, env=env,
                                   start_new_session=True)
        timed_out = False
        status = usage = None
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                timed_out = True
                os.killpg(process.pid, signal.SIGKILL)
                _, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
        process.returncode = 0  # reaped here; keep Popen from waiting again
    seconds = time.perf_counter() - started
    text = stderr.read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    return Result(
        name=case.name,
        what=case.what,
        bytes_on_disk=_size(target),
        exit_code=os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        signal=os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        seconds=round(seconds, 2),
        peak_rss_mb=round(usage.ru_maxrss / 1024, 1),
        stderr_first_line=lines[0][:200] if lines else "",
        traceback="Traceback (most recent call last)" in text,
        timed_out=timed_out,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mb", type=float, default=1024.0, help="peak RSS each case must stay under")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds each case may take")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", type=Path, help="build the cases here and keep them (default: a temp folder)")
    parser.add_argument("--only", action="append", help="run only the named case (repeatable)")
    args = parser.parse_args(argv)

    random.seed(1)
    root = Path(tempfile.mkdtemp(prefix="medviewer-bombs-")) if args.keep is None else args.keep
    try:
        results = [measure(BASELINE, root / "baseline", args.timeout)]
        for k, case in enumerate(CASES):
            if args.only and case.name not in args.only:
                continue
            results.append(measure(case, root / f"case-{k:02d}", args.timeout))
            r = results[-1]
            print(f"  {r.name}: {r.peak_rss_mb:.0f} MB in {r.seconds:.1f} s", file=sys.stderr, flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    base = results[0].peak_rss_mb
    failures = 0
    print(f"{'case':<18} {'on disk':>10} {'peak RSS':>9} {'x base':>7} {'time':>7} {'exit':>5}  first stderr line")
    for r in results:
        bad = (r.peak_rss_mb >= args.limit_mb or r.timed_out or r.signal is not None or r.traceback
               or (r.name != "baseline" and r.exit_code not in (0, 1)))
        failures += r.name != "baseline" and bad
        exit_text = "kill" if r.timed_out else (f"sig{r.signal}" if r.signal else str(r.exit_code))
        print(f"{r.name:<18} {r.bytes_on_disk / 1e6:>8.2f}MB {r.peak_rss_mb:>7.0f}MB {r.peak_rss_mb / base:>6.2f}x "
              f"{r.seconds:>6.1f}s {exit_text:>5}  {r.stderr_first_line[:110]}{'  <-- FAIL' if bad else ''}")
    worst = max(results[1:], key=lambda r: r.peak_rss_mb, default=None)
    if worst is not None:
        print(f"worst peak: {worst.peak_rss_mb:.0f} MB ({worst.name}); limit {args.limit_mb:.0f} MB; "
              f"baseline {base:.0f} MB; {failures} case(s) failed")
    if args.json:
        args.json.write_text(json.dumps({"limit_mb": args.limit_mb, "results": [asdict(r) for r in results]},
                                        indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
