"""Group scanned instances into Study → Series and put each series' frames in geometric order.

A DICOM series is split where one volume cannot hold it: different frames of reference,
image sizes, orientations or colour models. Frames are sorted by their position along the
slice normal (fallbacks: instance number, then file name); the slice spacing comes from the
positions, not from SliceThickness, and gaps, duplicates and irregular spacing are reported.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from medviewer.core.header import FrameGeometry, Instance
from medviewer.core.sources import Refused, natural_key


@dataclass(frozen=True)
class FrameRef:
    """One 2D frame of a series: frame ``frame`` (0-based) of ``instance``."""

    instance: Instance
    frame: int

    @property
    def geometry(self) -> FrameGeometry:
        return self.instance.geometry[self.frame]


@dataclass
class Series:
    """A stack of frames that loads into one :class:`~medviewer.core.volume.Volume`.

    ``frames`` are in load order. ``spacing_mm`` is (dz, dy, dx); ``direction`` rows are the
    LPS unit vectors of the array axes (slice, row, column); ``origin_lps_mm`` is the centre
    of the first pixel of the first frame. ``geometry_known`` is False where the files carry
    no patient positions (pictures, some secondary captures).
    """

    uid: str
    study_uid: str
    frames: list[FrameRef]
    part: int = 1
    parts: int = 1
    split_reason: str = ""
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    geometry_known: bool = False
    pixel_spacing_known: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Unique within a scan: the Series Instance UID, with the part number when split."""
        return self.uid if self.parts == 1 else f"{self.uid}#{self.part}"

    @property
    def first(self) -> Instance:
        return self.frames[0].instance

    @property
    def instances(self) -> list[Instance]:
        seen: dict[int, Instance] = {}
        for ref in self.frames:
            seen.setdefault(id(ref.instance), ref.instance)
        return list(seen.values())

    @property
    def modality(self) -> str:
        return str(self.first.get("Modality", "OT"))

    @property
    def description(self) -> str:
        text = str(self.first.get("SeriesDescription", "") or "")
        return f"{text} [part {self.part}/{self.parts}]" if self.parts > 1 else text

    @property
    def number(self) -> int | None:
        value = self.first.get("SeriesNumber")
        try:
            return int(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    @property
    def rows(self) -> int:
        return self.first.rows

    @property
    def columns(self) -> int:
        return self.first.columns

    @property
    def samples_per_pixel(self) -> int:
        return self.first.samples_per_pixel

    @property
    def photometric(self) -> str:
        return self.first.photometric

    @property
    def is_color(self) -> bool:
        return self.first.is_color

    @property
    def transfer_syntaxes(self) -> list[str]:
        return sorted({inst.syntax_name for inst in self.instances})

    @property
    def frame_of_reference_uid(self) -> str:
        return str(self.first.get("FrameOfReferenceUID", "") or "")

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return (f"Series({self.modality} {self.description!r}, {len(self.frames)} frames, "
                f"{self.rows}x{self.columns}, uid={self.key})")


@dataclass
class Study:
    uid: str
    series: list[Series]

    @property
    def first(self) -> Instance:
        return self.series[0].first

    @property
    def patient_name(self) -> str:
        return str(self.first.get("PatientName", "") or "")

    @property
    def patient_id(self) -> str:
        return str(self.first.get("PatientID", "") or "")

    @property
    def date(self) -> str:
        return str(self.first.get("StudyDate", "") or "")

    @property
    def description(self) -> str:
        return str(self.first.get("StudyDescription", "") or "")

    @property
    def accession_number(self) -> str:
        return str(self.first.get("AccessionNumber", "") or "")


@dataclass
class ScanResult:
    """What a scan found: studies with their series, and every file that was not taken."""

    studies: list[Study]
    refused: list[Refused]

    @property
    def series(self) -> list[Series]:
        return [series for study in self.studies for series in study.series]

    def patients(self) -> dict[tuple[str, str], list[Study]]:
        """Studies grouped by (patient ID, patient name), for a browser's top level."""
        grouped: dict[tuple[str, str], list[Study]] = defaultdict(list)
        for study in self.studies:
            grouped[(study.patient_id, study.patient_name)].append(study)
        return dict(grouped)

    def find(self, key: str) -> Series:
        for series in self.series:
            if series.key == key or series.uid == key:
                return series
        raise KeyError(key)


def _group_keys(instance: Instance) -> tuple[str, str]:
    if instance.kind == "dicom":
        study = str(instance.get("StudyInstanceUID", "") or "unknown-study")
        series = str(instance.get("SeriesInstanceUID", "") or f"unknown-series:{study}")
        return study, series
    location = instance.source.member or instance.source.path
    folder = os.path.dirname(location)
    if instance.source.member is not None:
        folder = f"{instance.source.path}!/{folder}"
    if instance.kind == "nifti":
        return f"files:{folder}", f"nifti:{instance.source.name}"
    return f"files:{folder}", f"image:{folder}:{instance.rows}x{instance.columns}:{instance.samples_per_pixel}"


def _split_key(instance: Instance) -> tuple:
    geometry = instance.geometry[0] if instance.geometry else FrameGeometry()
    orientation = tuple(round(v, 3) + 0.0 for v in geometry.orientation) if geometry.orientation else None
    has_positions = all(g.position is not None for g in instance.geometry)
    return (
        str(instance.get("FrameOfReferenceUID", "") or ""),
        instance.rows,
        instance.columns,
        instance.is_color,
        orientation,
        has_positions,
    )


_SPLIT_REASONS = ("frame of reference", "image size", "image size", "colour model", "orientation",
                  "positions present")


def build_series(instances: list[Instance]) -> list[Study]:
    """Group instances into studies and geometrically sorted series."""
    by_series: dict[tuple[str, str], list[Instance]] = defaultdict(list)
    for instance in instances:
        by_series[_group_keys(instance)].append(instance)

    studies: dict[str, list[Series]] = defaultdict(list)
    for (study_uid, series_uid), members in by_series.items():
        warnings: list[str] = []
        unique: dict[str, Instance] = {}
        duplicates = 0
        for instance in members:
            uid = instance.sop_instance_uid if instance.kind == "dicom" else instance.source.name
            if uid in unique:
                duplicates += 1
                continue
            unique[uid] = instance
        if duplicates:
            warnings.append(f"{duplicates} duplicate file(s) with the same SOP Instance UID ignored")
        parts = _split(list(unique.values()))
        for number, (reason, part_members) in enumerate(parts, start=1):
            series = _make_series(series_uid, study_uid, part_members)
            series.warnings[:0] = warnings
            if len(parts) > 1:
                series.part, series.parts, series.split_reason = number, len(parts), reason
                series.warnings.insert(0, f"split from series {series_uid}: {reason}")
            studies[study_uid].append(series)

    result = []
    for study_uid, series_list in studies.items():
        series_list.sort(key=lambda s: (s.number if s.number is not None else 1 << 30, natural_key(s.description),
                                        s.part))
        result.append(Study(study_uid, series_list))
    result.sort(key=lambda st: (st.patient_id, st.date, st.uid))
    return result


def _split(members: list[Instance]) -> list[tuple[str, list[Instance]]]:
    groups: dict[tuple, list[Instance]] = defaultdict(list)
    for instance in members:
        groups[_split_key(instance)].append(instance)
    keys = list(groups)
    reason = ""
    if len(keys) > 1:
        differing = [i for i in range(len(keys[0])) if len({k[i] for k in keys}) > 1]
        reason = "different " + " and ".join(dict.fromkeys(_SPLIT_REASONS[i] for i in differing))
    out: list[tuple[str, list[Instance]]] = []
    for key in keys:
        group = groups[key]
        has_positions = key[-1]
        multi = [inst for inst in group if inst.frames > 1]
        if not has_positions and len(multi) > 1:
            # Several cine clips or multi-page pictures without positions: one stack each.
            for inst in sorted(group, key=_instance_order):
                out.append((reason or "separate multi-frame instances", [inst]))
        else:
            out.append((reason, group))
    if len(out) > 1 and not reason:
        out = [(r or "separate multi-frame instances", g) for r, g in out]
    # Largest part first keeps the main stack as part 1 (a scout splits off as part 2).
    out.sort(key=lambda item: -sum(inst.frames for inst in item[1]))
    return out


def _instance_order(instance: Instance) -> tuple:
    number = instance.get("InstanceNumber")
    try:
        number = int(number)
    except (TypeError, ValueError):
        number = None
    return (number is None, number or 0, natural_key(instance.source.name))


def _make_series(uid: str, study_uid: str, members: list[Instance]) -> Series:
    frames = [FrameRef(inst, f) for inst in members for f in range(inst.frames)]
    notes = sorted({note for inst in members for note in inst.notes})
    series = Series(uid=uid, study_uid=study_uid, frames=frames, warnings=[])
    series.warnings.extend(notes)
    first = frames[0].geometry
    dy, dx = first.pixel_spacing or (1.0, 1.0)
    series.pixel_spacing_known = first.pixel_spacing is not None
    if not series.pixel_spacing_known and members[0].kind == "dicom":
        series.warnings.append("no pixel spacing in the header: distances are in pixels")

    positioned = all(ref.geometry.position is not None and ref.geometry.orientation is not None for ref in frames)
    if positioned:
        _sort_by_position(series, dy, dx)
    else:
        numbered = all(not _instance_order(ref.instance)[0] for ref in frames)
        if numbered:
            frames.sort(key=lambda ref: (_instance_order(ref.instance), ref.frame))
            how = "instance number"
        else:
            frames.sort(key=lambda ref: (natural_key(ref.instance.source.name), ref.frame))
            how = "file name"
        dz = first.thickness or _float_or(members[0].get("SpacingBetweenSlices"), 1.0)
        series.spacing_mm = (float(dz), float(dy), float(dx))
        if len(frames) > 1 and members[0].kind == "dicom":
            series.warnings.append(f"no slice positions: ordered by {how}, spacing from the slice thickness")
    return series


def _float_or(value, default: float) -> float:
    try:
        result = float(value)
        return result if result > 0 else default
    except (TypeError, ValueError):
        return default


def _sort_by_position(series: Series, dy: float, dx: float) -> None:
    frames = series.frames
    orientation = np.asarray(frames[0].geometry.orientation, dtype=float)
    row_dir, col_dir = orientation[:3], orientation[3:6]
    normal = np.cross(row_dir, col_dir)
    norm = np.linalg.norm(normal)
    if norm < 1e-6:
        series.warnings.append("invalid ImageOrientationPatient (parallel direction cosines)")
        normal = np.array([0.0, 0.0, 1.0])
    else:
        normal = normal / norm
    positions = np.array([ref.geometry.position for ref in frames], dtype=float)
    distance = positions @ normal
    order = sorted(range(len(frames)), key=lambda i: (round(distance[i], 4), _instance_order(frames[i].instance),
                                                        frames[i].frame))
    series.frames = [frames[i] for i in order]
    positions = positions[order]
    distance = distance[order]

    thickness = series.frames[0].geometry.thickness
    steps = np.diff(distance)
    tolerance = 1e-3
    moving = steps[steps > tolerance]
    if len(moving):
        dz = float(np.median(moving))
    else:
        dz = float(thickness or _float_or(series.first.get("SpacingBetweenSlices"), 1.0))
    duplicates = int(np.sum(steps <= tolerance))
    if duplicates:
        series.warnings.append(f"{duplicates} slice(s) share a position with another slice")
    if len(moving):
        gaps = moving[moving > 1.5 * dz]
        if len(gaps):
            series.warnings.append(
                f"{len(gaps)} gap(s) in slice positions (largest {gaps.max():.2f} mm, usual spacing {dz:.2f} mm)")
        regular = moving[moving <= 1.5 * dz]
        if len(regular) and (regular.max() - regular.min()) > 0.01 + 0.05 * dz:
            series.warnings.append(f"irregular slice spacing ({regular.min():.2f}–{regular.max():.2f} mm)")
    if len(positions) > 1:
        in_plane = positions[-1] - positions[0] - (distance[-1] - distance[0]) * normal
        along = distance[-1] - distance[0]
        if along > 0 and np.linalg.norm(in_plane) > max(0.05 * along, 0.5):
            angle = float(np.degrees(np.arctan2(np.linalg.norm(in_plane), along)))
            series.warnings.append(f"slices are sheared (gantry tilt about {angle:.1f}°): 3D positions are approximate")
    series.spacing_mm = (dz, float(dy), float(dx))
    series.origin_lps_mm = tuple(float(v) for v in positions[0])
    series.direction = np.vstack([normal, col_dir, row_dir])
    series.geometry_known = True


def refused_sorted(refused: list[Refused]) -> list[Refused]:
    return sorted(refused, key=lambda r: natural_key(r.path))
