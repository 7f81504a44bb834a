"""Key images as DICOM Secondary Capture: one RGB image per key slice, in the source study.

Each key slice (:func:`medviewer.export.images.key_slices`) is rendered as the viewer shows it, with
the assistant's heatmap and contours and the measurements on that slice, and stored as a Secondary
Capture Image (highdicom's ``SCImage``) in the source study: one new series ("MedViewer key images")
for all of them, each derived from its source slice (Source Image Sequence, Referenced Series
Sequence). All files are written together or none (:func:`medviewer.core.safe.write_files`).
"""

from __future__ import annotations

import datetime as _dt
import os
import unicodedata
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from highdicom.sc import SCImage
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medviewer.ai.prediction import Prediction
from medviewer.core.annotations import Annotation
from medviewer.core.orientation import direction_letters
from medviewer.core.safe import ExportError, check_targets, write_files
from medviewer.core.volume import Volume
from medviewer.core.windowing import Window
from medviewer.export.dicom_objects import source_for_export
from medviewer.export.images import key_slices, render_slice
from medviewer.version import __version__

SERIES_DESCRIPTION = "MedViewer key images"
MANUFACTURER = "MedViewer"
SERIES_NUMBER_OFFSET = 9000
"""The key image series is numbered the source series' number plus this (or this alone)."""

# Patient Orientation writes head and foot as H and F where the viewer writes S and I.
_TO_DICOM = str.maketrans("SI", "HF")


def _ascii(text: str, limit: int = 10240) -> str:
    """Plain ASCII for free-text elements whatever the source's character set (accents dropped)."""
    out = "".join(c for c in unicodedata.normalize("NFKD", str(text)) if not unicodedata.combining(c))
    return out.encode("ascii", "replace").decode("ascii")[:limit]


def patient_orientation(volume: Volume) -> tuple[str, str]:
    """(row direction, column direction) of the acquired slices: the direction of increasing column, then of
    increasing row, in patient letters (several for an oblique direction, strongest first). ('L', 'P') where
    the geometry is unknown."""
    if not volume.geometry_known:
        return ("L", "P")
    direction = np.asarray(volume.direction, dtype=float)
    return (direction_letters(direction[2]).translate(_TO_DICOM) or "L",
            direction_letters(direction[1]).translate(_TO_DICOM) or "P")


def _series_number(header: Dataset) -> int:
    try:
        return SERIES_NUMBER_OFFSET + int(header.get("SeriesNumber"))
    except (TypeError, ValueError):
        return SERIES_NUMBER_OFFSET


def _derivation(window: Window | tuple[float, float] | None, prediction: Prediction | None) -> str:
    parts = ["Key image rendered by MedViewer"]
    if window is not None:
        center, width = (window.center, window.width) if isinstance(window, Window) else window
        parts.append(f"window centre {float(center):g}, width {float(width):g}")
    if prediction is not None:
        overlays = []
        if prediction.heatmap is not None:
            overlays.append("assistant heatmap")
        if prediction.mask is not None:
            overlays.append("segmentation contours")
        if overlays:
            parts.append("with " + " and ".join(overlays))
    return _ascii("; ".join(parts), 1024)


def _reference(header: Dataset) -> Dataset:
    """The source header for highdicom to copy patient and study from (see :func:`source_for_export`)."""
    return source_for_export(header)


def _sc_image(header: Dataset, rgb: np.ndarray, series_uid: str, number: int, orientation: tuple[str, str],
              spacing: tuple[float, float] | None, now: _dt.datetime) -> SCImage:
    return SCImage.from_ref_dataset(
        header,
        pixel_array=np.ascontiguousarray(rgb, dtype=np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_uid,
        series_number=_series_number(header),
        sop_instance_uid=generate_uid(),
        instance_number=number,
        manufacturer=MANUFACTURER,
        pixel_spacing=spacing,
        patient_orientation=orientation,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=SERIES_DESCRIPTION,
        manufacturer_model_name="MedViewer",
        software_versions=str(__version__),
        series_date=now.date(),
        series_time=now.time(),
        content_date=now.date(),
        content_time=now.time(),
    )


def build_secondary_captures(
    volume: Volume,
    prediction: Prediction | None,
    *,
    bookmarks: Iterable[int] = (),
    annotations: Iterable[Annotation] = (),
    window: Window | tuple[float, float] | None = None,
    series_uid: str | None = None,
) -> list[SCImage]:
    """The Secondary Capture datasets of the key slices, in slice order (not written)."""
    annotations = list(annotations)
    slices = key_slices(prediction, [int(k) for k in bookmarks], annotations)
    count = volume.voxels.shape[0]
    for k, _ in slices:
        if not 0 <= k < count:
            raise ValueError(f"slice {k + 1} is outside the series (1..{count})")
    if prediction is not None and len(prediction.sop_instance_uids) != count:
        raise ValueError(f"the prediction has {len(prediction.sop_instance_uids)} slices, the series {count}")
    shown = sorted({f.label_value for f in prediction.findings}) if prediction and prediction.findings else None
    series_uid = series_uid or generate_uid()
    orientation = patient_orientation(volume)
    spacing = (float(volume.spacing_mm[1]), float(volume.spacing_mm[2])) if volume.pixel_spacing_known else None
    now = _dt.datetime.now()
    derivation = _derivation(window, prediction)
    images = []
    for number, (k, reason) in enumerate(slices, start=1):
        header = volume.header(k)
        if header is None or "StudyInstanceUID" not in header:
            raise ValueError("secondary captures need a DICOM series: this one has no DICOM headers")
        rgb = render_slice(volume, k, window=window, prediction=prediction, mask_style="contour", heatmap=True,
                           annotations=annotations, labels_to_show=shown)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # highdicom's doubts about single-component names
            sc = _sc_image(_reference(header), rgb, series_uid, number, orientation, spacing, now)
        source = volume.slices[k]
        reference = Dataset()
        reference.ReferencedSOPClassUID = header.SOPClassUID
        reference.ReferencedSOPInstanceUID = source.sop_instance_uid
        frames = header.get("NumberOfFrames")
        if frames is not None and int(frames) > 1:
            reference.ReferencedFrameNumber = source.frame + 1
        purpose = Dataset()
        purpose.CodeValue = "121322"
        purpose.CodingSchemeDesignator = "DCM"
        purpose.CodeMeaning = "Source image for image processing operation"
        reference.PurposeOfReferenceCodeSequence = [purpose]
        sc.SourceImageSequence = [reference]
        instance = Dataset()
        instance.ReferencedSOPClassUID = header.SOPClassUID
        instance.ReferencedSOPInstanceUID = source.sop_instance_uid
        series = Dataset()
        series.SeriesInstanceUID = header.get("SeriesInstanceUID", volume.series_uid)
        series.ReferencedInstanceSequence = [instance]
        sc.ReferencedSeriesSequence = [series]
        body_part = str(header.get("BodyPartExamined", "") or "").strip()
        laterality = str(header.get("Laterality", "") or "").strip()
        if body_part:
            sc.BodyPartExamined = body_part
        if laterality in ("L", "R"):
            sc.Laterality = laterality
        elif not body_part:
            sc.Laterality = ""  # Type 2C: whether the part is paired is not known
        sc.DerivationDescription = derivation
        sc.ImageComments = _ascii(f"Slice {k + 1} of {count}: {reason}. Not for clinical use.")
        sc.BurnedInAnnotation = "NO"
        images.append(sc)
    return images


def write_secondary_captures(
    volume: Volume,
    prediction: Prediction | None,
    out_dir: str | os.PathLike,
    *,
    bookmarks: Iterable[int] = (),
    annotations: Iterable[Annotation] = (),
    window: Window | tuple[float, float] | None = None,
    force: bool = False,
) -> list[Path]:
    """Write one Secondary Capture per key slice into ``out_dir`` as ``SC0001.dcm``, ``SC0002.dcm``, ...
    (all or none; existing files are replaced only with ``force``). Returns the paths, in slice order;
    an empty list when there is no key slice (no finding, bookmark or measurement).

    Raises :class:`~medviewer.core.safe.ExportError` when the files cannot be written or the series
    has no DICOM headers to take the study from.
    """
    out_dir = Path(out_dir)
    try:
        images = build_secondary_captures(volume, prediction, bookmarks=bookmarks, annotations=annotations,
                                          window=window)
    except ValueError as exc:
        raise ExportError(str(out_dir), str(exc)) from None
    if not images:
        return []
    targets = {out_dir / f"SC{number:04d}.dcm": image for number, image in enumerate(images, start=1)}
    check_targets(list(targets), force)

    def writer(image: SCImage):
        return lambda fp: dcmwrite(fp, image, enforce_file_format=True)

    return write_files({path: writer(image) for path, image in targets.items()}, force=force)
