"""The inference benchmark runs end to end (a smoke test: a few slices; its figures mean nothing here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_infer_benchmark_runs_every_case(tmp_path):
    out = tmp_path / "infer.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "infer.py"), "--quick", "--slices", "8",
                          "--naive-slices", "2", "--device", "cpu", "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "engine/naive" in run.stdout and "goal, both models" in run.stdout
    (result,) = json.loads(out.read_text())["results"]
    models = {row["model"] for row in result["rows"]}
    assert {"classifier", "segmenter, single pass", "both", "both, whole slices"} <= models
    assert result["checks"]["mask_agreement"] > 0.99 and result["checks"]["probability_max_diff"] < 0.01
