"""A small seeded slice of the ingest fuzz campaign (scripts/fuzz_ingest.py), and a file that aborts GDCM."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from medviewer.cli import main as cli_main
from medviewer.core.pool import worker_count

ROOT = Path(__file__).resolve().parents[2]


def _fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_ingest", ROOT / "scripts" / "fuzz_ingest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_ingest"] = module
    spec.loader.exec_module(module)
    return module


def test_seeded_fuzz_slice(tmp_path):
    fuzz = _fuzz()
    campaign = fuzz.generate(tmp_path / "fuzz", 300, seed=7, intact_count=20, specials_every=30)
    counts = fuzz.read_all(campaign.files, campaign.intact, tmp_path / "fuzz.log", timeout=60)
    assert (counts.tracebacks, counts.crashes, counts.hangs) == (0, 0, 0), counts.examples
    assert counts.leaked_stderr_lines == 0 and counts.bad_reasons == 0
    assert counts.intact_reported == counts.intact == 20


@pytest.mark.skipif(worker_count() < 2, reason="needs a process pool (2 or more cores)")
def test_a_file_that_aborts_gdcm_is_refused_and_the_process_lives(capfd):
    # Made by the fuzz campaign from pydicom's JPEG-LS test file: GDCM throws an uncaught C++
    # exception decoding it ("terminate called", abort, exit 134).
    path = str(Path(__file__).parent / "data" / "gdcm-abort-jpegls.dcm")
    code = cli_main(["info", path])
    captured = capfd.readouterr()
    assert code == 1
    assert captured.err.strip().splitlines() == [f"medviewer: {path}: could not be decoded (decoder crashed)"]
