"""Write synthetic phantoms as DICOM CT series, with their ground truth beside them.

Layout of one study folder::

    <out_dir>/<study_name>/CT/IM0001.dcm ...   one CT Image Storage file per axial slice; IM0001 is the most
                                               superior slice (instance numbers count down as z goes up)
    <out_dir>/<study_name>/.truth/labels.npy   uint8 (slices, rows, cols), k ascending z like Phantom.labels
    <out_dir>/<study_name>/.truth/truth.json   nodules, geometry, label names, seed, config, UIDs, files

The ground truth lies in the hidden ``.truth`` folder (:data:`TRUTH_DIR`), which the scanner never walks
(hidden files and folders are skipped): opening or checking the study reads its DICOM files only, with
no warning about the answer key beside them. :func:`truth_files` finds a study's truth (also where an
older writer put it, beside ``CT/``).

Everything written is a function of the phantom and the arguments: no clock, no random UIDs, so the same
``(config, seed)`` gives byte-identical files.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from medviewer.ai.phantom import HU_MAX, HU_MIN, LABELS, Phantom, PhantomConfig, generate_phantom
from medviewer.core.volume import SliceInfo, Volume

__all__ = [
    "DEMO_CONFIG",
    "DEMO_SEED",
    "DEMO_STUDY_NAME",
    "SUPPORTED_TRANSFER_SYNTAXES",
    "TRUTH_DIR",
    "truth_files",
    "write_demo_data",
    "write_demo_study",
    "write_phantom_dicom",
]

# The bundled demo study: 120 slices of 256 x 256 (2.5 mm, 350 mm field of view), written in about a second.
# Seed 0 gives three solid nodules: 8.9 mm in the right lung (slice k=57), 7.6 mm and 14.2 mm in the left (k=77, 78).
DEMO_CONFIG = PhantomConfig(slices=120, size=256, nodule_count=(1, 3))
DEMO_SEED = 0
DEMO_STUDY_NAME = "demo-chest-ct"

SUPPORTED_TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless,
                               JPEGLSLossless)
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_ENCODERS = {JPEG2000Lossless: "pylibjpeg", RLELossless: "pylibjpeg", JPEGLSLossless: "pyjpegls"}
_INTERCEPT = -1024  # stored = HU + 1024, in 12 bits
_IMPLEMENTATION_UID = generate_uid(entropy_srcs=["medviewer", "phantom-writer", "1"])
_DEFAULT_CONFIG = PhantomConfig()
TRUTH_DIR = ".truth"  # hidden: the scanner skips it
_WINDOWS = (("LUNG", -600, 1500), ("MEDIASTINUM", 40, 400))

Progress = Callable[[int, int], None]


def _ds(value: float) -> DSfloat:
    """A DS that fits its 16 characters at the best precision available."""
    return DSfloat(float(value), auto_format=True)


def _identity(phantom: Phantom, study_name: str, patient_id: str) -> dict:
    """Deterministic dates, patient details and UIDs for one written study."""
    config_text = json.dumps(phantom.config.to_dict(), sort_keys=True)
    key = ["medviewer-phantom", str(phantom.seed), config_text, patient_id, study_name]
    rng = np.random.default_rng([phantom.seed, 0xD1C0])  # never the phantom's own stream
    study = _dt.datetime(2024, 1, 1, 8, 0, 0) + _dt.timedelta(
        days=int(rng.integers(0, 366)), seconds=int(rng.integers(0, 9 * 3600))
    )
    birth = study.date() - _dt.timedelta(days=int(rng.integers(40 * 365, 81 * 365)))
    years = study.year - birth.year - ((study.month, study.day) < (birth.month, birth.day))
    digest = hashlib.sha256("|".join(key).encode()).hexdigest()
    return {
        "study_uid": generate_uid(entropy_srcs=[*key, "study"]),
        "series_uid": generate_uid(entropy_srcs=[*key, "series"]),
        "frame_uid": generate_uid(entropy_srcs=[*key, "frame-of-reference"]),
        "sop_uids": [generate_uid(entropy_srcs=[*key, "sop", str(k)]) for k in range(phantom.hu.shape[0])],
        "date": study.strftime("%Y%m%d"),
        "time": study.strftime("%H%M%S"),
        "birth_date": birth.strftime("%Y%m%d"),
        "age": f"{years:03d}Y",
        "sex": "F" if rng.integers(0, 2) else "M",
        "accession": "PH" + digest[:10].upper(),
    }


def _series_template(phantom: Phantom, ident: dict, names: dict) -> Dataset:
    """The elements every slice of the series shares (study, patient, equipment, image pixel description)."""
    dz, dy, dx = phantom.spacing_mm
    _, rows, cols = phantom.hu.shape
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    for prefix in ("Study", "Series", "Acquisition", "Content", "InstanceCreation"):
        setattr(ds, f"{prefix}Date", ident["date"])
        setattr(ds, f"{prefix}Time", ident["time"])
    ds.AccessionNumber = ident["accession"]
    ds.Modality = "CT"
    ds.Manufacturer = "MedViewer phantom"
    ds.ManufacturerModelName = "medviewer.ai.phantom"
    ds.InstitutionName = "Synthetic data"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Chest CT (synthetic phantom)"
    ds.SeriesDescription = names["series_description"]
    ds.PatientName = names["patient_name"]
    ds.PatientID = names["patient_id"]
    ds.PatientBirthDate = ident["birth_date"]
    ds.PatientSex = ident["sex"]
    ds.PatientAge = ident["age"]
    ds.PatientIdentityRemoved = "NO"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = _ds(dz)
    ds.KVP = "120"
    ds.ConvolutionKernel = "STANDARD"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = ident["study_uid"]
    ds.SeriesInstanceUID = ident["series_uid"]
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.FrameOfReferenceUID = ident["frame_uid"]
    ds.PositionReferenceIndicator = ""
    ds.SpacingBetweenSlices = _ds(dz)
    ds.ImageComments = f"Synthetic phantom, seed {phantom.seed}; not a patient, not for clinical use"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [_ds(dy), _ds(dx)]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = [str(c) for _, c, _ in _WINDOWS]
    ds.WindowWidth = [str(w) for _, _, w in _WINDOWS]
    ds.WindowCenterWidthExplanation = [name for name, _, _ in _WINDOWS]
    ds.RescaleIntercept = str(_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    return ds


def _slice_dataset(phantom: Phantom, template: Dataset, ident: dict, k: int, syntax: str) -> Dataset:
    """Slice k: the shared elements (the same objects, never modified) plus its own position and identity."""
    x0, y0, z0 = phantom.origin_lps_mm
    z = z0 + k * phantom.spacing_mm[0]
    sop_uid = ident["sop_uids"][k]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    meta.ImplementationVersionName = "MEDVIEWER_PH1"
    ds = Dataset()
    ds.file_meta = meta
    for elem in template:
        ds.add(elem)
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = phantom.hu.shape[0] - k  # 1 = most superior, as scanners number an axial chest series
    ds.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(z)]
    ds.SliceLocation = _ds(z)
    return ds


def _label_counts(labels: np.ndarray) -> np.ndarray:
    """Voxels per label, a slice at a time (a whole-volume bincount would make an int64 copy)."""
    counts = np.zeros(len(LABELS), dtype=np.int64)
    for plane in labels:
        counts += np.bincount(plane.ravel(), minlength=len(LABELS))[: len(LABELS)]
    return counts


def _truth(phantom: Phantom, ident: dict, files: list[str], syntax: str) -> dict:
    return {
        "format": "medviewer-phantom-truth",
        "version": 1,
        "seed": phantom.seed,
        "config": phantom.config.to_dict(),
        "shape": list(phantom.hu.shape),
        "array_order": "(k, j, i): k slices inferior to superior (+z), j rows to posterior (+y), "
        "i columns to patient left (+x)",
        "spacing_mm": list(phantom.spacing_mm),
        "origin_lps_mm": list(phantom.origin_lps_mm),
        "image_orientation_patient": [1, 0, 0, 0, 1, 0],
        "labels": {str(k): v for k, v in LABELS.items()},
        "label_voxels": {str(k): int(n) for k, n in enumerate(_label_counts(phantom.labels))},
        "nodules": [
            {
                "center_lps_mm": list(n.center_lps_mm),
                "center_index": list(n.center_index),
                "diameter_mm": n.diameter_mm,
                "hu": n.hu,
            }
            for n in phantom.nodules
        ],
        "transfer_syntax": str(syntax),
        "study_instance_uid": str(ident["study_uid"]),
        "series_instance_uid": str(ident["series_uid"]),
        "frame_of_reference_uid": str(ident["frame_uid"]),
        "files": files,  # in k order: files[k] holds slice k
        "sop_instance_uids": [str(u) for u in ident["sop_uids"]],
    }


def write_phantom_dicom(
    phantom: Phantom,
    out_dir: Path,
    *,
    study_name: str = DEMO_STUDY_NAME,
    patient_name: str = "DEMO^PHANTOM",
    patient_id: str = "DEMO0001",
    transfer_syntax: str = ExplicitVRLittleEndian,
    series_description: str = "Chest CT (synthetic phantom)",
    progress: Progress | None = None,
) -> Path:
    """Write ``phantom`` as a CT series in ``out_dir/study_name`` and return that study folder.

    ``transfer_syntax``: one of :data:`SUPPORTED_TRANSFER_SYNTAXES` (uncompressed, or lossless JPEG 2000,
    RLE or JPEG-LS through pydicom's encoders).  Stale ``IM*.dcm`` files of an earlier, longer series in the
    same folder are removed.  ``progress(done, total)`` is called after each slice.
    """
    if transfer_syntax not in SUPPORTED_TRANSFER_SYNTAXES:
        raise ValueError(f"transfer_syntax {transfer_syntax!r} is not one of {list(SUPPORTED_TRANSFER_SYNTAXES)}")
    hu = phantom.hu
    if hu.ndim != 3 or hu.dtype != np.int16 or phantom.labels.shape != hu.shape:
        raise ValueError(f"phantom: need int16 hu and labels of one 3-D shape, got {hu.dtype} {hu.shape}, "
                         f"labels {phantom.labels.shape}")
    if hu.size and (int(hu.min()) < HU_MIN or int(hu.max()) > HU_MAX):
        raise ValueError(f"phantom.hu: values must lie in [{HU_MIN}, {HU_MAX}] to fit 12 stored bits")
    if not study_name or Path(study_name).name != study_name:
        raise ValueError(f"study_name must be a plain folder name, got {study_name!r}")

    study_dir = Path(out_dir) / study_name
    ct_dir = study_dir / "CT"
    ct_dir.mkdir(parents=True, exist_ok=True)
    ident = _identity(phantom, study_name, patient_id)
    names = {"patient_name": patient_name, "patient_id": patient_id, "series_description": series_description}
    template = _series_template(phantom, ident, names)
    slices = hu.shape[0]
    width = max(4, len(str(slices)))
    files = [f"CT/IM{slices - k:0{width}d}.dcm" for k in range(slices)]
    stored = np.empty(hu.shape[1:], dtype=np.uint16)
    for k in range(slices):
        ds = _slice_dataset(phantom, template, ident, k, transfer_syntax)
        np.subtract(hu[k], _INTERCEPT, out=stored, casting="unsafe")
        if transfer_syntax in _UNCOMPRESSED:
            ds.PixelData = stored.astype("<u2", copy=False).tobytes()
            ds["PixelData"].VR = "OW"
        else:
            # the encoder reads this slice's array and puts the encapsulated codestream into PixelData;
            # a fixed plugin keeps the bytes the same whichever other encoders are installed
            ds.compress(transfer_syntax, stored, encoding_plugin=_ENCODERS[transfer_syntax],
                        generate_instance_uid=False)
        dcmwrite(study_dir / files[k], ds, enforce_file_format=True)
        if progress is not None:
            progress(k + 1, slices)
    keep = {Path(f).name for f in files}
    for stale in ct_dir.glob("IM*.dcm"):
        if stale.name not in keep:
            stale.unlink()

    truth_dir = study_dir / TRUTH_DIR
    truth_dir.mkdir(exist_ok=True)
    np.save(truth_dir / "labels.npy", np.ascontiguousarray(phantom.labels))
    truth = _truth(phantom, ident, files, transfer_syntax)
    (truth_dir / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    for legacy in ("labels.npy", "truth.json"):  # an older writer's copies beside CT/ would be scanned
        (study_dir / legacy).unlink(missing_ok=True)
    return study_dir


def truth_files(study_dir: Path) -> tuple[Path | None, Path | None]:
    """``(labels.npy, truth.json)`` of a study :func:`write_phantom_dicom` wrote (None where missing).

    ``study_dir/.truth/`` first, then ``study_dir`` itself (where an older writer put them)."""
    study_dir = Path(study_dir)
    found = []
    for name in ("labels.npy", "truth.json"):
        path = next((p for p in (study_dir / TRUTH_DIR / name, study_dir / name) if p.is_file()), None)
        found.append(path)
    return found[0], found[1]


def write_demo_data(
    out_dir: Path,
    count: int = 1,
    seed: int = 0,
    config: PhantomConfig = _DEFAULT_CONFIG,
    *,
    transfer_syntax: str = ExplicitVRLittleEndian,
    progress: Progress | None = None,
) -> list[Path]:
    """Write ``count`` phantom studies (seeds ``seed``, ``seed + 1``, ...) into ``out_dir``; return their folders.

    Study ``n`` (from 1) is ``demo-chest-ct-00n`` of patient ``DEMO000n`` (``DEMO^PHANTOM00n``).
    ``progress(done, total)`` counts slices over all studies.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    total = count * config.slices
    written = []
    for n in range(1, count + 1):
        phantom = generate_phantom(config, seed + n - 1)
        done = (n - 1) * config.slices
        study_progress = None if progress is None else (lambda k, _t, done=done: progress(done + k, total))
        written.append(
            write_phantom_dicom(
                phantom,
                Path(out_dir),
                study_name=f"{DEMO_STUDY_NAME}-{n:03d}",
                patient_name=f"DEMO^PHANTOM{n:03d}",
                patient_id=f"DEMO{n:04d}",
                transfer_syntax=transfer_syntax,
                progress=study_progress,
            )
        )
    return written


def write_demo_study(out_dir: Path, *, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    """The bundled demo study (:data:`DEMO_CONFIG`, :data:`DEMO_SEED`) in ``out_dir/demo-chest-ct``."""
    return write_phantom_dicom(generate_phantom(DEMO_CONFIG, DEMO_SEED), Path(out_dir),
                               transfer_syntax=transfer_syntax)


def phantom_volume(phantom: Phantom, *, series_uid: str = "2.25.1", modality: str = "CT") -> Volume:
    """``phantom`` as an in-memory :class:`Volume` (axial, LPS, HU), as the loader would give it from the files
    :func:`write_phantom_dicom` writes; for benchmarks and self-tests that need no files."""
    dz, dy, dx = phantom.spacing_mm
    x0, y0, z0 = phantom.origin_lps_mm
    uid = series_uid.rstrip(".")
    slices = [SliceInfo(f"{uid}.{k + 1}", f"IM{k + 1:04d}", 0, (x0, y0, z0 + k * dz), k + 1, 1.0, float(_INTERCEPT))
              for k in range(phantom.shape[0])]
    return Volume(voxels=phantom.hu, spacing_mm=(dz, dy, dx), origin_lps_mm=np.array([x0, y0, z0]),
                  direction=np.eye(3)[[2, 1, 0]], slices=slices, modality=modality, units="HU",
                  windows=[(-600.0, 1500.0)], series_uid=uid, description="Chest CT (synthetic phantom)",
                  geometry_known=True, pixel_spacing_known=True)


def demo_study_path() -> Path:
    """The demo study, written once into the user's cache folder."""
    from medviewer.resources import demo_cache_dir
    from medviewer.version import __version__

    root = demo_cache_dir(__version__)
    marker = root / "complete"
    if not marker.exists():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
        try:
            (study,) = write_demo_data(staging, count=1, seed=DEMO_SEED, config=DEMO_CONFIG)
            final = root / study.name
            if final.exists():
                shutil.rmtree(final)
            os.replace(study, final)
            marker.write_text(final.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    study = root / marker.read_text().strip()
    _move_legacy_truth(study)
    return study


def _move_legacy_truth(study: Path) -> None:
    """Ground truth an older writer left beside the DICOM folder goes into its hidden ``.truth`` folder."""
    for name in ("labels.npy", "truth.json"):
        legacy = study / name
        if legacy.is_file():
            try:
                (study / TRUTH_DIR).mkdir(exist_ok=True)
                os.replace(legacy, study / TRUTH_DIR / name)
            except OSError:
                pass  # a read-only cache: the study still opens, with the scanner's note on the file
