"""Model packages: manifest validation, round trip, tampering, pickles, discovery."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import medviewer.ai.package as package_module
from medviewer.ai.manifest import InputSpec, Manifest, OutputLabel
from medviewer.ai.networks import NoduleCNN, UNet2D
from medviewer.ai.package import (
    PackageError,
    builtin_models_dir,
    find_model,
    find_packages,
    load_package,
    model_card,
    save_package,
)


def _manifest(**changes) -> Manifest:
    values = dict(
        id="test-nodule", name="Test nodule model", version="0.1.0", sha256="", task="classification",
        architecture="NoduleCNN", arguments={"in_channels": 3, "width": 4, "depth": 2, "classes": 1,
                                             "calibration_temperature": 1.5, "calibration_bias": -0.25},
        input=InputSpec(size=(32, 32), channels=3), intended_use="tests",
        outputs=[OutputLabel(0, "nodule", "#ff0000", 0.3)],
        training={"data": "none"}, metrics={"validation": {"auc": 0.5}},
    )
    values.update(changes)
    return Manifest(**values)


def _model() -> NoduleCNN:
    torch.manual_seed(0)
    return NoduleCNN(in_channels=3, width=4, depth=2, classes=1, calibration_temperature=1.5, calibration_bias=-0.25)


@pytest.fixture
def no_user_models(tmp_path, monkeypatch):
    monkeypatch.setattr(package_module, "user_models_dir", lambda: tmp_path / "user-models")
    return tmp_path / "user-models"


def _valid_dict() -> dict:
    data = _manifest().to_dict()
    data["sha256"] = "0" * 64
    return data


@pytest.mark.parametrize("path, value, field", [
    (("input", "size"), [32], "input.size must be two positive integers"),
    (("input", "size"), [32, -1], "input.size"),
    (("input", "clip"), [400, -1000], "input.clip"),
    (("input", "channels"), 2, "input.channels"),
    (("input", "context"), "3d", "input.context"),
    (("input", "normalisation"), "zscore", "input.normalisation"),
    (("outputs", 0, "color"), "red", "outputs[0].color"),
    (("outputs", 0, "threshold"), 1.5, "outputs[0].threshold"),
    (("outputs", 0, "value"), 1, "outputs"),
    (("arguments", "classes"), 2, "outputs"),
    (("id",), "Not An Id", "id"),
    (("sha256",), "abc", "sha256"),
    (("task",), "detection", "task"),
    (("architecture",), "UNet2D", "architecture"),
    (("architecture",), "ResNet", "architecture"),
    (("arguments", "in_channels"), 1, "arguments.in_channels"),
    (("not_for_clinical_use",), "yes", "not_for_clinical_use"),
    (("metrics",), {"auc": float("nan")}, "metrics.auc"),
])
def test_manifest_errors_name_the_field(path, value, field):
    data = _valid_dict()
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises((ValueError, TypeError)) as info:
        Manifest.from_dict(data)
    assert str(info.value).startswith("manifest.json: ")
    assert field in str(info.value)


def test_manifest_missing_and_unknown_fields():
    data = _valid_dict()
    del data["intended_use"]
    with pytest.raises(ValueError, match="intended_use is missing"):
        Manifest.from_dict(data)
    data = _valid_dict()
    data["input"]["colour"] = True
    with pytest.raises(ValueError, match="input.colour is not a known field"):
        Manifest.from_dict(data)


def test_manifest_round_trip_through_json():
    data = _valid_dict()
    again = Manifest.from_dict(json.loads(json.dumps(data)))
    assert again.to_dict() == data
    assert again.input.size == (32, 32) and again.outputs[0].name == "nodule"


def test_package_round_trip(tmp_path):
    model, manifest = _model(), _manifest()
    folder = save_package(tmp_path / "pkg", model, manifest)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "weights.safetensors"]
    assert folder.stat().st_mode & 0o777 == 0o755  # readable by whoever runs the models, not private
    assert len(manifest.sha256) == 64
    loaded = load_package(folder)
    assert not loaded.model.training
    assert loaded.manifest.to_dict() == manifest.to_dict()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), model.eval()(x))
    assert loaded.model.calibration_temperature == 1.5  # the calibration travels in the manifest's arguments
    with pytest.raises(FileExistsError):
        save_package(folder, model, _manifest())
    save_package(folder, model, _manifest(version="0.2.0"), overwrite=True)
    assert load_package(folder).manifest.version == "0.2.0"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_tampered_weights_are_refused(tmp_path):
    folder = save_package(tmp_path / "pkg", _model(), _manifest())
    weights = folder / "weights.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0x01
    weights.write_bytes(bytes(blob))
    with pytest.raises(PackageError, match="does not match the sha256 in manifest.json: the package was modified"):
        load_package(folder)


def test_pickled_weights_are_never_loaded(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", forbidden)
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save(_model().state_dict(), folder / "model.pt")
    manifest = _manifest()
    manifest.sha256 = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest.to_dict()))
    with pytest.raises(PackageError, match=r"model\.pt: pickled weights are never loaded"):
        load_package(folder)
    # a pickle renamed to weights.safetensors with a matching hash is still not unpickled
    real = save_package(tmp_path / "renamed", _model(), _manifest())
    blob = (folder / "model.pt").read_bytes()
    (real / "weights.safetensors").write_bytes(blob)
    data = json.loads((real / "manifest.json").read_text())
    data["sha256"] = package_module._sha256_bytes(blob)
    (real / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(PackageError, match="not a valid safetensors file"):
        load_package(real)


def test_bad_manifest_and_wrong_weights_are_refused(tmp_path):
    folder = save_package(tmp_path / "pkg", _model(), _manifest())
    data = json.loads((folder / "manifest.json").read_text())
    broken = copy.deepcopy(data)
    broken["input"]["size"] = "big"
    (folder / "manifest.json").write_text(json.dumps(broken))
    with pytest.raises(PackageError, match="input.size"):
        load_package(folder)
    other = copy.deepcopy(data)
    other["arguments"]["width"] = 8
    (folder / "manifest.json").write_text(json.dumps(other))
    with pytest.raises(PackageError, match="does not fit NoduleCNN"):
        load_package(folder)
    with pytest.raises(PackageError, match="no manifest.json"):
        load_package(tmp_path)


def test_find_packages_reports_broken_packages(tmp_path, no_user_models):
    good = save_package(tmp_path / "models" / "good", _model(), _manifest())
    bad = tmp_path / "models" / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    pickled = tmp_path / "models" / "pickled"
    pickled.mkdir()
    (pickled / "weights.pth").write_bytes(b"\x80\x04")
    found = {p.path.name: p for p in find_packages(extra=[tmp_path / "models", tmp_path / "missing"])}
    assert found["good"].ok and found["good"].manifest.id == "test-nodule" and found["good"].source == "path"
    assert not found["bad"].ok and "JSON" in found["bad"].error
    assert not found["pickled"].ok and "manifest.json" in found["pickled"].error
    assert not found["missing"].ok
    assert find_model(good).manifest.id == "test-nodule"
    with pytest.raises(PackageError, match="no model package"):
        find_model("no-such-model")


def test_user_package_is_found_by_id(tmp_path, no_user_models):
    save_package(no_user_models / "mine", _model(), _manifest(id="my-model"))
    info = find_model("my-model")
    assert info.source == "user" and info.manifest.id == "my-model"


def test_model_card_says_what_matters():
    manifest = _manifest()
    manifest.sha256 = "a" * 64
    card = model_card(manifest)
    assert "test-nodule" in card and "NOT FOR CLINICAL USE" in card and "threshold 0.300" in card
    assert "auc 0.500" in card


def test_builtin_models_dir_is_beside_the_package():
    assert builtin_models_dir().parts[-2:] == ("resources", "models")


def test_segmentation_manifest_agreement():
    spec = InputSpec(size=(40, 40), channels=3)
    outputs = [OutputLabel(0, "background", "#000000"), OutputLabel(1, "lung", "#0000ff")]
    manifest = _manifest(task="segmentation", architecture="UNet2D", arguments={"in_channels": 3, "classes": 2,
                                                                                "depth": 4}, input=spec, outputs=outputs)
    with pytest.raises(ValueError, match="divisible by 16"):
        manifest.to_dict()
    manifest.input.size = (64, 64)
    manifest.to_dict()
    model = UNet2D(in_channels=3, classes=2, width=4, depth=4)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_packages_listing(tmp_path, no_user_models):
    save_package(tmp_path / "good", _model(), _manifest())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("[]")
    infos = [p for p in find_packages(extra=[tmp_path]) if p.source == "path"]
    text = package_module.packages_listing(infos)
    assert "BROKEN [path]" in text and "Test nodule model" in text
    short = package_module.packages_listing(infos, cards=False)
    assert "test-nodule" in short and len(short.splitlines()) == 3
