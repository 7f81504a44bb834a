"""``medviewer train classify|segment``: the command-line side of training (argument parsing, printing).

The CLI adds the subcommand with :func:`add_train_arguments` and calls :func:`run` with the parsed namespace; every attribute has a default, so a
namespace built by other means works too.  Errors are :class:`~medviewer.core.errors.MedViewerError` or
``ValueError`` with one-line messages for the CLI to print.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from medviewer.ai.data import PhantomRanges, SliceDataset, draw_configs, iter_phantoms, phantom_entry, split_by_group
from medviewer.ai.folders import DataError, _ct_spec, classification_folder, segmentation_folder
from medviewer.ai.manifest import InputSpec, Manifest, OutputLabel, json_safe
from medviewer.ai.package import model_card, save_package

__all__ = ["add_train_arguments", "run"]

_PALETTE = ["#000000", "#3080ff", "#ff3030", "#30c050", "#ffc020", "#c040ff", "#20d0d0", "#ff8020"]
_DEFAULTS = {
    "classify": {"architecture": "NoduleCNN", "size": 128, "batch_size": 32, "lr": 1e-3, "epochs": 10},
    "segment": {"architecture": "UNet2D", "size": 256, "batch_size": 8, "lr": 1e-3, "epochs": 10},
}


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``medviewer train``'s arguments to ``parser`` (a subparser); returns it."""
    parser.add_argument("task", choices=("classify", "segment"), help="train a classifier or a segmenter")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="DIR",
                        help="classify: DIR/<class>/ pictures or DICOM; segment: DIR/images + DIR/masks, "
                             "or study folders with labels.npy / mask.nii.gz")
    source.add_argument("--phantoms", type=int, metavar="N", help="train on N generated chest-CT phantoms instead")
    parser.add_argument("--phantom-size", type=int, default=256, metavar="PX",
                        help="with --phantoms: rows and columns of each phantom (350 mm field of view)")
    parser.add_argument("--out", type=Path, required=True, metavar="PKG", help="model package folder to write")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    parser.add_argument("--size", type=int, default=None, help="input size in pixels (classify 128, segment 256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--architecture", default=None, help="NoduleCNN or SeedCNN (classify), UNet2D (segment)")
    parser.add_argument("--width", type=int, default=None, help="channels of the first layer (NoduleCNN, UNet2D)")
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--crop", type=int, default=None, help="segment: train on crops of this size")
    parser.add_argument("--positive", default=None, metavar="CLASS",
                        help="classify with two class folders: the folder of the 'present' class")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of patients held out for validation")
    parser.add_argument("--id", dest="model_id", default=None, help="package id (default: from --out)")
    parser.add_argument("--name", default=None, help="display name")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all usable cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing package folder")
    return parser


def _opt(ns, name: str, default=None):
    value = getattr(ns, name, None)
    return default if value is None else value


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return (slug or "model")[:64]


class _Bar:
    """One line per epoch; within an epoch a carriage-return bar when the output is a terminal."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.epoch, self.epochs = 1, 1

    def step(self, done: int, total: int) -> None:
        if self.tty:
            filled = round(24 * done / total)
            self.stream.write(f"\repoch {self.epoch}/{self.epochs} [{'#' * filled:<24}] {done}/{total}")
            self.stream.flush()

    def end(self, epoch: int, epochs: int, row: dict) -> None:
        values = " ".join(f"{k} {v:.4f}" for k, v in row.items() if isinstance(v, float) and k != "seconds")
        filled = round(24 * epoch / epochs)
        self.stream.write(("\r" if self.tty else "") +
                          f"epoch {epoch}/{epochs} [{'#' * filled:<24}] {values} ({row.get('seconds', 0):.0f} s)\n")
        self.stream.flush()
        self.epoch, self.epochs = epoch + 1, epochs


def _phantom_data(count: int, task: str, spec: InputSpec, seed: int, ranges: PhantomRanges) -> SliceDataset:
    if count < 2:
        raise ValueError(f"--phantoms must be at least 2 (one for validation), got {count}")
    names = ["no nodule", "nodule"] if task == "classification" else ["background", "lung", "nodule"]
    data = SliceDataset(class_names=names)
    for ph in iter_phantoms(draw_configs(count, seed, ranges)):
        data.append(*phantom_entry(ph, spec, task))
    return data


def run(ns) -> int:
    """Train as ``ns`` says, write the package and print its card; returns 0."""
    task_word = _opt(ns, "task", "classify")
    if task_word not in _DEFAULTS:
        raise ValueError(f"train: task must be 'classify' or 'segment', got {task_word!r}")
    task = "classification" if task_word == "classify" else "segmentation"
    defaults = _DEFAULTS[task_word]
    size = int(_opt(ns, "size", defaults["size"]))
    out = Path(_opt(ns, "out", ""))
    if not str(out):
        raise ValueError("train: --out PKG is required")
    if out.exists() and not _opt(ns, "overwrite", False):
        raise FileExistsError(f"{out}: already exists (use --overwrite to replace it)")
    seed = int(_opt(ns, "seed", 0))
    data_dir, phantoms = _opt(ns, "data"), _opt(ns, "phantoms")
    started = time.perf_counter()
    if data_dir is not None:
        print(f"reading {data_dir} ...", flush=True)
        if task == "classification":
            data, spec = classification_folder(data_dir, size, _opt(ns, "positive"))
        else:
            data, spec = segmentation_folder(data_dir, size)
        description = {"source": str(data_dir), "kind": "folder"}
    elif phantoms is not None:
        spec = _ct_spec(size)
        spec.pixel_spacing_mm, spec.slice_spacing_mm = (0.6, 2.0), (1.0, 5.0)
        ranges = PhantomRanges(size=int(_opt(ns, "phantom_size", 256)))
        if ranges.size < 16:
            raise ValueError(f"--phantom-size must be at least 16, got {ranges.size}")
        print(f"generating {phantoms} phantoms ...", flush=True)
        data = _phantom_data(int(phantoms), task, spec, seed, ranges)
        description = {"source": "synthetic chest-CT phantoms (medviewer.ai.phantom)", "kind": "phantoms",
                       "phantoms": int(phantoms), "phantom_seed": seed, "phantom_ranges": ranges.to_dict()}
    else:
        raise ValueError("train: give --data DIR or --phantoms N")
    strata = [int(t[t >= 0].max()) if t is not None and (t >= 0).any() else 0 for t in data.targets]
    train_idx, val_idx = split_by_group(data.groups, float(_opt(ns, "val_fraction", 0.2)), seed, strata)
    if not train_idx or not val_idx:
        raise DataError(str(data_dir or "phantoms"), f"needs at least two patients/groups to hold one out for "
                                                     f"validation, found {len(set(data.groups))}")
    train, val = data.subset(train_idx), data.subset(val_idx)
    description.update(volumes=len(data), groups=len(set(data.groups)), train_groups=len(set(train.groups)),
                       validation_groups=len(set(val.groups)), classes=data.class_names,
                       split="by patient/study (group), no group on both sides")
    print(f"{len(train)} volumes ({len(set(train.groups))} patients) for training, {len(val)} "
          f"({len(set(val.groups))}) for validation; input {spec.channels}x{spec.size[0]}x{spec.size[1]}", flush=True)
    result = _train(ns, task, defaults, spec, train, val, seed)
    outputs = _outputs(task, data.class_names, result)
    model_id = _opt(ns, "model_id") or _slug(out.name)
    manifest = Manifest(
        id=model_id, name=_opt(ns, "name") or model_id, version="1.0.0", sha256="", task=task,
        architecture=result.architecture, arguments=result.arguments, input=spec, outputs=outputs,
        intended_use=f"User-trained {task} model (medviewer train); research use only.",
        not_for_clinical_use=True, disclaimer="Trained with medviewer train; not validated for clinical use.",
        training=json_safe({"data": description, **result.settings, "history": result.history}),
        metrics=json_safe({"validation": result.metrics}),
    )
    path = save_package(out, result.model, manifest, overwrite=bool(_opt(ns, "overwrite", False)))
    print(f"wrote {path} in {time.perf_counter() - started:.0f} s", flush=True)
    print(model_card(manifest), flush=True)
    return 0


def _train(ns, task, defaults, spec, train, val, seed):
    from medviewer.ai.train import train_classifier, train_segmenter

    bar = _Bar()
    common = dict(
        channels=spec.channels, epochs=int(_opt(ns, "epochs", defaults["epochs"])),
        batch_size=int(_opt(ns, "batch_size", defaults["batch_size"])), lr=float(_opt(ns, "lr", defaults["lr"])),
        steps_per_epoch=_opt(ns, "steps_per_epoch"), seed=seed, device=_opt(ns, "device", "auto"),
        threads=_opt(ns, "threads"), progress=bar.end, on_step=bar.step,
    )
    architecture = _opt(ns, "architecture", defaults["architecture"])
    arguments: dict = {}
    if _opt(ns, "width") is not None:
        arguments["width"] = int(ns.width)
    if architecture == "SeedCNN":
        arguments = {"size": spec.size[0]}
        if spec.size[0] != spec.size[1]:
            raise ValueError("SeedCNN needs a square input size")
    if task == "classification":
        # phantoms come with nodule masks: let them teach the feature map where the nodule is
        dense = 1.0 if architecture == "NoduleCNN" and all(m is not None for m in train.masks) else 0.0
        return train_classifier(train, val, architecture=architecture, arguments=arguments, dense_supervision=dense,
                                **common)
    classes = len(train.class_names)
    crop = _opt(ns, "crop")
    if crop is not None and (crop > spec.size[0] or crop > spec.size[1]):
        raise ValueError(f"--crop {crop} is larger than the input size {spec.size[0]}")
    return train_segmenter(train, val, classes=classes, architecture=architecture, arguments=arguments,
                           crop=crop, **common)


def _outputs(task: str, names: list[str], result) -> list[OutputLabel]:
    """One label per output channel: a two-class classifier has one logit, for its second ("present") class."""
    if task == "classification" and len(names) == 2:
        return [OutputLabel(0, names[1], _PALETTE[2], round(result.threshold, 6))]
    if task == "classification":
        return [OutputLabel(v, n, _PALETTE[(v + 1) % len(_PALETTE)], 0.5) for v, n in enumerate(names)]
    return [OutputLabel(v, n, _PALETTE[v % len(_PALETTE)], 0.5) for v, n in enumerate(names)]
