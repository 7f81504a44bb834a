"""The inference engine with the built-in models: findings, the input gate, cancel, partial results, explanations."""

import numpy as np
import pytest
import torch

from medviewer.ai.demo_data import phantom_volume
from medviewer.ai.explain import cam_from_features, feature_layer, grad_cam, linear_head_weights
from medviewer.ai.infer import BODY_MARGIN, body_box, label_scales, predict
from medviewer.ai.networks import NoduleCNN, SeedCNN, UNet2D
from medviewer.ai.package import find_packages, load_package
from medviewer.ai.phantom import PhantomConfig, generate_phantom
from medviewer.core.errors import Cancelled


@pytest.fixture(scope="module")
def builtin_models():
    loaded = [load_package(info.path, device=torch.device("cpu")) for info in find_packages()
              if info.source == "builtin" and info.manifest is not None]
    assert {m.manifest.id for m in loaded} == {"chest-ct-nodule", "chest-ct-lung-nodule-seg"}
    return loaded


@pytest.fixture(scope="module")
def planted():
    """A phantom with one 15 mm nodule; the built-in models' size (256²), few slices."""
    phantom = generate_phantom(PhantomConfig(slices=20, size=256, nodule_count=(1, 1),
                                             nodule_diameter_mm=(15.0, 15.0)), 1)
    return phantom, phantom_volume(phantom)


@pytest.fixture(scope="module")
def planted_prediction(builtin_models, planted):
    return predict(planted[1], builtin_models, device="cpu")


def test_built_in_models_find_the_planted_nodule(planted, planted_prediction):
    phantom, volume = planted
    prediction = planted_prediction
    (nodule,) = phantom.nodules
    near = [f for f in prediction.findings
            if np.linalg.norm(np.subtract(f.centroid_lps_mm, nodule.center_lps_mm)) < 5.0]
    assert len(near) == 1, [f.to_dict() for f in prediction.findings]
    finding = near[0]
    assert finding.label == "nodule" and abs(finding.diameter_mm - 15.0) < 3.0
    assert finding.confidence is not None and finding.confidence > 0.5
    # the region lies inside the true nodule; the model under-segments its first and last slices (small
    # cross-sections), so the volume is low: about a third of the truth here
    truth = phantom.labels == 2
    region = prediction.mask == 2
    assert (region & truth).sum() > 0.8 * region[finding.slices[0]:finding.slices[1] + 1].sum()
    truth_ml = truth.sum() * np.prod(volume.spacing_mm) / 1000
    assert 0.3 * truth_ml < finding.volume_ml < 1.2 * truth_ml
    # the classifier calls the slices through the nodule positive and the study positive
    k = nodule.center_index[0]
    assert prediction.slice_probabilities[k, 0] > 0.5 and prediction.verdict == "positive"
    # the lung is segmented too, and the heatmap is brightest near the nodule on its central slice
    assert (prediction.mask[k] == 1).mean() > 0.1
    heat = prediction.heatmap[k].astype(np.float32)
    peak = np.unravel_index(np.argmax(heat), heat.shape)
    assert np.hypot(peak[0] - nodule.center_index[1], peak[1] - nodule.center_index[2]) * volume.spacing_mm[1] < 20
    assert prediction.mask.shape == volume.shape and prediction.heatmap.dtype == np.float16
    assert prediction.complete and prediction.done_slices.all() and not prediction.warnings


def test_clean_phantom_gives_no_finding(builtin_models):
    phantom = generate_phantom(PhantomConfig(slices=16, size=256, nodule_count=(0, 0)), 5)
    prediction = predict(phantom_volume(phantom), builtin_models, device="cpu")
    assert prediction.findings == [] and prediction.verdict == "negative"
    assert prediction.study_probability < 0.5


def test_prediction_is_deterministic(builtin_models, planted, planted_prediction):
    again = predict(planted[1], builtin_models, device="cpu")
    assert np.array_equal(again.mask, planted_prediction.mask)
    assert np.allclose(again.slice_probabilities, planted_prediction.slice_probabilities, atol=1e-6)
    assert [f.to_dict() for f in again.findings] == [f.to_dict() for f in planted_prediction.findings]


def test_body_box_keeps_the_body_and_a_margin_on_the_pooling_grid(builtin_models):
    manifest = builtin_models[0].manifest  # CT in HU, clip01
    images = torch.zeros(2, 3, 256, 256)  # air
    images[0, 1, 100:140, 60:200] = 0.7  # soft tissue on the middle channel of one slice of the batch
    ys, xs = body_box(images, manifest, 16)
    assert ys.start % 16 == 0 and ys.stop % 16 == 0 and xs.start % 16 == 0 and xs.stop % 16 == 0
    assert ys.start <= 100 - BODY_MARGIN and ys.stop >= 140 + BODY_MARGIN
    assert xs.start <= 60 - BODY_MARGIN and xs.stop >= 200 + BODY_MARGIN
    assert (ys.stop - ys.start) * (xs.stop - xs.start) < 0.5 * 256 * 256
    # the whole slice where there is no body, where the network needs its full size, or where the input is not HU
    assert body_box(torch.zeros(2, 3, 256, 256), manifest, 16) is None
    assert body_box(images, manifest, None) is None
    assert body_box(images[:, :, :250, :250], manifest, 16) is None
    mr = type(manifest)(**{**manifest.__dict__, "input": type(manifest.input)(**{**manifest.input.__dict__,
                                                                                 "units": ""})})
    assert body_box(images, mr, 16) is None
    # a body that fills the field: no crop
    assert body_box(torch.full((1, 3, 256, 256), 0.7), manifest, 16) is None


def test_per_label_thresholds_decide_the_mask(builtin_models):
    from dataclasses import replace

    manifest = next(m.manifest for m in builtin_models if m.manifest.task == "segmentation")
    p = torch.tensor([[0.5, 0.3, 0.2], [0.3, 0.3, 0.4], [0.1, 0.8, 0.1]])[:, :, None, None]  # 3 voxels, 3 labels
    even = replace(manifest, outputs=[replace(o, threshold=0.5) for o in manifest.outputs])
    assert (p * label_scales(even)).max(1).indices.flatten().tolist() == [0, 2, 1]  # all equal: the argmax
    low = replace(manifest, outputs=[replace(o, threshold=0.25 if o.value == 2 else 0.5) for o in manifest.outputs])
    # nodule at threshold 0.25: 0.2 / 0.25 still loses to background's 0.5 / 0.5, 0.1 / 0.25 to lung's 0.8 / 0.5
    assert (p * label_scales(low)).max(1).indices.flatten().tolist() == [0, 2, 1]
    lower = replace(manifest, outputs=[replace(o, threshold=0.15 if o.value == 2 else 0.5) for o in manifest.outputs])
    assert (p * label_scales(lower)).max(1).indices.flatten().tolist() == [2, 2, 1]


def test_networks_state_the_multiple_their_inputs_need():
    assert UNet2D(width=4, depth=4).size_multiple == 16 and UNet2D(width=4, depth=3).size_multiple == 8
    assert NoduleCNN(width=4, depth=4).size_multiple == 8
    assert getattr(SeedCNN(size=64), "size_multiple", None) is None  # its dense layer fixes the input size


def test_cropping_to_the_body_changes_nothing_a_reader_sees(builtin_models, planted, planted_prediction):
    """The engine runs the networks on the body's box; on whole slices the outputs are the same."""
    whole = predict(planted[1], builtin_models, device="cpu", crop=False)
    cropped = planted_prediction
    assert (whole.mask == cropped.mask).mean() > 0.999
    assert np.array_equal(whole.mask == 2, cropped.mask == 2)
    assert np.abs(whole.slice_probabilities - cropped.slice_probabilities).max() < 0.01
    heat_diff = np.abs(whole.heatmap.astype(np.float32) - cropped.heatmap.astype(np.float32))
    assert heat_diff.max() < 0.05 and heat_diff.mean() < 1e-3
    assert [(f.slices, round(f.diameter_mm, 1)) for f in whole.findings] == \
        [(f.slices, round(f.diameter_mm, 1)) for f in cropped.findings]
    # outside the body (the corners of these slices are air) nothing is labelled and the heatmap is zero
    assert (planted[1].voxels[:, :8, :8] < -900).all()
    corner = (slice(None), slice(0, 8), slice(0, 8))
    assert (cropped.mask[corner] == 0).all() and (cropped.heatmap[corner] == 0).all()


def test_gate_warns_on_an_mr_series(builtin_models):
    phantom = generate_phantom(PhantomConfig(slices=4, size=64, nodule_count=(0, 0), vessel_generations=1), 0)
    volume = phantom_volume(phantom, modality="MR")
    volume.units = ""
    volume.voxels = (phantom.hu.astype(np.int32) + 1024).astype(np.int16)  # MR-like: no air at -1000
    prediction = predict(volume, builtin_models, device="cpu", explain=False)
    text = " ".join(prediction.warnings)
    assert "made for CT, this series is MR" in text
    assert "expects values in HU" in text and "do not look like Hounsfield units" in text


def test_cancel_stops_within_one_batch(builtin_models, planted):
    calls = []

    def partial(prediction, model_id, indices):
        calls.append((model_id, list(indices)))

    with pytest.raises(Cancelled):
        predict(planted[1], builtin_models, device="cpu", batch_size=4, partial=partial,
                cancel=lambda: len(calls) >= 1)
    assert len(calls) == 1 and len(calls[0][1]) == 4


def test_partial_results_arrive_per_batch(builtin_models, planted):
    seen, progress = [], []

    def partial(prediction, model_id, indices):
        seen.append((model_id, int(prediction.done_slices.sum()), len(indices)))

    predict(planted[1], builtin_models, device="cpu", batch_size=8, explain=False, partial=partial,
            progress=lambda done, total: progress.append((done, total)))
    slices = planted[1].shape[0]
    assert [n for _, _, n in seen] == [8, 8, 4, 8, 8, 4]
    assert progress[0] == (0, 2 * slices) and progress[-1] == (2 * slices, 2 * slices)
    assert all(a[0] <= b[0] for a, b in zip(progress, progress[1:]))


@pytest.mark.parametrize("head_pool", ["max", "avg", "avgmax"])
def test_forward_cam_equals_grad_cam(head_pool):
    torch.manual_seed(0)
    model = NoduleCNN(in_channels=3, width=4, depth=3, head_pool=head_pool,
                      calibration_temperature=0.8, calibration_bias=-1.0).eval()
    images = torch.rand(3, 3, 48, 48)
    reference = grad_cam(model, images.clone(), output_size=(48, 48))
    store = {}
    hook = feature_layer(model).register_forward_hook(lambda _m, _i, out: store.__setitem__("f", out))
    with torch.inference_mode():
        probability = torch.sigmoid(model(images)[:, 0])
    hook.remove()
    fast = cam_from_features(store["f"], linear_head_weights(model), probability, (48, 48))
    assert torch.allclose(fast, reference, atol=1e-5)


def test_batch_size_fits_the_device(builtin_models, monkeypatch):
    """On the CPU small batches (cache); on CUDA as many slices as half the free memory holds, within 8..512."""
    from medviewer.ai.infer import _batch_size

    manifest = builtin_models[0].manifest  # 256 x 256 input
    assert _batch_size(torch.device("cpu"), manifest, None) == 2
    assert _batch_size(torch.device("cpu"), manifest, 7) == 7  # what the caller asks for wins
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda _device=None: (70 * gib, 80 * gib))
    large = _batch_size(torch.device("cuda"), manifest, None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda _device=None: (1 * gib, 80 * gib))
    small = _batch_size(torch.device("cuda"), manifest, None)
    assert 8 <= small < large <= 512
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda _device=None: (0, 80 * gib))
    assert _batch_size(torch.device("cuda"), manifest, None) == 8


def test_gate_warns_when_noise_is_far_beyond_the_training_data():
    """Out of distribution: noise far above the training phantoms' range is named, ordinary noise is not."""
    from medviewer.ai.infer import check_input, estimate_noise_hu

    manifests = [p.manifest for p in find_packages() if p.source == "builtin" and p.manifest is not None]
    assert manifests
    quiet, noisy = (phantom_volume(generate_phantom(PhantomConfig(slices=4, size=128, nodule_count=(0, 0),
                                                                  vessel_generations=1, noise_hu=n), 0))
                    for n in (10.0, 90.0))
    assert abs(estimate_noise_hu(quiet) - 10) < 6 and estimate_noise_hu(noisy) > 50
    for manifest in manifests:
        trained = manifest.training["phantom_ranges"]["noise_hu"]
        assert not [w for w in check_input(quiet, manifest) if "image noise" in w]
        (warning,) = [w for w in check_input(noisy, manifest) if "image noise" in w]
        assert f"beyond the {trained[0]:g}–{trained[1]:g} HU the model was trained on" in warning
