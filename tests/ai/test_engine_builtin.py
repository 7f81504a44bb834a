"""The built-in models' test-set scoring, and the shipped packages when they are present."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medviewer.ai.builtin import segmentation_test_scores
from medviewer.ai.package import builtin_models_dir, check_package
from medviewer.ai.phantom import PhantomConfig, generate_phantom


def test_segmentation_scores_of_the_truth_are_perfect():
    ph = generate_phantom(PhantomConfig(slices=16, size=64, nodule_count=(2, 3), nodule_diameter_mm=(4.0, 20.0),
                                        vessel_generations=2), 4)
    scores = segmentation_test_scores(ph.labels.copy(), ph)
    inter, pred, truth = scores["nodule"]
    assert inter == pred == truth
    assert scores["lung"][0] == scores["lung"][1] == scores["lung"][2] > 0
    assert all(n["dice"] == pytest.approx(1.0) for n in scores["per_nodule"])
    # a false positive far from every nodule counts against the pooled nodule Dice
    wrong = ph.labels.copy()
    wrong[0, :4, :4] = 2
    assert segmentation_test_scores(wrong, ph)["nodule"][1] == pred + 16


@pytest.mark.parametrize("model_id", ["chest-ct-nodule", "chest-ct-lung-nodule-seg"])
def test_shipped_packages_are_valid(model_id):
    folder = builtin_models_dir() / model_id
    if not folder.exists():
        pytest.skip("built-in models not built (python scripts/train_builtin_models.py)")
    manifest = check_package(folder)
    assert manifest.id == model_id and manifest.not_for_clinical_use
    assert "test" in manifest.metrics and "validation" in manifest.metrics
    assert (folder / "weights.safetensors").stat().st_size < 8 * 2**20
    assert np.isfinite(list(manifest.metrics["test"].values())[0] if model_id == "chest-ct-nodule"
                       else manifest.metrics["test"]["dice"]["lung"])


def test_the_build_script_writes_two_valid_packages_with_engine_test_metrics(tmp_path):
    """The quick recipe runs the whole build: phantoms, both trainings, the test set through the engine."""
    from medviewer.ai.builtin import QUICK, build_models
    from medviewer.ai.package import load_package

    results = build_models(tmp_path, QUICK)
    assert set(results) == {"chest-ct-nodule", "chest-ct-lung-nodule-seg"}
    for model_id in results:
        manifest = check_package(tmp_path / model_id)
        assert manifest.not_for_clinical_use and "validation" in manifest.metrics
        assert "inference engine" in manifest.metrics["test_set"]["note"]
        load_package(tmp_path / model_id)
    classifier = check_package(tmp_path / "chest-ct-nodule").metrics["test"]
    assert 0.0 <= classifier["auc"] <= 1.0 and classifier["phantoms"] == QUICK.test_phantoms
    findings = check_package(tmp_path / "chest-ct-lung-nodule-seg").metrics["test"]["findings"]
    assert findings["nodules_ge_6mm_reported"] <= findings["nodules_ge_6mm"]
    assert findings["false_positive_findings"] >= 0


def test_findings_are_matched_to_the_phantoms_nodules():
    from medviewer.ai.builtin import finding_matches
    from medviewer.ai.prediction import Finding

    ph = generate_phantom(PhantomConfig(slices=16, size=64, nodule_count=(2, 2), nodule_diameter_mm=(8.0, 12.0),
                                        vessel_generations=2), 4)
    first, second = ph.nodules

    def at(centre, number):
        return Finding(id=number, label="nodule", label_value=2, slices=(0, 1), centroid_index=(0, 0, 0),
                       centroid_lps_mm=tuple(centre), voxels=1, volume_ml=0.1, diameter_mm=5.0,
                       max_probability=0.9, mean_probability=0.8)

    far = np.asarray(first.center_lps_mm) + [0.0, 0.0, 200.0]
    got = finding_matches([at(first.center_lps_mm, 1), at(np.asarray(first.center_lps_mm) + 1.0, 2), at(far, 3)],
                          ph)
    assert got == {"nodules": 2, "detected": 1, "false_positives": 1}
    assert finding_matches([], ph) == {"nodules": 2, "detected": 0, "false_positives": 0}


def test_randomised_quick_build_records_its_domain_and_cross_family_figures(tmp_path):
    """--randomise: the wider phantom ranges and the randomisation settings are in the manifest; held-out figures
    are written into the manifests without touching the weights."""
    import json

    from medviewer.ai.builtin import QUICK, RANDOMISED_RANGES, Recipe, build_models, record_cross_family

    build_models(tmp_path, Recipe(**{**QUICK.__dict__, "domain": True}), which="classifier")
    folder = tmp_path / "chest-ct-nodule"
    from safetensors.torch import load_file

    before = load_file(folder / "weights.safetensors")
    training = check_package(folder).training
    assert training["phantom_ranges"]["nodule_hu"] == list(RANDOMISED_RANGES.nodule_hu)
    assert "domain_randomisation" in training["augmentation"]
    figures = tmp_path / "figures.json"
    figures.write_text(json.dumps({"studies": 2, "slice_auc": 0.5}), encoding="utf-8")
    record_cross_family(tmp_path, figures)
    cross = check_package(folder).metrics["cross_family"]
    assert cross["figures"]["studies"] == 2 and "held-out" in cross["note"]
    after = load_file(folder / "weights.safetensors")
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
