"""Training end to end on tiny phantoms and folders: packages written, deterministic, no leakage."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from medviewer.ai.data import PhantomRanges, SliceDataset, draw_configs, iter_phantoms, phantom_entry, split_by_group
from medviewer.ai.manifest import InputSpec
from medviewer.ai.package import load_package
from medviewer.ai.train import train_classifier, train_segmenter
from medviewer.ai.train_cli import add_train_arguments
from medviewer.ai.train_cli import run as run_train_command

TINY = PhantomRanges(size=64, extent_mm=(60.0, 80.0), slice_thickness_mm=(5.0, 5.0), nodule_count=(3, 4),
                     nodule_diameter_mm=(12.0, 20.0), vessel_generations=3)
SPEC = InputSpec(size=(32, 32), channels=3)


@pytest.fixture(scope="module")
def phantoms():
    return list(iter_phantoms(draw_configs(4, seed=7, ranges=TINY)))


def _dataset(phantoms, task: str) -> SliceDataset:
    data = SliceDataset(class_names=["no", "yes"] if task == "classification" else ["bg", "lung", "nodule"])
    for ph in phantoms:
        data.append(*phantom_entry(ph, SPEC, task))
    return data


def _classify(phantoms, seed=0):
    data = _dataset(phantoms, "classification")
    train, val = split_by_group(data.groups, 0.25, 0)
    return train_classifier(data.subset(train), data.subset(val), channels=3, arguments={"width": 4, "depth": 2},
                            epochs=1, steps_per_epoch=3, batch_size=8, seed=seed, device="cpu")


def test_classifier_training_is_deterministic(phantoms):
    a, b = _classify(phantoms), _classify(phantoms)
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), name
    assert a.arguments == b.arguments and a.metrics == b.metrics
    c = _classify(phantoms, seed=1)
    assert any(not torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), c.model.state_dict().values()))
    assert {"auc", "accuracy", "sensitivity", "specificity", "ece", "threshold"} <= set(a.metrics)
    assert a.arguments["calibration_temperature"] > 0 and "calibration_bias" in a.arguments


def test_segmenter_training_is_deterministic(phantoms):
    data = _dataset(phantoms, "segmentation")
    train, val = split_by_group(data.groups, 0.25, 0)
    runs = [train_segmenter(data.subset(train), data.subset(val), channels=3, classes=3,
                            arguments={"width": 4, "depth": 2}, epochs=1, steps_per_epoch=2, batch_size=2,
                            crop=16, val_max_slices=6, seed=3, device="cpu") for _ in range(2)]
    for x, y in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values()):
        assert torch.equal(x, y)
    assert set(runs[0].metrics["dice"]) == {"bg", "lung", "nodule"}


def _parse(*argv) -> argparse.Namespace:
    return add_train_arguments(argparse.ArgumentParser()).parse_args(list(argv))


@pytest.mark.parametrize("task, extra", [("classify", ["--width", "4"]), ("segment", ["--width", "4", "--crop", "32"])])
def test_train_command_writes_a_valid_package(tmp_path, task, extra, capsys):
    out = tmp_path / f"{task}-pkg"
    ns = _parse(task, "--phantoms", "2", "--phantom-size", "64", "--out", str(out), "--epochs", "1",
                "--steps-per-epoch", "2", "--batch-size", "4", "--size", "32", "--device", "cpu", *extra)
    assert run_train_command(ns) == 0
    loaded = load_package(out)
    manifest = loaded.manifest
    assert manifest.task == ("classification" if task == "classify" else "segmentation")
    assert manifest.not_for_clinical_use and manifest.input.size == (32, 32)
    assert "validation" in manifest.metrics and manifest.training["data"]["kind"] == "phantoms"
    printed = capsys.readouterr().out
    assert "epoch 1/1" in printed and "NOT FOR CLINICAL USE" in printed
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        out_shape = loaded.model(x).shape
    assert out_shape == ((1, 1) if task == "classify" else (1, 3, 32, 32))


def test_train_command_on_picture_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, level in (("normal", 40), ("abnormal", 200)):
        for patient in range(3):
            folder = tmp_path / "data" / label / f"patient{patient}"
            folder.mkdir(parents=True)
            for i in range(2):
                pixels = np.clip(rng.normal(level, 20, (20, 24)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"img{i}.png")
    out = tmp_path / "pkg"
    ns = _parse("classify", "--data", str(tmp_path / "data"), "--out", str(out), "--epochs", "1", "--size", "16",
                "--architecture", "SeedCNN", "--batch-size", "4", "--device", "cpu")
    assert run_train_command(ns) == 0
    manifest = load_package(out).manifest
    assert manifest.input.context == "2d" and manifest.input.channels == 1 and manifest.input.clip == (0.0, 255.0)
    assert [o.name for o in manifest.outputs] == ["abnormal"]  # one logit: the class that is not "normal"
    data = manifest.training["data"]
    assert data["train_groups"] + data["validation_groups"] == data["groups"] == 3  # patients, not pictures


def test_train_command_on_masks_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for name in ("a_1", "a_2", "b_1", "c_1"):
        image = rng.integers(0, 60, (32, 32)).astype(np.uint8)
        mask = np.zeros((32, 32), dtype=np.uint8)
        r, c = rng.integers(4, 20, 2)
        image[r:r + 8, c:c + 8] = 220
        mask[r:r + 8, c:c + 8] = 255
        (tmp_path / "data" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "data" / "images" / f"{name}.png")
        if name.startswith("a"):
            Image.fromarray(mask).save(tmp_path / "data" / "masks" / f"{name}.png")
        else:
            np.save(tmp_path / "data" / "masks" / f"{name}.npy", mask // 255)
    out = tmp_path / "seg"
    ns = _parse("segment", "--data", str(tmp_path / "data"), "--out", str(out), "--epochs", "1", "--size", "32",
                "--width", "4", "--batch-size", "2", "--device", "cpu")
    assert run_train_command(ns) == 0
    manifest = load_package(out).manifest
    assert [o.name for o in manifest.outputs] == ["background", "label 1"]
    assert set(manifest.metrics["validation"]["dice"]) == {"background", "label 1"}


def test_train_command_refuses_an_existing_package(tmp_path):
    (tmp_path / "pkg").mkdir()
    with pytest.raises(FileExistsError):
        run_train_command(_parse("classify", "--phantoms", "2", "--out", str(tmp_path / "pkg")))


def test_classifier_on_crops_with_dense_supervision(phantoms):
    data = _dataset(phantoms, "classification")
    for meta in data.meta:
        meta["sample_weight"] = np.where(meta["nodule_area_mm2"] > 0, 2.0, 1.0)
    train, val = split_by_group(data.groups, 0.25, 0)
    result = train_classifier(data.subset(train), data.subset(val), channels=3,
                              arguments={"width": 4, "depth": 2, "head_pool": "max"}, epochs=1, steps_per_epoch=2,
                              batch_size=4, crop=16, crop_min_area_mm2=20.0, dense_supervision=1.0,
                              val_max_slices=8, seed=0, device="cpu")
    assert result.settings["crop"] == 16 and result.settings["dense_supervision"] == 1.0
    assert set(result.model.state_dict()) == set(build_like(result).state_dict())  # the auxiliary head is not kept
    with pytest.raises(ValueError, match="crops need"):
        train_classifier(data.subset(train), data.subset(val), channels=3, arguments={"width": 4, "depth": 2},
                         epochs=1, steps_per_epoch=1, crop=16, seed=0, device="cpu")


def build_like(result):
    from medviewer.ai.networks import build

    return build(result.architecture, result.arguments)


def test_segment_folder_of_demo_studies(tmp_path):
    from medviewer.ai.demo_data import write_phantom_dicom
    from medviewer.ai.folders import segmentation_folder
    from medviewer.ai.phantom import PhantomConfig, generate_phantom

    # six 2.5 mm slices leave no room for a nodule: the masks hold background and lung only
    config = PhantomConfig(slices=6, size=32, nodule_count=(1, 1), nodule_diameter_mm=(15.0, 15.0),
                           vessel_generations=2)
    for n in range(2):
        write_phantom_dicom(generate_phantom(config, n), tmp_path, study_name=f"study{n}", patient_id=f"P{n}")
    data, spec = segmentation_folder(tmp_path, 32)
    assert len(data) == 2 and sorted(data.groups) == ["P0", "P1"]
    assert max(int(m.max()) for m in data.masks) == 1
    # truth.json names three labels: the model still gets an output for "nodule"
    assert data.class_names == ["background", "lung", "nodule"]
    assert spec.modality == "CT" and spec.units == "HU" and spec.context == "2.5d"
    assert spec.slice_spacing_mm == (2.5, 2.5)
    assert data.masks[0].shape == data.images[0].shape == (6, 32, 32)
