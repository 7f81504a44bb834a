"""The built-in models' test-set scoring, and the shipped packages when they are present."""

from __future__ import annotations

import numpy as np
import pytest

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
