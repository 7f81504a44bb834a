"""The held-out scoring on synthetic predictions: a perfect prediction scores perfectly, a wrong one worse, and
the FROC and alignment rules hold.  No model runs here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from medviewer.phantoms.heldout import generate_heldout, read_heldout_truth, write_heldout_truth
from medviewer.phantoms.scoring import SLICE_AREA_MM2, align_slices, froc, score_study, slice_truth, summarise

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def truths(tmp_path_factory):
    out = []
    for seed in (11, 12):
        s = generate_heldout(seed, size=64, max_slices=40, nodules=(3, 4), slice_thickness_mm=3.0)
        folder = write_heldout_truth(s, tmp_path_factory.mktemp(f"truth{seed}"))
        out.append(read_heldout_truth(folder))
    return out


def _perfect(truth, labels, nodules):
    st = slice_truth(nodules, truth["spacing_mm"]).astype(float)
    findings = [{"centroid_lps_mm": n["center_lps_mm"], "max_probability": 0.9} for n in truth["nodules"]]
    return score_study(truth, labels, nodules, labels.copy(), st, findings)


def _wrong(truth, labels, nodules):
    st = slice_truth(nodules, truth["spacing_mm"]).astype(float)
    mask = np.roll(labels, labels.shape[2] // 5, axis=2)  # outlines shifted sideways
    mask[mask == 2] = 1
    findings = [{"centroid_lps_mm": [float(c) + 40.0 for c in n["center_lps_mm"]], "max_probability": 0.95}
                for n in truth["nodules"]]
    return score_study(truth, labels, nodules, mask, 1.0 - st, findings)


def test_label_rule_matches_the_classifier():
    from medviewer.ai.data import MIN_NODULE_AREA_MM2

    assert SLICE_AREA_MM2 == MIN_NODULE_AREA_MM2


def test_perfect_prediction_scores_perfectly(truths):
    fig = summarise([_perfect(*t) for t in truths], threshold=0.5)
    assert fig["froc"]["nodules"] >= 4
    assert fig["slice"]["auc"] == 1.0 and fig["slice"]["ece_10_bins"] == 0.0
    assert fig["dice"]["lung"] == 1.0 and fig["dice"]["nodule_ge_6mm"] == 1.0
    if fig["dice"]["nodules_ge_6mm"]:
        assert fig["dice"]["nodule_ge_6mm_per_nodule_mean"] == 1.0
    for r in ("1", "2", "4"):
        assert fig["froc"]["sensitivity"][r] == 1.0
    assert fig["froc"]["all_findings"]["false_findings"] == 0
    for group in ("by_size", "by_kind", "by_attachment", "by_margin"):
        assert fig[group] and all(row["sensitivity_at_1_fp"] == 1.0 for row in fig[group].values())
        assert sum(row["nodules"] for row in fig[group].values()) == fig["froc"]["nodules"]


def test_wrong_prediction_scores_worse(truths):
    good = summarise([_perfect(*t) for t in truths], threshold=0.5)
    bad = summarise([_wrong(*t) for t in truths], threshold=0.5)
    assert bad["slice"]["auc"] == 0.0 and bad["slice"]["ece_10_bins"] > 0.5
    assert bad["dice"]["lung"] < 0.8 * good["dice"]["lung"]
    assert bad["dice"]["nodule_ge_6mm"] == 0.0
    assert bad["froc"]["sensitivity"]["4"] == 0.0
    assert bad["froc"]["all_findings"]["false_findings"] == sum(len(t[0]["nodules"]) for t in truths)


def test_froc_follows_luna16_rules():
    nod = [{"label": 1, "visible": True, "diameter_mm": 8.0, "kind": "solid", "attachment": "none", "margin": "smooth"},
           {"label": 2, "visible": True, "diameter_mm": 8.0, "kind": "solid", "attachment": "none", "margin": "smooth"}]
    # study 0: a hit at 0.9, a second hit on the same nodule (neither), two false findings, a hit at 0.2
    s0 = {"nodules": nod, "findings": [(0.9, 1, False), (0.8, 1, False), (0.7, 0, False), (0.6, 0, False),
                                       (0.2, 2, False)]}
    # study 1: no nodules, one false finding and one on an uncounted nodule (ignored)
    s1 = {"nodules": [], "findings": [(0.5, 0, False), (0.95, 0, True)]}
    out = froc([s0, s1], rates=(0.5, 1.0, 2.0))
    assert out["nodules"] == 2
    assert out["sensitivity"][0.5] == 0.5  # the 0.9 hit, then the 0.7 false finding is 0.5 per study
    assert out["sensitivity"][1.0] == 0.5  # 0.6 brings 1.0 per study, still one nodule
    assert out["sensitivity"][2.0] == 1.0  # down to 0.2: three false findings over two studies
    assert out["all_findings"]["false_findings"] == 3


def test_a_finding_hits_only_within_the_radius(truths):
    truth, labels, nodules = truths[0]
    n = next(n for n in truth["nodules"] if (nodules == n["label"]).any())
    r = n["diameter_mm"] / 2
    x, y, z = n["center_lps_mm"]
    inside = {"centroid_lps_mm": [x + 0.9 * r, y, z], "max_probability": 0.5}
    outside = {"centroid_lps_mm": [x + 1.1 * r + 0.01, y, z], "max_probability": 0.5}
    rec = score_study(truth, labels, nodules, None, None, [inside, outside])
    hit, miss = rec["findings"]
    assert hit[1] == n["label"] and (miss[1] != n["label"])


def test_alignment_maps_any_slice_order():
    positions = [(0.0, 0.0, z) for z in (-10.0, -4.0, -7.0)]
    k = align_slices(positions, (0.0, 0.0, -10.0), 3.0, 3)
    assert list(k) == [0, 2, 1]
    with pytest.raises(ValueError):
        align_slices(positions[:2], (0.0, 0.0, -10.0), 3.0, 3)


def test_script_tables_the_figures(truths):
    spec = importlib.util.spec_from_file_location("evaluate_heldout", ROOT / "scripts" / "evaluate_heldout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fig = summarise([_perfect(*t) for t in truths], threshold=0.5)
    text = module.table(fig)
    assert "AUC 1.000" in text and "lung Dice 1.000" in text and "1.000 / 1.000 / 1.000" in text
    assert list(module.truth_order([2, 0, 1])) == [1, 2, 0]
