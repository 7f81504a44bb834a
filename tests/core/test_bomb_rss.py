"""The bomb script itself works: two cheap cases run through the real command line and are refused in
one line each, under the memory limit (the full set runs as ``python3 scripts/bomb_rss.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bomb_script_measures_and_refuses(tmp_path):
    out = tmp_path / "bombs.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bomb_rss.py"), "--only", "nifti-2 claim", "--only", "frames claim",
         "--json", str(out), "--timeout", "120"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    results = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"baseline", "nifti-2 claim", "frames claim"}
    assert results["baseline"]["exit_code"] == 0
    for name in ("nifti-2 claim", "frames claim"):
        r = results[name]
        assert r["exit_code"] == 1 and not r["traceback"] and not r["timed_out"]
        assert 0 < r["peak_rss_mb"] < 1024
        assert r["stderr_first_line"].startswith("medviewer: ") and "claim" in r["stderr_first_line"]
    assert "worst peak:" in done.stdout
