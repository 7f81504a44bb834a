"""Training data from folders, as :class:`~medviewer.ai.data.SliceDataset` plus the matching :class:`InputSpec`.

Classification — one sub-folder per class (sorted names are the classes)::

    DIR/<class>/**/*.png|*.jpg|*.jpeg     each picture one sample (converted to 8-bit grey)
    DIR/<class>/**/<DICOM files>          each series loaded; every slice a sample of the class

Segmentation — either pictures with masks of the same name, or studies with a mask volume::

    DIR/images/**/NAME.png|.jpg|.jpeg|.dcm   with   DIR/masks/**/NAME.png|.npy|.nii|.nii.gz   (2D pairs)
    DIR/<study>/**/<DICOM series>            with   DIR/<study>/labels.npy|mask.npy|labels.nii[.gz]|mask.nii[.gz]

(the second is what ``medviewer demo-data`` writes, with its mask and ``truth.json`` in the study's hidden
``.truth`` folder, also read here).  NPY mask volumes are ``(slices, rows, cols)`` like the
loaded series; NIfTI arrays are read in voxel order ``(cols, rows, slices)`` and transposed, without reorienting;
a mask whose shape differs from its image is refused.  Mask values ``{0, 255}`` become ``{0, 1}``; other value
sets with values above 31 are mapped in sorted order to 0, 1, 2, ...

Two classes train one logit for the "present" class: the one that is not named like "normal"/"negative"/"no"
(else the second in sorted order; ``medviewer train --positive NAME`` chooses).

Group keys (never split between training and validation): DICOM PatientID (else StudyInstanceUID); for pictures
the first sub-folder below the class or images folder, else the file's own name.  CT series give a CT/HU input
spec (clip -1000..400, 2.5D with three slices); pictures an 8-bit ``"2d"`` spec (clip 0..255, one channel);
other DICOM modalities a spec clipped to the 0.5-99.5 percentiles of the data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medviewer.ai.data import SliceDataset, prepare_volume
from medviewer.ai.demo_data import TRUTH_DIR
from medviewer.ai.manifest import InputSpec
from medviewer.core.errors import MedViewerError

__all__ = ["DataError", "class_order", "classification_folder", "segmentation_folder"]

PICTURES = (".png", ".jpg", ".jpeg")
MASKS = (".png", ".npy", ".nii", ".nii.gz")
MASK_VOLUMES = ("labels.npy", "mask.npy", "labels.nii.gz", "labels.nii", "mask.nii.gz", "mask.nii")
CT_CLIP = (-1000.0, 400.0)


class DataError(MedViewerError, ValueError):
    """Training data that cannot be used: ``"<path>: <reason>"``."""


def _stem(path: Path) -> str:
    name = path.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else path.stem


def _suffix(path: Path) -> str:
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix.lower()


def _picture(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"), dtype=np.uint8)[None]
    except OSError as exc:
        raise DataError(str(path), f"cannot be read as a picture ({exc})") from None


def _picture_spec(size: int) -> InputSpec:
    return InputSpec(modality="OT", units="", window=None, clip=(0.0, 255.0), size=(size, size), channels=1,
                     context="2d", pixel_spacing_mm=(1.0, 1.0), slice_spacing_mm=(1.0, 1.0))


def _ct_spec(size: int, channels: int = 3) -> InputSpec:
    return InputSpec(modality="CT", units="HU", window=(-300.0, 1400.0), clip=CT_CLIP, size=(size, size),
                     channels=channels, context="2.5d", pixel_spacing_mm=(0.3, 3.0), slice_spacing_mm=(0.5, 8.0))


def _dicom_volumes(paths: list[Path]) -> list[tuple[object, str]]:
    """(series, group key) of every DICOM series among ``paths`` (headers only)."""
    from medviewer.core import scan

    if not paths:
        return []
    result = scan([str(p) for p in paths])
    out = []
    for series in result.series:
        if series.first.kind != "dicom":
            continue
        group = str(series.first.get("PatientID", "") or series.first.get("StudyInstanceUID", "") or series.uid)
        out.append((series, group))
    return out


def _load(series) -> tuple[np.ndarray, tuple[float, float, float], str]:
    from medviewer.core import load

    volume = load(series)
    voxels = volume.voxels
    if voxels.ndim == 4:  # colour: luminance
        voxels = (voxels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.int16)
    return voxels, volume.spacing_mm, (volume.modality or "OT").upper()


def _spec_for(kinds: set[str], modalities: set[str], size: int, percentiles: list[tuple[float, float]]) -> InputSpec:
    if kinds == {"picture"}:
        return _picture_spec(size)
    if modalities <= {"CT"}:
        return _ct_spec(size)
    lo = float(np.median([p[0] for p in percentiles]))
    hi = float(np.median([p[1] for p in percentiles]))
    if not hi > lo:
        hi = lo + 1.0
    return InputSpec(modality="/".join(sorted(modalities)), units="", window=((lo + hi) / 2, hi - lo),
                     clip=(lo, hi), size=(size, size), channels=3, context="2.5d")


class _Spacings:
    """The range of voxel spacings seen while loading, written into the spec afterwards."""

    def __init__(self) -> None:
        self.pixel: list[float] = []
        self.slice: list[float] = []

    def add(self, spacing_mm, slices: int) -> None:
        self.pixel += [float(spacing_mm[1]), float(spacing_mm[2])]
        if slices > 1:
            self.slice.append(float(spacing_mm[0]))

    def apply(self, spec: InputSpec) -> None:
        if self.pixel:
            spec.pixel_spacing_mm = (round(min(self.pixel), 4), round(max(self.pixel), 4))
        if self.slice:
            spec.slice_spacing_mm = (round(min(self.slice), 4), round(max(self.slice), 4))
        elif self.pixel:
            spec.slice_spacing_mm = spec.pixel_spacing_mm


def _pictures_only_or_dicom(files: list[Path]) -> tuple[list[Path], list[Path]]:
    pictures = [f for f in files if f.suffix.lower() in PICTURES]
    others = [f for f in files if f.suffix.lower() not in PICTURES and not f.name.startswith(".")
              and _suffix(f) not in (".npy", ".json", ".nii", ".nii.gz", ".txt", ".csv", ".md")]
    return pictures, others


def _group_of(path: Path, base: Path) -> str:
    rel = path.relative_to(base)
    return rel.parts[0] if len(rel.parts) > 1 else _stem(path)


NEGATIVE_NAMES = {"normal", "negative", "neg", "no", "none", "healthy", "benign", "absent", "0", "false", "control",
                  "no-nodule", "no_nodule", "no nodule", "no-finding", "no_finding", "no finding"}


def class_order(names: list[str], positive: str | None = None) -> list[str]:
    """Class names in training order: sorted, but for two classes ``[absent, present]`` (the one-logit network
    predicts the second): ``positive`` if given, else the name that is not a negative word such as "normal"."""
    names = sorted(names)
    if len(names) != 2:
        return names
    if positive is not None:
        if positive not in names:
            raise ValueError(f"--positive {positive!r} is not one of the classes {names}")
        return [n for n in names if n != positive] + [positive]
    negatives = [n for n in names if n.lower() in NEGATIVE_NAMES]
    return [negatives[0], next(n for n in names if n != negatives[0])] if len(negatives) == 1 else names


def classification_folder(root: str | Path, size: int, positive: str | None = None,
                          ) -> tuple[SliceDataset, InputSpec]:
    """Every sample under ``root/<class>/`` at ``size`` x ``size``; see the module docstring.  Two classes become
    targets 0/1 in :func:`class_order` (``positive`` names the "present" class)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(str(root), "is not a folder")
    folders = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(folders) < 2:
        raise DataError(str(root), f"needs one sub-folder per class and at least two classes, found {folders}")
    classes = class_order(folders, positive)
    items = []  # (kind, source, class index, group)
    for c, name in enumerate(classes):
        files = sorted(f for f in (root / name).rglob("*") if f.is_file())
        pictures, others = _pictures_only_or_dicom(files)
        items += [("picture", f, c, f"{_group_of(f, root / name)}") for f in pictures]
        items += [("dicom", series, c, group) for series, group in _dicom_volumes(others)]
    if not items:
        raise DataError(str(root), "no pictures or DICOM series in the class folders")
    for c, name in enumerate(classes):
        if not any(i[2] == c for i in items):
            raise DataError(str(root / name), "holds no pictures or DICOM series")
    kinds = {i[0] for i in items}
    if kinds == {"picture", "dicom"}:
        raise DataError(str(root), "mixes pictures and DICOM series; train on one kind at a time")
    spec = _collect_spec(items, size)
    data = SliceDataset(class_names=classes)
    spacings = _Spacings()
    for kind, source, c, group in items:
        if kind == "picture":
            voxels = _picture(source)
        else:
            voxels, spacing, _ = _load(source)
            spacings.add(spacing, voxels.shape[0])
        image, _ = prepare_volume(voxels, spec)
        data.append(image, None, np.full(voxels.shape[0], c, dtype=np.int64), group,
                    {"source": str(source if kind == "picture" else source.key)})
    spacings.apply(spec)
    return data, spec


def _collect_spec(items, size: int) -> InputSpec:
    kinds = {i[0] for i in items}
    if kinds == {"picture"}:
        return _picture_spec(size)
    modalities = {str(i[1].modality).upper() for i in items}
    percentiles = []
    if not modalities <= {"CT"}:
        for _, series, *_ in items:
            voxels = _load(series)[0]
            percentiles.append(tuple(float(v) for v in np.percentile(voxels[:: max(1, voxels.shape[0] // 8)], (0.5, 99.5))))
    return _spec_for(kinds, modalities, size, percentiles)


def _read_mask(path: Path) -> np.ndarray:
    suffix = _suffix(path)
    try:
        if suffix == ".npy":
            mask = np.load(path, allow_pickle=False)
        elif suffix == ".png":
            from PIL import Image

            with Image.open(path) as im:
                mask = np.asarray(im.convert("L") if im.mode not in ("L", "I", "I;16", "P") else im)
        else:
            import nibabel

            mask = np.asarray(nibabel.load(str(path)).dataobj)
            mask = mask.T if mask.ndim in (2, 3) else mask  # (cols, rows[, slices]) -> ([slices,] rows, cols)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the user's file
        raise DataError(str(path), f"cannot be read as a mask ({exc})") from None
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or not np.issubdtype(mask.dtype, np.number):
        raise DataError(str(path), f"a mask must be a 2-D or 3-D array of numbers, got {mask.dtype} {mask.shape}")
    if np.issubdtype(mask.dtype, np.floating):
        if not np.all(np.equal(np.mod(mask, 1), 0)):
            raise DataError(str(path), "mask values must be whole numbers (labels)")
    return mask.astype(np.int64)


def _mask_mapping(masks: list[np.ndarray]) -> dict[int, int]:
    values = sorted(set().union(*(np.unique(m).tolist() for m in masks)))
    if values and values[0] < 0:
        raise DataError("masks", f"label values must be >= 0, got {values[0]}")
    if 255 in values and set(values) <= {0, 1, 255}:
        # Binary masks, saved as 0/255 pictures or 0/1 arrays (or a mix of both): one label.
        return {0: 0, 1: 1, 255: 1}
    if max(values, default=0) <= 31:
        return {v: v for v in range(max(values, default=0) + 1)}
    return {v: i for i, v in enumerate(values if 0 in values else [0, *values])}


def _identity(mapping: dict[int, int]) -> dict[int, int]:
    return {v: v for v in mapping}


def segmentation_folder(root: str | Path, size: int) -> tuple[SliceDataset, InputSpec]:
    """Images and masks under ``root`` (either layout of the module docstring) at ``size`` x ``size``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(str(root), "is not a folder")
    pairs = _pairs_2d(root) if (root / "images").is_dir() and (root / "masks").is_dir() else _study_pairs(root)
    if not pairs:
        raise DataError(str(root), "found no images with masks (images/ + masks/ of one name, or study folders "
                                   "with labels.npy / mask.nii.gz)")
    kinds = {p[0] for p in pairs}
    if kinds == {"picture", "dicom"}:
        raise DataError(str(root), "mixes pictures and DICOM images; train on one kind at a time")
    spec = _collect_spec([(k, s, 0, g) for k, s, _m, g, _n in pairs], size)
    if kinds == {"dicom"} and spec.modality == "CT" and all(_single_slice(s) for _, s, *_ in pairs):
        spec.channels, spec.context = 1, "2d"
    masks = [_read_mask(m) for _, _, m, _, _ in pairs]
    mapping = _mask_mapping(masks)
    names: dict = {}
    for *_, study_names in pairs:  # label names from every study's truth.json
        names.update({str(k): v for k, v in (study_names or {}).items()})
    named = [int(k) for k in names if str(k).isdigit()]
    # a label named in truth.json but absent from these masks is still an output of the model
    classes = max(max(mapping.values()) + 1, max(named, default=0) + 1 if mapping == _identity(mapping) else 0)
    if max(mapping.values()) < 1:
        raise DataError(str(root), "the masks hold only background (0)")
    data = SliceDataset(class_names=[names.get(str(c), "background" if c == 0 else f"label {c}")
                                     for c in range(classes)])
    lut = np.zeros(max(mapping) + 1, dtype=np.uint8)
    for value, label in mapping.items():
        lut[value] = label
    spacings = _Spacings()
    for (kind, source, mask_path, group, _), mask in zip(pairs, masks):
        if kind == "picture":
            voxels = _picture(source)
        else:
            voxels, spacing, _ = _load(source)
            spacings.add(spacing, voxels.shape[0])
        if mask.shape != voxels.shape:
            raise DataError(str(mask_path), f"mask shape {mask.shape} does not match its image {voxels.shape}")
        image, resized = prepare_volume(voxels, spec, lut[np.clip(mask, 0, len(lut) - 1)])
        data.append(image, resized, None, group, {"source": str(mask_path)})
    spacings.apply(spec)
    return data, spec


def _single_slice(series) -> bool:
    return len(series.frames) == 1


def _pairs_2d(root: Path) -> list[tuple]:
    images, masks = root / "images", root / "masks"
    mask_files = {}
    for f in masks.rglob("*"):
        if f.is_file() and _suffix(f) in MASKS:
            mask_files[str(f.relative_to(masks).parent / _stem(f))] = f
    pairs = []
    for f in sorted(images.rglob("*")):
        if not f.is_file() or f.name.startswith("."):
            continue
        key = str(f.relative_to(images).parent / _stem(f))
        mask = mask_files.get(key)
        if mask is None:
            continue
        if f.suffix.lower() in PICTURES:
            pairs.append(("picture", f, mask, _group_of(f, images), None))
        else:
            found = _dicom_volumes([f])
            if found:
                pairs.append(("dicom", found[0][0], mask, found[0][1], None))
    return pairs


def _study_pairs(root: Path) -> list[tuple]:
    pairs = []
    for study in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        places = (study, study / TRUTH_DIR)
        mask = next((place / n for n in MASK_VOLUMES for place in places if (place / n).is_file()), None)
        if mask is None:
            continue
        names = None
        truth = next((place / "truth.json" for place in places if (place / "truth.json").is_file()), None)
        if truth is not None:
            try:
                names = json.loads(truth.read_text(encoding="utf-8")).get("labels")
            except (OSError, ValueError):
                names = None
        files = sorted(f for f in study.rglob("*")
                       if f.is_file() and not any(part.startswith(".") for part in f.relative_to(study).parts))
        _, others = _pictures_only_or_dicom(files)
        found = _dicom_volumes(others)
        if not found:
            raise DataError(str(study), f"has {mask.name} but no DICOM series")
        if len(found) > 1:
            raise DataError(str(study), f"has {len(found)} DICOM series; keep the one {mask.name} belongs to")
        pairs.append(("dicom", found[0][0], mask, found[0][1], names))
    return pairs
