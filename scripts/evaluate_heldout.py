"""Measure the assistant on the held-out phantom family, through the real ``medviewer predict`` command.

    python scripts/evaluate_heldout.py                      # 8 studies of 256 x 256, the built-in models
    python scripts/evaluate_heldout.py --quick              # 2 small studies, a smoke test
    python scripts/evaluate_heldout.py --json figures.json --model path/to/package --model other-package

Each study (seeds ``--seed``, ``--seed + 1``, ...) is written as DICOM (truth in a separate folder), then
``python -m medviewer predict`` runs on the series folder in a subprocess, and its predictions.json and
mask.npy are scored against the truth: per-slice nodule AUC and ECE (10 bins), lung Dice, nodule Dice (nodules
>= 6 mm), FROC sensitivity at 1, 2 and 4 false findings per study (a finding hits a nodule when its centroid
lies within the nodule's radius), per nodule size, kind, attachment and margin.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medviewer.ai.prediction import read_prediction  # noqa: E402
from medviewer.phantoms.heldout import generate_heldout, read_heldout_truth, write_heldout_study  # noqa: E402
from medviewer.phantoms.scoring import align_slices, score_study, summarise  # noqa: E402

DEFAULT_SEED = 7_000_000  # far from every training and tuning seed


def _label_value(prediction, name: str) -> int | None:
    return next((v for v, spec in prediction.labels.items() if spec.get("name", "").lower() == name), None)


def run_predict(series: Path, out: Path, models: list[str], device: str, timeout_s: float) -> None:
    cmd = [sys.executable, "-m", "medviewer", "predict", str(series), "--out", str(out), "--no-explain",
           "--device", device]
    for m in models:
        cmd += ["--model", m]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=str(ROOT))
    if done.returncode != 0:
        raise RuntimeError(f"medviewer predict {series}: exit {done.returncode}: {done.stderr.strip()[-500:]}")


def evaluate(count: int, seed: int, size: int, max_slices: int, models: list[str], device: str, work: Path,
             timeout_s: float, log=print) -> dict:
    records, meta = [], []
    threshold = None
    for n in range(count):
        t0 = time.perf_counter()
        study = generate_heldout(seed + n, size=size, max_slices=max_slices)
        dicom, truth_dir = write_heldout_study(study, work, f"case-{n + 1:02d}")
        del study
        out = work / "predictions" / f"case-{n + 1:02d}"
        t1 = time.perf_counter()
        run_predict(dicom, out, models, device, timeout_s)
        t2 = time.perf_counter()
        truth, labels, nodule_labels = read_heldout_truth(truth_dir)
        pred = read_prediction(out)
        k = align_slices(pred.positions_lps_mm, truth["origin_lps_mm"], truth["spacing_mm"][0], labels.shape[0])
        order = truth_order(k)
        mask = None if pred.mask is None else pred.mask[order]
        probs = None
        if pred.slice_probabilities is not None and pred.classes:
            c = pred.classes.index("nodule") if "nodule" in pred.classes else 0
            probs = pred.slice_probabilities[order, c]
        if threshold is None:
            threshold = next((m.get("threshold") for m in pred.models if m.get("task") == "classification"), None)
        findings = [f.to_dict() for f in pred.findings if f.label.lower() == "nodule"]
        rec = score_study(truth, labels, nodule_labels, mask, probs, findings,
                          lung_value=_label_value(pred, "lung") or 1, nodule_value=_label_value(pred, "nodule") or 2)
        records.append(rec)
        acq, ana = truth["acquisition"], truth["anatomy"]
        meta.append({"case": n + 1, "seed": seed + n, "shape": truth["shape"],
                     "spacing_mm": [round(v, 3) for v in truth["spacing_mm"]], "habitus": ana["habitus"],
                     "arms": ana["arms"], "kernel": acq["kernel"], "noise_hu": round(acq["noise_hu"], 1),
                     "contrast": acq["contrast"], "metal": acq["metal"], "storage": acq["storage"],
                     "truncated": acq["truncated"], "nodules": len(truth["nodules"]),
                     "findings": len(findings), "lung_dice": _dice(rec.get("lung_counts")),
                     "generate_s": round(t1 - t0, 1), "predict_s": round(t2 - t1, 1)})
        log(f"case {n + 1}/{count}: seed {seed + n}, {truth['shape'][0]} slices of {truth['shape'][1]}, "
            f"{len(truth['nodules'])} nodule(s), {len(findings)} finding(s), predict {t2 - t1:.1f} s")
    figures = summarise(records, threshold)
    figures["cases"] = meta
    figures["settings"] = {"count": count, "seed": seed, "size": size, "max_slices": max_slices,
                           "models": models or "built-in", "device": device}
    return figures


def _dice(counts) -> float | None:
    if counts is None:
        return None
    inter, p, t = counts
    return round(1.0 if p + t == 0 else 2.0 * inter / (p + t), 4)


def truth_order(k):
    """Indices into the prediction's slices that put them in truth ``k`` order."""
    import numpy as np

    order = np.empty(len(k), dtype=np.int64)
    order[np.asarray(k)] = np.arange(len(k))
    return order


def _f(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def table(fig: dict) -> str:
    lines = [f"held-out family: {fig['studies']} studies, {fig['slices']} slices, "
             f"{fig['froc']['nodules']} visible nodules ({fig['nodules_not_visible']} between slices, not counted)"]
    s = fig.get("slice")
    if s:
        lines.append(f"  per-slice nodule AUC {_f(s['auc'])}   ECE (10 bins) {_f(s['ece_10_bins'])}   "
                     f"sensitivity {_f(s['sensitivity'])} / specificity {_f(s['specificity'])} at {_f(s['threshold'])}"
                     f"   ({s['positive_slices']} of {s['slices']} slices positive)")
    d = fig.get("dice")
    if d:
        lines.append(f"  lung Dice {_f(d['lung'])} (lowest study {_f(d['lung_per_study_min'])})   nodule (>= 6 mm) "
                     f"Dice {_f(d['nodule_ge_6mm'])} pooled, {_f(d['nodule_ge_6mm_per_nodule_mean'])} per-nodule mean "
                     f"over {d['nodules_ge_6mm']}")
    fr = fig["froc"]
    sens = fr["sensitivity"]
    allf = fr["all_findings"]
    lines.append(f"  FROC sensitivity at 1 / 2 / 4 false findings per study: {_f(sens.get('1'))} / "
                 f"{_f(sens.get('2'))} / {_f(sens.get('4'))}   (every finding kept: {_f(allf['sensitivity'])} at "
                 f"{_f(allf['false_findings_per_study'], 2)} FP/study)")
    for title, key in (("size", "by_size"), ("kind", "by_kind"), ("attachment", "by_attachment"),
                       ("margin", "by_margin")):
        lines.append(f"  {'by ' + title + ':':<28}nodules  sens@1  sens@2  sens@4  dice")
        for name, row in fig[key].items():
            lines.append(f"    {name:<26}{row['nodules']:>5}  {_f(row['sensitivity_at_1_fp']):>6}  "
                         f"{_f(row['sensitivity_at_2_fp']):>6}  {_f(row['sensitivity_at_4_fp']):>6}  "
                         f"{_f(row['dice_mean']):>5}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=8, help="studies (default 8)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of the first study (default {DEFAULT_SEED})")
    ap.add_argument("--size", type=int, default=256, help="rows and columns (default 256)")
    ap.add_argument("--max-slices", type=int, default=160, help="most slices per study (default 160)")
    ap.add_argument("--model", action="append", default=[], help="model id or package (repeatable; default built-in)")
    ap.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda", "mps"))
    ap.add_argument("--quick", action="store_true", help="2 studies of 96 x 96, at most 48 slices")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--keep", metavar="DIR", help="write the studies and predictions here and keep them")
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed per predict run")
    args = ap.parse_args(argv)
    if args.quick:
        args.count, args.size, args.max_slices = 2, 96, 48
    if args.count < 1:
        ap.error("--count must be >= 1")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.keep:
            work = Path(args.keep)
            if work.exists() and any(work.iterdir()):
                ap.error(f"{work}: not empty")
            fig = evaluate(args.count, args.seed, args.size, args.max_slices, args.model, args.device, work,
                           args.timeout, log)
        else:
            with tempfile.TemporaryDirectory(prefix="medviewer-heldout-") as tmp:
                fig = evaluate(args.count, args.seed, args.size, args.max_slices, args.model, args.device,
                               Path(tmp), args.timeout, log)
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"evaluate_heldout: {exc}", file=sys.stderr)
        return 1
    print(table(fig))
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
