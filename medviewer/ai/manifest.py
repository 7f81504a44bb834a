"""What a model package's ``manifest.json`` holds, and the one place that checks it.

Fields (all required in the file; :meth:`Manifest.to_dict` writes them all)::

    format, format_version        "medviewer-model-package", 1
    id, name, version             "chest-ct-nodule", a display name, "1.0.0"
    sha256                        hex digest of weights.safetensors (written by save_package)
    task                          "classification" | "segmentation"
    architecture, arguments       a key of networks.ARCHITECTURES and its keyword arguments; a classifier's
                                  calibration ("calibration_temperature", "calibration_bias") is among them
                                  and is applied inside the network's forward (see medviewer.ai.networks), so
                                  sigmoid/softmax of the network's output is the calibrated probability
    input                         InputSpec: modality, units, window, clip, normalisation, size, channels,
                                  context ("2.5d": `channels` neighbouring slices), pixel/slice spacing range
    outputs                       one OutputLabel per output channel, value = channel index: a one-logit
                                  classifier has one (the "present" class, sigmoid), a K-class classifier K
                                  (softmax), a segmenter one per label value 0..K-1 with 0 the background
                                  (argmax).  name, colour, and the operating threshold on the calibrated
                                  probability (segmenters: 0.5, informative)
    intended_use, not_for_clinical_use, disclaimer
    training, metrics             free-form JSON: data description, settings; held-out measurements

Errors name the field: ``ValueError("manifest.json: input.size must be two positive integers")`` (TypeError where
a value has the wrong type).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FORMAT", "FORMAT_VERSION", "InputSpec", "Manifest", "OutputLabel", "TASKS", "json_safe"]

FORMAT, FORMAT_VERSION = "medviewer-model-package", 1
TASKS = ("classification", "segmentation")
CONTEXTS = ("2.5d", "2d")
NORMALISATIONS = ("clip01",)
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_WHERE = "manifest.json"


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars and arrays made plain, tuples made lists and NaN/inf made None, so that it
    passes the manifest's JSON checks (for metrics and training records)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fail(name: str, message: str, kind: type[Exception] = ValueError) -> None:
    raise kind(f"{_WHERE}: {name} {message}")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _str(name: str, v: Any, empty: bool = False) -> str:
    if not isinstance(v, str):
        _fail(name, f"must be a string, got {type(v).__name__}", TypeError)
    if not empty and not v.strip():
        _fail(name, "must not be empty")
    return v


def _number_pair(name: str, v: Any, *, positive: bool = False, ordered: str = "") -> tuple[float, float]:
    """Two finite numbers; ``ordered``: "<" or "<=" between them."""
    what = "two positive numbers" if positive else "two numbers"
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(_is_number(x) for x in v):
        _fail(name, f"must be {what}, got {v!r}")
    a, b = float(v[0]), float(v[1])
    if positive and not (a > 0 and b > 0):
        _fail(name, f"must be {what}, got {v!r}")
    if (ordered == "<" and not a < b) or (ordered == "<=" and not a <= b):
        _fail(name, f"must be (low, high) with low {ordered} high, got {v!r}")
    return a, b


def _json_value(name: str, v: Any) -> None:
    if v is None or isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v)):
        return
    if isinstance(v, (list, tuple)):
        for i, x in enumerate(v):
            _json_value(f"{name}[{i}]", x)
        return
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                _fail(name, f"keys must be strings, got {k!r}", TypeError)
            _json_value(f"{name}.{k}", x)
        return
    _fail(name, f"must hold only JSON values (finite numbers, strings, lists, dicts), got {v!r}", TypeError)


def _dict(name: str, v: Any) -> dict:
    if not isinstance(v, dict):
        _fail(name, f"must be an object, got {type(v).__name__}", TypeError)
    _json_value(name, v)
    return v


def _keys(name: str, data: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    if not isinstance(data, dict):
        _fail(name or "the top level", f"must be an object, got {type(data).__name__}", TypeError)
    missing = [k for k in required if k not in data]
    if missing:
        _fail(f"{name}.{missing[0]}" if name else missing[0], "is missing")
    unknown = sorted(set(data) - set(required) - set(optional))
    if unknown:
        _fail(f"{name}.{unknown[0]}" if name else unknown[0], "is not a known field")


@dataclass
class InputSpec:
    """What the network expects: values in ``units`` (HU for CT) clipped to ``clip`` and scaled to [0, 1]
    (``"clip01"``), resized to ``size`` (rows, cols); ``channels`` neighbouring slices centred on the slice
    (``context="2.5d"``) or one plane (``"2d"``).  ``window`` (centre, width) is the display window matching
    ``clip``; the spacing ranges (min, max) in mm are what the model was trained and checked on (pictures without a
    spacing count as 1 mm pixels, as :func:`medviewer.core.load` reports them)."""

    modality: str = "CT"
    units: str = "HU"
    window: tuple[float, float] | None = (-600.0, 1500.0)
    clip: tuple[float, float] = (-1000.0, 400.0)
    normalisation: str = "clip01"
    size: tuple[int, int] = (128, 128)
    channels: int = 3
    context: str = "2.5d"
    pixel_spacing_mm: tuple[float, float] = (0.5, 2.0)
    slice_spacing_mm: tuple[float, float] = (1.0, 5.0)

    _FIELDS = ("modality", "units", "window", "clip", "normalisation", "size", "channels", "context",
               "pixel_spacing_mm", "slice_spacing_mm")

    def validate(self) -> InputSpec:
        """Check every field (errors name ``input.<field>``) and normalise lists to tuples; returns self."""
        _str("input.modality", self.modality)
        _str("input.units", self.units, empty=True)
        if self.window is not None:
            self.window = _number_pair("input.window", self.window)
            if self.window[1] <= 0:
                _fail("input.window", f"must be (centre, width) with width > 0, got {self.window!r}")
        self.clip = _number_pair("input.clip", self.clip, ordered="<")
        if self.normalisation not in NORMALISATIONS:
            _fail("input.normalisation", f"must be one of {list(NORMALISATIONS)}, got {self.normalisation!r}")
        size = self.size
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            _fail("input.size", f"must be two positive integers, got {size!r}")
        self.size = (int(size[0]), int(size[1]))
        ch = self.channels
        if isinstance(ch, bool) or not isinstance(ch, int) or ch < 1:
            _fail("input.channels", f"must be a positive integer, got {ch!r}")
        if self.context not in CONTEXTS:
            _fail("input.context", f"must be one of {list(CONTEXTS)}, got {self.context!r}")
        if self.context == "2.5d" and ch % 2 == 0:
            _fail("input.channels", f"must be odd for 2.5d context (slices centred on the current one), got {ch}")
        for name in ("pixel_spacing_mm", "slice_spacing_mm"):
            setattr(self, name, _number_pair(f"input.{name}", getattr(self, name), positive=True, ordered="<="))
        return self

    def to_dict(self) -> dict:
        self.validate()
        return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(self, k)) for k in self._FIELDS)}

    @classmethod
    def from_dict(cls, data: dict) -> InputSpec:
        _keys("input", data, cls._FIELDS)
        return cls(**{k: data[k] for k in cls._FIELDS}).validate()


@dataclass
class OutputLabel:
    """One class (classifier) or label (segmenter): ``value`` is its output channel / mask value,
    ``color`` ``"#rrggbb"`` for overlays, ``threshold`` the operating point on its calibrated probability."""

    value: int
    name: str
    color: str = "#ff0000"
    threshold: float = 0.5

    _FIELDS = ("value", "name", "color", "threshold")

    def validate(self, where: str = "outputs[]") -> OutputLabel:
        if isinstance(self.value, bool) or not isinstance(self.value, int) or self.value < 0:
            _fail(f"{where}.value", f"must be a non-negative integer, got {self.value!r}")
        _str(f"{where}.name", self.name)
        if not isinstance(self.color, str) or not _COLOR.match(self.color):
            _fail(f"{where}.color", f"must be a colour '#rrggbb', got {self.color!r}")
        if not _is_number(self.threshold) or not 0.0 <= self.threshold <= 1.0:
            _fail(f"{where}.threshold", f"must be a number in [0, 1], got {self.threshold!r}")
        self.threshold = float(self.threshold)
        return self

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self._FIELDS}

    @classmethod
    def from_dict(cls, data: dict, where: str = "outputs[]") -> OutputLabel:
        _keys(where, data, cls._FIELDS)
        return cls(**{k: data[k] for k in cls._FIELDS}).validate(where)


_CLASSIFIERS = ("SeedCNN", "NoduleCNN")
_SEGMENTERS = ("UNet2D",)


@dataclass
class Manifest:
    """Identity, provenance, preprocessing and outputs of a model package (see the module docstring)."""

    id: str
    name: str
    version: str
    sha256: str
    task: str
    architecture: str
    arguments: dict
    input: InputSpec
    outputs: list[OutputLabel]
    intended_use: str
    not_for_clinical_use: bool = True
    disclaimer: str = "Demonstration model, not for clinical use."
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    _FIELDS = ("id", "name", "version", "sha256", "task", "architecture", "arguments", "input", "outputs",
               "intended_use", "not_for_clinical_use", "disclaimer", "training", "metrics")

    def validate(self, require_sha256: bool = True) -> Manifest:
        """Check every field and their agreement (architecture with task, arguments with input and outputs)."""
        from medviewer.ai.networks import ARCHITECTURES  # torch only when validating

        if not isinstance(self.id, str) or not _ID.match(self.id):
            _fail("id", f"must be 1-64 characters of a-z, 0-9, '.', '_', '-' starting with a letter or digit, "
                        f"got {self.id!r}")
        _str("name", self.name)
        _str("version", self.version)
        if not isinstance(self.sha256, str) or not (_HEX64.match(self.sha256) or (not require_sha256 and not self.sha256)):
            _fail("sha256", f"must be 64 lowercase hex digits, got {self.sha256!r}")
        if self.task not in TASKS:
            _fail("task", f"must be one of {list(TASKS)}, got {self.task!r}")
        if self.architecture not in ARCHITECTURES:
            _fail("architecture", f"must be one of {sorted(ARCHITECTURES)}, got {self.architecture!r}")
        expected = _CLASSIFIERS if self.task == "classification" else _SEGMENTERS
        if self.architecture not in expected:
            _fail("architecture", f"{self.architecture} is not a {self.task} network (use one of {list(expected)})")
        _dict("arguments", self.arguments)
        if not isinstance(self.input, InputSpec):
            _fail("input", f"must be an InputSpec, got {type(self.input).__name__}", TypeError)
        self.input.validate()
        if not isinstance(self.outputs, list) or not self.outputs:
            _fail("outputs", "must be a non-empty list of labels")
        for i, out in enumerate(self.outputs):
            if not isinstance(out, OutputLabel):
                _fail(f"outputs[{i}]", f"must be an OutputLabel, got {type(out).__name__}", TypeError)
            out.validate(f"outputs[{i}]")
        values = [o.value for o in self.outputs]
        if values != list(range(len(values))):
            _fail("outputs", f"values must be 0, 1, ... in order (one per output channel), got {values}")
        self._check_agreement()
        _str("intended_use", self.intended_use)
        if not isinstance(self.not_for_clinical_use, bool):
            _fail("not_for_clinical_use", f"must be true or false, got {self.not_for_clinical_use!r}", TypeError)
        _str("disclaimer", self.disclaimer, empty=True)
        _dict("training", self.training)
        _dict("metrics", self.metrics)
        return self

    def _check_agreement(self) -> None:
        args = self.arguments
        channels = args.get("in_channels")
        if channels is not None and channels != self.input.channels:
            _fail("arguments.in_channels", f"({channels}) must equal input.channels ({self.input.channels})")
        classes = args.get("classes", 1 if self.task == "classification" else 3)
        if len(self.outputs) != classes:
            _fail("outputs", f"must list one label per output channel ({classes} for arguments.classes), "
                             f"got {len(self.outputs)}")
        if "size" in args and tuple(self.input.size) != (args["size"], args["size"]):
            _fail("arguments.size", f"({args['size']}) must match input.size {list(self.input.size)}")
        if self.architecture == "UNet2D":
            factor = 2 ** args.get("depth", 4)
            if any(v % factor for v in self.input.size):
                _fail("input.size", f"must be divisible by {factor} for a UNet2D of depth {args.get('depth', 4)}")


    def to_dict(self) -> dict:
        """Plain JSON data; validates first (an empty sha256 is allowed before :func:`save_package` fills it)."""
        self.validate(require_sha256=False)
        data: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION}
        for k in self._FIELDS:
            data[k] = getattr(self, k)
        data["input"] = self.input.to_dict()
        data["outputs"] = [o.to_dict() for o in self.outputs]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        """Parse and validate ``data`` (as read from manifest.json)."""
        _keys("", data, ("format", "format_version") + cls._FIELDS)
        if data["format"] != FORMAT:
            _fail("format", f"must be {FORMAT!r}, got {data['format']!r}")
        if data["format_version"] != FORMAT_VERSION:
            _fail("format_version", f"{data['format_version']!r} is not supported (this MedViewer reads {FORMAT_VERSION})")
        outputs = data["outputs"]
        if not isinstance(outputs, list):
            _fail("outputs", f"must be a list, got {type(outputs).__name__}", TypeError)
        values = {k: data[k] for k in cls._FIELDS}
        values["input"] = InputSpec.from_dict(data["input"])
        values["outputs"] = [OutputLabel.from_dict(o, f"outputs[{i}]") for i, o in enumerate(outputs)]
        return cls(**values).validate(require_sha256=True)
