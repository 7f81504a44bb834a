"""What the assistant says about a series: the :class:`Prediction`, as plain numpy data.

Contract (DESIGN.md): per-slice probabilities per class, a study-level probability, a uint8
label mask aligned to the Volume (same shape, same slice order), an optional float16 heatmap,
the findings, and the identity of every model that contributed (id, version, weights
sha256) for provenance. Nothing here imports torch or Qt: the viewer, the reports and the
tests read predictions without the engine.

On disk (``medviewer predict --out DIR``): ``predictions.json``, ``mask.npy`` and
``heatmap.npy``; see :func:`write_prediction` and the README.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
REVIEW_STATES = ("pending", "accepted", "rejected")
# Labels that are anatomy rather than findings: they get a mask but no findings table rows.
ANATOMY_LABELS = {"background", "lung", "lungs", "body", "heart", "airway", "vessel", "vessels"}


def is_finding_label(name: str) -> bool:
    return name.lower() not in ANATOMY_LABELS


def label_rgb(color: Any) -> tuple[int, int, int] | None:
    """A label colour as (r, g, b) 0-255: the manifests' ``"#rrggbb"``, or three numbers; None if neither."""
    try:
        if isinstance(color, str):
            text = color.strip().lstrip("#")
            if len(text) != 6:
                return None
            return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
        if color is not None and len(color) >= 3:
            return tuple(int(min(max(float(c), 0.0), 255.0)) for c in color[:3])
    except (TypeError, ValueError):
        pass
    return None


@dataclass
class Finding:
    """One connected region of a label, measured in patient units.

    ``slices`` is the inclusive (first, last) slice range in the volume's order;
    ``centroid_index`` is (k, j, i) voxel indices; ``diameter_mm`` the longest in-plane
    (axial) diameter over the slices; ``confidence`` (0–1) the agreement of the test-time
    augmented passes over the region (None where not measured); ``compactness`` the region's
    volume over that of a sphere as wide as its largest extent (1 for a ball, near 0 for a
    tube such as a vessel; None where not measured).
    """

    id: int
    label: str
    label_value: int
    slices: tuple[int, int]
    centroid_index: tuple[float, float, float]
    centroid_lps_mm: tuple[float, float, float] | None
    voxels: int
    volume_ml: float
    diameter_mm: float
    max_probability: float
    mean_probability: float
    confidence: float | None = None
    review: str = "pending"
    note: str = ""
    compactness: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["slices"] = list(self.slices)
        data["centroid_index"] = [round(float(v), 3) for v in self.centroid_index]
        data["centroid_lps_mm"] = [round(float(v), 3) for v in self.centroid_lps_mm] if self.centroid_lps_mm else None
        for key in ("volume_ml", "diameter_mm", "max_probability", "mean_probability"):
            data[key] = round(float(data[key]), 5)
        data["confidence"] = None if self.confidence is None else round(float(self.confidence), 5)
        data["compactness"] = None if self.compactness is None else round(float(self.compactness), 4)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Finding:
        values = dict(data)
        values["slices"] = tuple(values["slices"])
        values["centroid_index"] = tuple(values["centroid_index"])
        if values.get("centroid_lps_mm") is not None:
            values["centroid_lps_mm"] = tuple(values["centroid_lps_mm"])
        return cls(**values)


@dataclass
class Prediction:
    """The assistant's output for one series (or, while running, the part done so far)."""

    series_uid: str
    sop_instance_uids: list[str]
    positions_lps_mm: list[tuple[float, float, float]] | None
    classes: list[str] = field(default_factory=list)
    slice_probabilities: np.ndarray | None = None  # (slices, classes) float32
    study_probability: float | None = None
    mask: np.ndarray | None = None  # (slices, rows, cols) uint8, label values of the manifest
    labels: dict[int, dict[str, Any]] = field(default_factory=dict)  # value -> {name, color, threshold}
    heatmap: np.ndarray | None = None  # (slices, rows, cols) float16 in [0, 1]
    findings: list[Finding] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    device: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    done_slices: np.ndarray | None = None  # (slices,) bool: which slices have results
    complete: bool = False
    created: str = ""  # when the models ran: ISO 8601 with the UTC offset

    def __post_init__(self) -> None:
        n = len(self.sop_instance_uids)
        if self.slice_probabilities is not None and self.slice_probabilities.shape[0] != n:
            raise ValueError(f"slice_probabilities has {self.slice_probabilities.shape[0]} rows for {n} slices")
        for name in ("mask", "heatmap"):
            array = getattr(self, name)
            if array is not None and array.shape[0] != n:
                raise ValueError(f"{name} has {array.shape[0]} slices, the series {n}")

    @property
    def reports_findings(self) -> bool:
        """Whether a segmenter with a finding label (not only anatomy) contributed."""
        return any(is_finding_label(spec.get("name", "")) for value, spec in self.labels.items() if value != 0)

    @property
    def verdict(self) -> str:
        """'positive' / 'negative' for the study.

        Where a segmenter reports findings, the study is positive when at least one finding is reported: a
        per-slice classifier's highest probability over a long series is too easily raised by one vessel cut
        across to decide a study alone. Without one, the first classifier's threshold on the study probability
        (the highest slice probability) decides.
        """
        if self.reports_findings and self.complete:
            return "positive" if self.findings else "negative"
        if self.study_probability is None:
            return "unknown"
        threshold = next((m.get("threshold") for m in self.models if m.get("task") == "classification"), 0.5)
        return "positive" if self.study_probability >= (threshold or 0.5) else "negative"

    def to_json(self) -> dict[str, Any]:
        """predictions.json: everything but the arrays (slice order = the loaded volume's)."""
        slices = []
        for k, uid in enumerate(self.sop_instance_uids):
            entry: dict[str, Any] = {"index": k, "sop_instance_uid": uid}
            if self.positions_lps_mm is not None:
                entry["position_lps_mm"] = [round(float(v), 4) for v in self.positions_lps_mm[k]]
            if self.slice_probabilities is not None:
                entry["probabilities"] = {name: round(float(self.slice_probabilities[k, c]), 6)
                                          for c, name in enumerate(self.classes)}
            slices.append(entry)
        return {
            "format": "medviewer-predictions",
            "format_version": FORMAT_VERSION,
            "series_instance_uid": self.series_uid,
            "models": self.models,
            "device": self.device,
            "timings_s": {k: round(float(v), 4) for k, v in self.timings.items()},
            "warnings": list(self.warnings),
            "classes": list(self.classes),
            "study_probability": None if self.study_probability is None else round(float(self.study_probability), 6),
            "verdict": self.verdict,
            "labels": {str(value): spec for value, spec in sorted(self.labels.items())},
            "mask": {"file": "mask.npy", "dtype": "uint8", "shape": list(self.mask.shape)} if self.mask is not None else None,
            "heatmap": {"file": "heatmap.npy", "dtype": "float16", "shape": list(self.heatmap.shape)}
            if self.heatmap is not None else None,
            "slices": slices,
            "findings": [f.to_dict() for f in self.findings],
            "complete": self.complete,
            "created": self.created,
        }


def write_prediction(prediction: Prediction, out_dir: str | os.PathLike, *, force: bool = False) -> list[Path]:
    """Write predictions.json, mask.npy and heatmap.npy into ``out_dir``: all of them or none
    (:func:`medviewer.core.safe.write_files`). Existing files are kept unless ``force``
    (:class:`~medviewer.core.safe.ExistsError`); a failed write is an :class:`~medviewer.core.safe.ExportError`.
    """
    from medviewer.core.safe import write_files

    out = Path(out_dir)
    files = {out / "predictions.json": lambda fp: fp.write(json.dumps(prediction.to_json(), indent=2).encode())}
    if prediction.mask is not None:
        files[out / "mask.npy"] = lambda fp: np.save(fp, np.ascontiguousarray(prediction.mask, dtype=np.uint8))
    if prediction.heatmap is not None:
        files[out / "heatmap.npy"] = lambda fp: np.save(fp, np.ascontiguousarray(prediction.heatmap, dtype=np.float16))
    return write_files(files, force=force)


def read_prediction(folder: str | os.PathLike) -> Prediction:
    """Read what :func:`write_prediction` wrote (mask and heatmap memory-mapped)."""
    folder = Path(folder)
    path = folder / "predictions.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no predictions.json in this folder") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if data.get("format") != "medviewer-predictions":
        raise ValueError(f"{path}: not a MedViewer predictions file")
    slices = data["slices"]
    classes = data.get("classes", [])
    probabilities = None
    if classes:
        probabilities = np.array([[s["probabilities"][c] for c in classes] for s in slices], dtype=np.float32)
    mask = np.load(folder / "mask.npy", mmap_mode="r") if data.get("mask") else None
    heatmap = np.load(folder / "heatmap.npy", mmap_mode="r") if data.get("heatmap") else None
    positions = [tuple(s["position_lps_mm"]) for s in slices] if slices and "position_lps_mm" in slices[0] else None
    return Prediction(
        series_uid=data["series_instance_uid"],
        sop_instance_uids=[s["sop_instance_uid"] for s in slices],
        positions_lps_mm=positions,
        classes=classes,
        slice_probabilities=probabilities,
        study_probability=data.get("study_probability"),
        mask=mask,
        labels={int(k): v for k, v in data.get("labels", {}).items()},
        heatmap=heatmap,
        findings=[Finding.from_dict(f) for f in data.get("findings", [])],
        models=data.get("models", []),
        device=data.get("device", ""),
        timings=data.get("timings_s", {}),
        warnings=data.get("warnings", []),
        complete=data.get("complete", True),
        created=data.get("created", ""),
    )
