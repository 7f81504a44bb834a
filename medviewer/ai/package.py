"""Model packages: a folder with ``manifest.json`` and ``weights.safetensors``; saving, loading, finding.

Loading never unpickles: the weights are read only by safetensors, after their sha256 has been checked
against the manifest; ``torch.load`` is never called, and a folder with only ``.pt``/``.pth``/``.pkl``/``.ckpt``
files is refused.  Packages are looked for in the built-in folder (``resources/models`` beside the
``medviewer`` package), the user folder (``platformdirs.user_data_dir("medviewer")/models``) and paths given
by the user.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from medviewer.ai.manifest import InputSpec, Manifest, OutputLabel
from medviewer.ai.networks import build
from medviewer.core.errors import MedViewerError

__all__ = [
    "InputSpec",
    "LoadedModel",
    "Manifest",
    "OutputLabel",
    "PackageError",
    "PackageInfo",
    "builtin_models_dir",
    "find_model",
    "find_packages",
    "load_package",
    "model_card",
    "packages_listing",
    "save_package",
    "user_models_dir",
]

MANIFEST, WEIGHTS = "manifest.json", "weights.safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")


class PackageError(MedViewerError, ValueError):
    """A model package that cannot be used; ``str()`` is ``"<path>: <reason>"``."""


@dataclass
class LoadedModel:
    """A network ready for inference (eval mode, on the requested device) with its manifest."""

    model: nn.Module
    manifest: Manifest
    path: Path


@dataclass
class PackageInfo:
    """A package found on disk: ``manifest`` is None and ``error`` says why when it is broken.
    ``source``: ``"builtin"``, ``"user"`` or ``"path"``."""

    path: Path
    manifest: Manifest | None
    source: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def builtin_models_dir() -> Path:
    """``<resources>/models``: the resources folder of a checkout, an installed package or a bundle,
    found by :func:`medviewer.resources.resources_dir`."""
    from medviewer.resources import models_dir

    return models_dir()


def user_models_dir() -> Path:
    """Where the user's own packages go (not created here)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("medviewer", appauthor=False)) / "models"


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _same_metadata(blob: bytes, metadata: dict) -> bool:
    size = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + size]).get("__metadata__") == metadata


def save_package(folder: str | os.PathLike, model: nn.Module, manifest: Manifest, *, overwrite: bool = False) -> Path:
    """Write ``model``'s state dict (safetensors) and ``manifest`` (its sha256 filled in) to ``folder``.

    Atomic: everything is written to a temporary folder beside ``folder`` and renamed into place.  An existing
    ``folder`` is a :class:`FileExistsError` unless ``overwrite``.  ``manifest.sha256`` is updated in place.
    Returns the package folder.
    """
    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder}: already exists (pass overwrite=True to replace it)")
    manifest.validate(require_sha256=False)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "medviewer_model_id": manifest.id}
    blob = save_safetensors(state, metadata=metadata)
    existing = folder / WEIGHTS
    if existing.is_file():
        # safetensors writes its metadata in no fixed order: keep the old file (and its sha256) when it holds
        # the same tensors, so that rewriting a manifest does not change the weights' identity
        try:
            old = existing.read_bytes()
            old_state = load_safetensors(old)
            if _same_metadata(old, metadata) and old_state.keys() == state.keys() and all(
                    torch.equal(old_state[k], state[k]) for k in state):
                blob = old
        except Exception:  # noqa: BLE001 - an unreadable old file is simply replaced
            pass
    manifest.sha256 = _sha256_bytes(blob)
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n"

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; a package is read by whoever runs the models
        (tmp / WEIGHTS).write_bytes(blob)
        (tmp / MANIFEST).write_text(text, encoding="utf-8")
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def read_manifest(path: str | os.PathLike) -> Manifest:
    """The validated manifest of the package folder ``path`` (weights not checked)."""
    folder = Path(path)
    file = folder / MANIFEST
    if not folder.is_dir():
        raise PackageError(str(folder), "not a model package folder (it does not exist or is not a folder)")
    if not file.is_file():
        raise PackageError(str(folder), f"no {MANIFEST}: not a model package")
    try:
        size = file.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise PackageError(str(file), f"is {size} bytes, more than a manifest holds ({MAX_MANIFEST_BYTES}): not read")
        text = file.read_text(encoding="utf-8")
        depth = json_depth(text)
        if depth > MAX_MANIFEST_DEPTH:
            raise PackageError(str(file), f"nested {depth} levels deep (at most {MAX_MANIFEST_DEPTH}): not read")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise PackageError(str(file), f"cannot be read as JSON ({exc})") from None
    try:
        return Manifest.from_dict(data)
    except (TypeError, ValueError, RecursionError) as exc:
        raise PackageError(str(folder), str(exc)) from None


# A manifest is a few kB of shallow JSON; anything far beyond that is refused before parsing.
MAX_MANIFEST_BYTES = 1 << 20
MAX_MANIFEST_DEPTH = 32


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON ``text`` (brackets inside strings ignored)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _checked_weights(folder: Path, manifest: Manifest) -> bytes:
    """The bytes of the weights file, after refusing pickles and checking the hash."""
    file = folder / WEIGHTS
    if not file.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
        if pickles:
            raise PackageError(str(folder), f"no {WEIGHTS}, only {', '.join(pickles)}: pickled weights are never "
                                            f"loaded (convert them to safetensors)")
        raise PackageError(str(folder), f"no {WEIGHTS}")
    blob = file.read_bytes()
    if _sha256_bytes(blob) != manifest.sha256:
        raise PackageError(str(folder), f"{WEIGHTS} does not match the sha256 in {MANIFEST}: the package was modified")
    return blob


def check_package(path: str | os.PathLike) -> Manifest:
    """Validate the manifest and the weights' hash without building the network."""
    manifest = read_manifest(path)
    _checked_weights(Path(path), manifest)
    return manifest


def load_package(path: str | os.PathLike, device: torch.device | str = "cpu") -> LoadedModel:
    """Check and load the package in folder ``path``: the network in eval mode on ``device``.

    Refused with :class:`PackageError` (one line naming the folder): no or bad manifest; no weights.safetensors
    (pickled ``.pt``/``.pth``/``.pkl``/``.ckpt`` files are named, never opened); a sha256 mismatch; weights that
    do not fit the architecture.
    """
    folder = Path(path)
    manifest = read_manifest(folder)
    blob = _checked_weights(folder, manifest)
    try:
        state = load_safetensors(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise PackageError(str(folder / WEIGHTS), f"is not a valid safetensors file ({exc})") from None
    try:
        model = build(manifest.architecture, manifest.arguments)
    except (TypeError, ValueError) as exc:
        raise PackageError(str(folder), f"{MANIFEST}: arguments do not build {manifest.architecture}: {exc}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0:2]
        raise PackageError(str(folder), f"{WEIGHTS} does not fit {manifest.architecture}{manifest.arguments}: "
                                        f"{' '.join(first)}") from None
    model.eval()
    return LoadedModel(model=model.to(device), manifest=manifest, path=folder)


def _package_dirs(root: Path) -> list[Path]:
    """``root`` itself if it is a package, else its sub-folders that look like packages (sorted)."""
    if (root / MANIFEST).is_file():
        return [root]
    if not root.is_dir():
        return []
    out = []
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith(".") and (
            (child / MANIFEST).exists() or (child / WEIGHTS).exists()
            or any(p.suffix.lower() in PICKLE_SUFFIXES for p in child.iterdir())
        ):
            out.append(child)
    return out


def find_packages(extra: tuple | list = ()) -> list[PackageInfo]:
    """Every package in the built-in folder, the user folder and ``extra`` paths (a package or a folder of them).

    Broken packages come back with ``manifest=None`` and ``error`` set; nothing raises.  Order: built-in, user,
    extra; a folder reached twice is listed once.
    """
    roots = [(builtin_models_dir(), "builtin"), (user_models_dir(), "user")]
    roots += [(Path(p), "path") for p in extra]
    seen: set[Path] = set()
    found: list[PackageInfo] = []
    for root, source in roots:
        if source == "path" and not root.exists():
            found.append(PackageInfo(root, None, source, f"{root}: does not exist"))
            continue
        try:
            folders = _package_dirs(root)
        except OSError as exc:
            found.append(PackageInfo(root, None, source, f"{root}: cannot be listed ({exc})"))
            continue
        if source == "path" and not folders:
            found.append(PackageInfo(root, None, source, f"{root}: no {MANIFEST}: not a model package"))
        for folder in folders:
            key = folder.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                found.append(PackageInfo(folder, check_package(folder), source))
            except PackageError as exc:
                found.append(PackageInfo(folder, None, source, str(exc)))
            except OSError as exc:
                found.append(PackageInfo(folder, None, source, f"{folder}: {exc.strerror or exc}"))
            except Exception as exc:  # noqa: BLE001 - one broken package never hides the others
                found.append(PackageInfo(folder, None, source, f"{folder}: unusable package ({type(exc).__name__}: {exc})"))
    return found


def find_model(id_or_path: str | os.PathLike) -> PackageInfo:
    """The package at a path, or the one with this manifest id (a user package wins over a built-in one).

    Raises :class:`PackageError` when nothing matches or the match is broken.
    """
    path = Path(id_or_path)
    if path.exists() or os.sep in str(id_or_path) or str(id_or_path).startswith("."):
        info = PackageInfo(path, check_package(path), "path")
        return info
    matches = [p for p in find_packages() if p.manifest is not None and p.manifest.id == str(id_or_path)]
    if matches:
        return sorted(matches, key=lambda p: p.source != "user")[0]
    broken = [p for p in find_packages() if p.manifest is None and p.path.name == str(id_or_path)]
    if broken:
        raise PackageError(str(broken[0].path), broken[0].error or "broken package")
    known = sorted({p.manifest.id for p in find_packages() if p.manifest is not None})
    raise PackageError(str(id_or_path), f"no model package with this id or path (installed: {', '.join(known) or 'none'})")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def model_card(manifest: Manifest) -> str:
    """A human-readable card: identity, intended use, input, outputs, training data, held-out metrics."""
    spec = manifest.input
    lines = [
        f"{manifest.name} ({manifest.id} {manifest.version})",
        f"  task:          {manifest.task} ({manifest.architecture})",
        f"  intended use:  {manifest.intended_use}",
    ]
    if manifest.not_for_clinical_use:
        lines.append("  NOT FOR CLINICAL USE" + (f": {manifest.disclaimer}" if manifest.disclaimer else ""))
    elif manifest.disclaimer:
        lines.append(f"  disclaimer:    {manifest.disclaimer}")
    window = f", window {spec.window[0]:g}/{spec.window[1]:g}" if spec.window else ""
    lines.append(f"  input:         {spec.modality} in {spec.units or 'stored units'}, clip {spec.clip[0]:g}..{spec.clip[1]:g}"
                 f"{window}, {spec.size[0]}x{spec.size[1]}, {spec.channels} channel(s) ({spec.context})")
    lines.append(f"  trained on:    pixels {spec.pixel_spacing_mm[0]:g}-{spec.pixel_spacing_mm[1]:g} mm, "
                 f"slices {spec.slice_spacing_mm[0]:g}-{spec.slice_spacing_mm[1]:g} mm apart")
    lines.append("  outputs:       " + ", ".join(
        f"{o.value} {o.name} {o.color}" + (f" (threshold {o.threshold:.3f})" if manifest.task == "classification"
                                           else "") for o in manifest.outputs))
    data = manifest.training.get("data")
    if data:
        lines.append(f"  training data: {_fmt(data)}")
    if manifest.metrics:
        lines.append("  metrics (held-out):")
        for key, value in manifest.metrics.items():
            lines.append(f"    {key}: {_fmt(value)}")
    lines.append(f"  sha256:        {manifest.sha256}")
    return "\n".join(lines)


def packages_listing(infos: list[PackageInfo], cards: bool = True) -> str:
    """Text for ``medviewer models``: each package's card (or one line with ``cards=False``), broken ones with
    their error."""
    if not infos:
        return (f"no model packages found (looked in {builtin_models_dir()} and {user_models_dir()})")
    blocks = []
    for info in infos:
        if info.manifest is None:
            blocks.append(f"BROKEN [{info.source}] {info.path}\n  {info.error}")
        elif cards:
            blocks.append(f"[{info.source}] {info.path}\n{model_card(info.manifest)}")
        else:
            m = info.manifest
            blocks.append(f"{m.id:<28} {m.version:<8} {m.task:<15} [{info.source}] {info.path}")
    return ("\n\n" if cards else "\n").join(blocks)
