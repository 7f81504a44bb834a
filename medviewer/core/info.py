"""What ``medviewer info`` reports: studies, series, geometry, warnings, refused files, and a
data-integrity summary of each image's stored pixel values.

The ``pixels`` object of an image describes its stored values (before the modality LUT) as
MedViewer decodes them: ``shape`` is (rows, cols) for one frame, (frames, rows, cols) for
several, with a trailing 3 for colour; ``sha256`` hashes the values in C order,
little-endian, as int32 for grayscale and palette indices (int64 when they do not fit,
float64 for float pixel data) and as interleaved RGB for colour at the stored depth (YBR
converted to RGB; little-endian uint8, uint16 or uint32 samples for 8-, 16- and 32-bit
BitsAllocated; palette colour through its palette as uint8). ``bits_stored`` is the number
of significant bits of each value (8 for palette colour). Another tool that decodes the
same file can reproduce the hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from medviewer.core.decode import DecodeError, decode_frames, read_native_frame, rgb_bits, to_rgb
from medviewer.core.errors import Cancelled, CancelToken, WorkerCrashed, WorkerHung, is_cancelled
from medviewer.core.header import UNCOMPRESSED, Instance
from medviewer.core.series import ScanResult, Series
from medviewer.core.sources import Refused


def stored_pixels(instance: Instance) -> np.ndarray:
    """All frames of ``instance`` as stored values: (frames, rows, cols) or (frames, rows, cols, 3)."""
    frames = list(range(instance.frames))
    if instance.pixel_offset is not None and instance.samples_per_pixel == 1:
        out = []
        for frame in frames:
            buffer = np.empty(instance.frame_bytes, dtype=np.uint8)
            out.append(read_native_frame(instance, frame, buffer).copy())
        return np.stack(out)
    if instance.kind == "dicom" and instance.transfer_syntax not in UNCOMPRESSED:
        # Compressed frames are decoded in a pool process: a codec that crashes there costs
        # that process, and the file is refused as "decoder crashed".
        from medviewer.core.load import CRASHED, decode_job
        from medviewer.core.pool import run_isolated

        try:
            arrays, palette, messages = run_isolated(decode_job, instance, frames)
        except WorkerHung as exc:
            raise DecodeError(f"could not be decoded (the decoder {exc})") from None
        except WorkerCrashed:
            raise DecodeError(CRASHED) from None
        instance.notes.extend(m for m in messages if m not in instance.notes)
    else:
        from medviewer.core.capture import captured

        with captured() as messages:
            arrays, palette = decode_frames(instance, frames)
        instance.notes.extend(m for m in messages if m not in instance.notes)
    if instance.samples_per_pixel == 3:
        arrays = [to_rgb(a, instance, palette) for a in arrays]
    return np.stack(arrays)


def pixel_summary(values: np.ndarray, color: bool, bits_stored: int | None = None) -> dict[str, Any]:
    """shape, dtype, bits_stored, min, max, mean and sha256 of stored values (see the module docstring)."""
    shape = values.shape[1:] if values.shape[0] == 1 else values.shape
    values = values.reshape(shape)
    if color:
        canonical = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
    elif values.dtype.kind == "f":
        canonical = np.ascontiguousarray(values, dtype="<f8")
    else:
        lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
        fits = np.iinfo(np.int32).min <= lo and hi <= np.iinfo(np.int32).max
        canonical = np.ascontiguousarray(values, dtype="<i4" if fits else "<i8")
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    return {
        "shape": list(shape),
        "dtype": str(values.dtype),
        "bits_stored": bits_stored,
        "min": _number(finite.min()) if finite.size else None,
        "max": _number(finite.max()) if finite.size else None,
        "mean": float(finite.mean(dtype=np.float64)) if finite.size else None,
        "sha256": hashlib.sha256(canonical.tobytes()).hexdigest(),
    }


def _number(value) -> int | float:
    return int(value) if np.issubdtype(type(value), np.integer) else float(value)


def _series_json(series: Series) -> dict[str, Any]:
    first = series.first
    return {
        "key": series.key,
        "series_instance_uid": series.uid,
        "study_instance_uid": series.study_uid,
        "frame_of_reference_uid": series.frame_of_reference_uid,
        "series_number": series.number,
        "description": series.description,
        "modality": series.modality,
        "instances": len(series.instances),
        "frames": len(series.frames),
        "rows": series.rows,
        "columns": series.columns,
        "samples_per_pixel": series.samples_per_pixel,
        "photometric_interpretation": series.photometric,
        "bits_allocated": first.bits_allocated,
        "bits_stored": first.bits_stored,
        "transfer_syntaxes": series.transfer_syntaxes,
        "transfer_syntax_uids": sorted({inst.transfer_syntax for inst in series.instances if inst.transfer_syntax}),
        "spacing_mm": [round(v, 6) for v in series.spacing_mm],
        "pixel_spacing_known": series.pixel_spacing_known,
        "geometry_known": series.geometry_known,
        "origin_lps_mm": [round(v, 6) for v in series.origin_lps_mm] if series.geometry_known else None,
        "direction": [[round(v, 6) for v in row] for row in series.direction] if series.geometry_known else None,
        "resampled": ({"reason": series.grid.reason, "slices": series.grid.count, "acquired_slices": len(series.frames),
                       "interpolated_slices": int((~series.grid.exact).sum()), "rows": series.grid.rows,
                       "columns": series.grid.cols} if series.grid is not None else None),
        "not_used": [{"path": u.frame.instance.source.name, "sop_instance_uid": u.frame.instance.sop_instance_uid,
                      "frame": u.frame.frame, "reason": u.reason} for u in series.unused],
        "warnings": list(series.warnings),
    }


def describe(
    result: ScanResult,
    *,
    pixels: bool = True,
    progress: Callable[[int, int], object] | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """The ``info --json`` document for a scan. With ``pixels``, every image is decoded once;
    an image that fails to decode is added to ``refused`` with the reason."""
    from medviewer.version import __version__

    refused: list[Refused] = list(result.refused)
    total = sum(len(s.instances) for s in result.series) if pixels else 0
    done = 0
    studies = []
    counts = {"series": 0, "images": 0}
    for study in result.studies:
        series_list = []
        for series in study.series:
            entry = _series_json(series)
            instances = []
            for instance in series.instances:
                item: dict[str, Any] = {
                    "path": instance.source.name,
                    "sop_instance_uid": instance.sop_instance_uid,
                    "instance_number": _int(instance.get("InstanceNumber")),
                    "transfer_syntax": instance.syntax_name,
                    "frames": instance.frames,
                }
                if pixels:
                    if is_cancelled(cancel):
                        raise Cancelled("info cancelled")
                    try:
                        item["pixels"] = pixel_summary(stored_pixels(instance), instance.samples_per_pixel == 3,
                                                       _bits(instance))
                    except Cancelled:
                        raise
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except BaseException as exc:  # noqa: BLE001 - one image's failure is that image's
                        # Nothing of it decodes: it is refused, not listed with a blank image.
                        reason = str(exc) if isinstance(exc, (DecodeError, OSError)) and str(exc) else (
                            f"could not be decoded ({type(exc).__name__}: {exc})")
                        refused.append(Refused(instance.source.name, reason))
                        item = None
                    done += 1
                    if progress:
                        progress(done, total)
                if item is not None:
                    item["warnings"] = list(instance.notes)
                    instances.append(item)
            if not instances:
                continue
            for note in (n for inst in series.instances for n in inst.notes):
                if note not in entry["warnings"]:
                    entry["warnings"].append(note)
            entry["images"] = instances
            entry["instances"] = len(instances)
            counts["series"] += 1
            counts["images"] += len(instances)
            series_list.append(entry)
        if not series_list:
            continue
        studies.append({
            "study_instance_uid": study.uid,
            "patient_name": study.patient_name,
            "patient_id": study.patient_id,
            "study_date": study.date,
            "study_description": study.description,
            "accession_number": study.accession_number,
            "series": series_list,
        })
    return {
        "medviewer": __version__,
        "studies": studies,
        "refused": [{"path": r.path, "reason": r.reason} for r in refused],
        "summary": {
            "studies": len(studies),
            "series": counts["series"],
            "images": counts["images"],
            "refused": len(refused),
        },
    }


def _bits(instance: Instance) -> int | None:
    if instance.samples_per_pixel == 3:
        return rgb_bits(instance)
    if instance.float_pixels:
        return None
    return instance.bits_stored or None


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def format_text(document: dict[str, Any]) -> str:
    """The human-readable ``info`` report."""
    lines = []
    for study in document["studies"]:
        date = study["study_date"]
        if len(date) == 8 and date.isdigit():
            date = f"{date[:4]}-{date[4:6]}-{date[6:]}"
        who = study["patient_name"] or "(no name)"
        pid = f" ({study['patient_id']})" if study["patient_id"] else ""
        lines.append(f"Patient {who}{pid}")
        desc = f' "{study["study_description"]}"' if study["study_description"] else ""
        lines.append(f"  Study {date or '(no date)'}{desc}")
        for series in study["series"]:
            number = f"{series['series_number']} " if series["series_number"] is not None else ""
            frames = series["frames"]
            dz, dy, dx = series["spacing_mm"]
            unit = "mm" if series["pixel_spacing_known"] else "px"
            lines.append(
                f"    Series {number}{series['modality']} \"{series['description']}\": {frames} "
                f"{'slice' if frames == 1 else 'slices'} {series['rows']}x{series['columns']}"
                f"{' RGB' if series['samples_per_pixel'] == 3 else ''}, spacing {dz:g} x {dy:g} x {dx:g} {unit}, "
                f"{', '.join(series['transfer_syntaxes'])}")
            for warning in series["warnings"]:
                lines.append(f"      warning: {warning}")
            for item in series.get("not_used", []):
                lines.append(f"      not used: {item['path']}: {item['reason']}")
            stats = [img["pixels"] for img in series.get("images", []) if "pixels" in img and "error" not in img["pixels"]]
            # min/max are None for images without a finite value (all-NaN float data).
            stats = [s for s in stats if s["min"] is not None and s["max"] is not None]
            if stats:
                lo = min(s["min"] for s in stats)
                hi = max(s["max"] for s in stats)
                lines.append(f"      stored values {lo} to {hi}")
    s = document["summary"]
    lines.append(f"{s['studies']} stud{'y' if s['studies'] == 1 else 'ies'}, {s['series']} series, "
                 f"{s['images']} image file(s), {s['refused']} not opened" + (" (listed on stderr)" if s["refused"] else ""))
    return "\n".join(lines)
