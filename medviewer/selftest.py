"""``medviewer --selftest``: check that this installation (a checkout, a package or a bundle) works.

The checks, each reported on one line with OK or FAILED and its time:

- ``resources``: the resources folder and the built-in model packages in it (manifests and weight
  hashes checked by loading them later).
- ``codecs``: one slice of the demo phantom compressed to JPEG 2000, JPEG-LS and RLE and decoded back
  by every pydicom plugin MedViewer installs (GDCM, pylibjpeg's libjpeg/openjpeg/rle, pyjpegls):
  exact round trips.  In a bundle this shows the plugins' entry points and libraries were collected.
- ``demo study``: eight slices of the demo study around its largest nodule, written as JPEG 2000
  DICOM into a temporary folder, scanned and loaded back through MedViewer's own reader.
- ``assistant``: the built-in models on those slices on the best device here; the nodule must be found.
- ``render``: one slice with the assistant's mask drawn by the viewer's ``SliceView`` into an
  offscreen image (Qt's ``offscreen`` platform unless ``QT_QPA_PLATFORM`` says otherwise).

Nothing persists: the temporary folder is removed, no bytecode is written, no settings are saved.
The exit status is 0 when every check passed, else 1.  A failure is one line, never a traceback
(unless ``--debug``).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["Check", "run_selftest"]

NODULE_SLICES = 8  # slices of the demo study around its largest nodule


@dataclass
class Check:
    name: str
    ok: bool = False
    seconds: float = 0.0
    detail: str = ""


@dataclass
class _State:
    tmp: Path
    device: str = "auto"
    phantom: object = None
    volume: object = None
    prediction: object = None
    models: list = field(default_factory=list)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def _versions() -> list[str]:
    lines = [f"Python {platform.python_version()} ({sys.platform}, {platform.machine()}"
             f"{', frozen bundle' if getattr(sys, 'frozen', False) else ''})"]
    for label, probe in (("Qt", _qt_version), ("torch", _torch_version), ("pydicom", _pydicom_version)):
        try:
            lines.append(f"{label} {probe()}")
        except Exception as exc:  # noqa: BLE001 - reported, and its check fails later
            lines.append(f"{label}: not importable ({_one_line(exc)})")
    return lines


def _qt_version() -> str:
    # The self-test drives every layer, as the command line does: Qt is imported only here and in the render check.
    import pyqtgraph  # noqa: TID251
    import PySide6  # noqa: TID251
    from PySide6.QtCore import qVersion  # noqa: TID251

    return f"{qVersion()} (PySide6 {PySide6.__version__}, pyqtgraph {pyqtgraph.__version__})"


def _torch_version() -> str:
    import torch

    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    return f"{torch.__version__}{cuda}"


def _pydicom_version() -> str:
    import numpy
    import pydicom

    return f"{pydicom.__version__} (numpy {numpy.__version__})"


# --- the checks ----------------------------------------------------------------------------------


def _check_resources(state: _State) -> str:
    from medviewer.ai.package import find_packages
    from medviewer.resources import models_dir, resource_candidates, resources_dir

    folder = resources_dir()
    setting = next((name for name, path in resource_candidates() if path == folder), "checkout")
    builtin = [p for p in find_packages() if p.source == "builtin"]
    broken = [p for p in builtin if p.manifest is None]
    if broken:
        raise RuntimeError(f"{broken[0].path}: {broken[0].error}")
    if not builtin:
        raise RuntimeError(f"no built-in model packages in {models_dir()}")
    state.models = [p.path for p in builtin]
    names = ", ".join(p.manifest.id for p in builtin)
    return f"{folder} ({setting}): {names}"


def _demo_phantom():
    """The demo study's phantom, cut to the slices around its largest nodule."""
    from medviewer.ai.demo_data import DEMO_CONFIG, DEMO_SEED
    from medviewer.ai.phantom import generate_phantom

    phantom = generate_phantom(DEMO_CONFIG, DEMO_SEED)
    nodule = max(phantom.nodules, key=lambda n: n.diameter_mm)
    k = nodule.center_index[0]
    lo = min(max(0, k - NODULE_SLICES // 2), phantom.hu.shape[0] - NODULE_SLICES)
    hi = lo + NODULE_SLICES
    dz = phantom.spacing_mm[0]
    x0, y0, z0 = phantom.origin_lps_mm
    kept = [replace(n, center_index=(n.center_index[0] - lo, *n.center_index[1:]))
            for n in phantom.nodules if lo <= n.center_index[0] < hi]
    return replace(phantom, hu=phantom.hu[lo:hi].copy(), labels=phantom.labels[lo:hi].copy(),
                   origin_lps_mm=(x0, y0, z0 + lo * dz), nodules=kept,
                   config=replace(phantom.config, slices=NODULE_SLICES)), nodule


# pydicom plugins expected for each transfer syntax (all of them are MedViewer's dependencies)
_CODECS = {
    "JPEG 2000": ("1.2.840.10008.1.2.4.90", "pylibjpeg", ("gdcm", "pylibjpeg")),
    "JPEG-LS": ("1.2.840.10008.1.2.4.80", "pyjpegls", ("gdcm", "pyjpegls", "pylibjpeg")),
    "RLE": ("1.2.840.10008.1.2.5", "pylibjpeg", ("pydicom", "pylibjpeg")),
}


def _check_codecs(state: _State) -> str:
    import numpy as np
    from pydicom.dataset import Dataset
    from pydicom.pixels import get_decoder, pixel_array
    from pydicom.uid import UID, ExplicitVRLittleEndian

    state.phantom, _ = _demo_phantom()
    stored = (state.phantom.hu[NODULE_SLICES // 2] + 1024).astype(np.uint16)
    done = []
    for name, (syntax, encoder, plugins) in _CODECS.items():
        available = get_decoder(UID(syntax)).available_plugins
        missing = [p for p in plugins if p not in available]
        if missing:
            raise RuntimeError(f"{name}: no decoder plugin {', '.join(missing)} "
                               f"(available: {', '.join(available) or 'none'})")
        ds = Dataset()
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.set_original_encoding(False, True)
        ds.file_meta = Dataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(UID(syntax), stored, encoding_plugin=encoder, generate_instance_uid=False)
        for plugin in plugins:
            try:
                decoded = pixel_array(ds, decoding_plugin=plugin)
            except Exception as exc:  # noqa: BLE001 - named in the one-line failure
                raise RuntimeError(f"{name} through {plugin}: {_one_line(exc)}") from None
            if decoded.shape != stored.shape or not np.array_equal(decoded, stored):
                raise RuntimeError(f"{name} through {plugin}: decoded pixels differ from the original")
        done.append(f"{name} ({', '.join(plugins)})")
    return "; ".join(done)


def _check_demo_study(state: _State) -> str:
    from pydicom.uid import JPEG2000Lossless

    from medviewer.ai.demo_data import write_phantom_dicom
    from medviewer.core.load import load
    from medviewer.core.scan import scan

    if state.phantom is None:
        state.phantom, _ = _demo_phantom()
    study = write_phantom_dicom(state.phantom, state.tmp, transfer_syntax=JPEG2000Lossless)
    result = scan([str(study)], parallel=False)
    if not result.series:
        reason = result.refused[0].reason if result.refused else "no image series"
        raise RuntimeError(f"{study}: {reason}")
    series = max(result.series, key=lambda s: len(s.frames))
    volume = load(series, parallel=False)
    if volume.warnings:
        raise RuntimeError(volume.warnings[0])
    expected = state.phantom.hu
    # files are in k order of the phantom; the loader sorts geometrically: compare as sets of slices
    if volume.voxels.shape != expected.shape:
        raise RuntimeError(f"loaded shape {volume.voxels.shape}, expected {expected.shape}")
    import numpy as np

    same = np.array_equal(volume.voxels, expected) or np.array_equal(volume.voxels, expected[::-1])
    if not same:
        raise RuntimeError("loaded voxels differ from the written phantom")
    state.volume = volume
    slices, rows, cols = volume.voxels.shape
    return f"{slices} slices of {rows}x{cols} written as JPEG 2000 DICOM and read back ({volume.modality}, HU)"


def _check_assistant(state: _State) -> str:
    import numpy as np

    from medviewer.ai.infer import predict

    if state.volume is None:
        raise RuntimeError("skipped: the demo study did not load")
    if not state.models:
        raise RuntimeError("skipped: no built-in models")
    prediction = predict(state.volume, state.models, device=state.device, explain=True)
    state.prediction = prediction
    if prediction.slice_probabilities is not None and not np.isfinite(prediction.slice_probabilities).all():
        raise RuntimeError("the classifier gave non-finite probabilities")
    if not prediction.findings:
        raise RuntimeError(f"no finding on the demo's nodule (study probability "
                           f"{prediction.study_probability or 0:.3f}) on {prediction.device}")
    biggest = max(prediction.findings, key=lambda f: f.diameter_mm)
    probability = prediction.study_probability
    return (f"{len(prediction.models)} models on {prediction.device}: {len(prediction.findings)} finding(s), "
            f"largest {biggest.diameter_mm:.1f} mm; study probability {probability:.3f}")


def _check_render(state: _State) -> str:
    if state.volume is None:
        raise RuntimeError("skipped: the demo study did not load")
    if "QT_QPA_PLATFORM" not in os.environ:
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    import numpy as np
    from PySide6.QtGui import QImage  # noqa: TID251

    from medviewer.ui.app import make_app
    from medviewer.ui.viewport import SliceView

    app = make_app()
    view = SliceView()
    try:
        view.resize(320, 320)
        view.set_volume(state.volume)
        if state.prediction is not None and state.prediction.mask is not None:
            from medviewer.ai.prediction import label_rgb

            colors = {value: label_rgb(info.get("color")) or (255, 80, 80)
                      for value, info in state.prediction.labels.items()}
            view.set_mask(state.prediction.mask, colors)
        view.fit()
        app.processEvents()
        image = view.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
        width, height = image.width(), image.height()
        if width == 0 or height == 0:
            raise RuntimeError("the viewport rendered an empty image")
        stride = image.bytesPerLine()
        pixels = np.frombuffer(image.constBits(), dtype=np.uint8, count=stride * height)
        pixels = pixels.reshape(height, stride)[:, : width * 3].reshape(height, width, 3)
        if int(pixels.max()) - int(pixels.min()) < 32:
            raise RuntimeError("the rendered slice is blank")
        levels = len(np.unique(pixels[..., 1]))
    finally:
        view.close()
        view.deleteLater()
        app.processEvents()
    return f"slice {view.index + 1} of {view.count} in a {width}x{height} viewport ({app.platformName()}), {levels} grey levels"


CHECKS: tuple[tuple[str, Callable[[_State], str]], ...] = (
    ("resources", _check_resources),
    ("codecs", _check_codecs),
    ("demo study", _check_demo_study),
    ("assistant", _check_assistant),
    ("render", _check_render),
)


def _device_line(preference: str) -> str:
    try:
        from medviewer.ai import device as devices

        target = devices.select_device(preference)
        if target.type == "cpu":
            devices.configure_threads()
        return devices.device_name(target)
    except Exception as exc:  # noqa: BLE001
        return f"unavailable ({_one_line(exc)})"


def run_selftest(*, device: str = "auto", debug: bool = False, out=None) -> int:
    """Run every check, print the report to ``out`` (stdout), return 0 if all passed else 1."""
    out = out or sys.stdout
    sys.dont_write_bytecode = True  # an installed package may be read-only; and the self-test writes nothing

    def say(line: str = "") -> None:
        print(line, file=out, flush=True)

    from medviewer.version import __version__

    started = time.perf_counter()
    say(f"MedViewer {__version__} self-test")
    for line in _versions():
        say(f"  {line}")
    say(f"  device: {_device_line(device)}")
    checks: list[Check] = []
    with tempfile.TemporaryDirectory(prefix="medviewer-selftest-") as tmp:
        state = _State(tmp=Path(tmp), device=device)
        for name, function in CHECKS:
            check = Check(name)
            t0 = time.perf_counter()
            try:
                check.detail = function(state)
                check.ok = True
            except Exception as exc:  # noqa: BLE001 - every failure is one line of the report
                if debug:
                    import traceback

                    traceback.print_exc(file=sys.stderr)
                check.detail = str(exc) if isinstance(exc, RuntimeError) else _one_line(exc)
            check.seconds = time.perf_counter() - t0
            checks.append(check)
            status = "OK" if check.ok else "FAILED"
            say(f"{status:<7}{name:<12}{check.seconds:6.2f} s  {' '.join(check.detail.split())}")
    failed = [c for c in checks if not c.ok]
    total = time.perf_counter() - started
    if failed:
        say(f"self-test FAILED: {len(failed)} of {len(checks)} checks ({', '.join(c.name for c in failed)}), "
            f"{total:.1f} s")
        return 1
    say(f"self-test OK: all {len(checks)} checks, {total:.1f} s")
    return 0
