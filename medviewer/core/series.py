"""Group scanned instances into Study → Series and put each series' frames in geometric order.

A DICOM series is split where one volume cannot hold it: different frames of reference,
image sizes, orientations or colour models. Frames are sorted by their position along the
slice normal (fallbacks: instance number, then file name), never by InstanceNumber or file
order where positions exist; the slice spacing comes from the positions, not from
SliceThickness.

Each frame's Image Position (Patient) is authoritative. Where the acquired slices do not form
an even orthogonal grid, the series carries a :class:`GridPlan` and the loader resamples the
slices onto one, as dcm2niix does (its ``_Tilt`` and ``_Eq`` volumes):

* gantry tilt (each slice shifted in its plane against the first): every slice is shifted
  back in plane (bilinear), so that voxel (k, j, i) lies at ``origin + (k*dz, j*dy, i*dx) @
  direction`` with orthogonal axes and mm measurements hold in every direction;
* gaps and irregular spacing: slices are placed at their real distance along the normal and
  the even grid between the first and the last is filled by linear interpolation between
  the two nearest acquired slices (acquired slices that fall on the grid are copied as they
  are).

Resampling rather than carrying per-slice positions keeps one affine for every consumer (MPR,
measurements, overlays, the assistant), which cannot then get a slice position wrong; the
Volume keeps the acquired slices' positions and headers, and DICOM SEG export maps masks back
onto them. Frames at the same position (a repeated slice under another SOP Instance UID) are
not stacked: the one with the lowest InstanceNumber (then SOP Instance UID, file name, frame)
is used, the others are listed in ``Series.unused`` with the reason, and a warning says so.
A series where every position holds the same number (> 1) of frames (phases, echoes) is
kept stacked as it is, with a warning.
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


#: In-plane offset (mm) between slices beyond which the series counts as sheared (gantry tilt).
SHEAR_TOLERANCE_MM = 0.05
#: A slice this close to the even grid through the first and last slice is not resampled.
EVEN_TOLERANCE_MM = 0.02
#: Two frames closer than this along the normal, and in the same plane, are at the same position.
SAME_POSITION_MM = 0.01


@dataclass(frozen=True)
class GridPlan:
    """How the loader resamples acquired slices (``Series.frames``, in order) onto an even grid.

    Output slice k is ``(1 - weight[k]) * A[lower[k]] + weight[k] * A[upper[k]]``, where ``A[a]``
    is acquired slice a shifted in plane by ``shifts[a]`` (rows, cols) pixels onto the grid.
    ``exact[k]`` where output slice k is acquired slice ``lower[k]`` itself at its own distance
    along the normal (weight 0); it may still be shifted in plane. The grid is ``rows`` x
    ``cols``: large enough to hold every acquired slice after its shift (a tilted series
    grows along the direction of the tilt, as dcm2niix's ``_Tilt`` volume does).
    """

    reason: str
    lower: np.ndarray
    upper: np.ndarray
    weight: np.ndarray
    shifts: np.ndarray
    exact: np.ndarray
    sheared: bool
    uneven: bool
    rows: int
    cols: int
    origin_shift: tuple[int, int] = (0, 0)

    @property
    def count(self) -> int:
        return int(len(self.lower))


@dataclass(frozen=True)
class Unused:
    """A frame the series does not use, and why."""

    frame: FrameRef
    reason: str


@dataclass
class Series:
    """A stack of frames that loads into one :class:`~medviewer.core.volume.Volume`.

    ``frames`` are in load order (the acquired slices, sorted along the normal, without the
    ``unused`` ones). ``spacing_mm`` is (dz, dy, dx); ``direction`` rows are the LPS unit
    vectors of the array axes (slice, row, column); ``origin_lps_mm`` is the centre of the
    first pixel of the first frame: the geometry of the volume the loader makes, which is
    ``grid`` (an even orthogonal resampling) where one is planned. ``geometry_known`` is False
    where the files carry no patient positions (pictures, some secondary captures).
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
    grid: GridPlan | None = None
    unused: list[Unused] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Unique within a scan: the Series Instance UID, with the part number when split."""
        return self.uid if self.parts == 1 else f"{self.uid}#{self.part}"

    @property
    def first(self) -> Instance:
        return self.frames[0].instance

    @property
    def grid_spacing(self) -> float:
        """Slice spacing (mm) of the resampled grid (``spacing_mm[0]`` where there is no grid)."""
        if self.grid is None:
            return float(self.spacing_mm[0])
        distance = np.array([ref.geometry.position for ref in (self.frames[0], self.frames[-1])]) @ self.direction[0]
        along = float(distance[1] - distance[0])
        return along / (self.grid.count - 1) if self.grid.count > 1 else float(self.spacing_mm[0])

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
        made = []
        for reason, part_members in parts:
            series = _make_series(series_uid, study_uid, part_members)
            pieces = _split_at_large_gaps(series)
            if len(pieces) == 1:
                made.append((reason, series))
                continue
            why = f"gap of {pieces[0][0]:.1f} mm in slice positions"
            made.extend(((f"{reason} and {why}" if reason else why),
                         _make_series(series_uid, study_uid, members)) for _, members in pieces)
        made.sort(key=lambda item: -len(item[1].frames))
        parts = made
        for number, (reason, series) in enumerate(parts, start=1):
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


#: Gaps up to this many slice spacings are filled by interpolation; a larger one splits the series.
MAX_FILLED_GAP = 4.0


def _split_at_large_gaps(series: Series) -> list[tuple[float, list[Instance]]]:
    """The series' instances in pieces between gaps wider than ``MAX_FILLED_GAP`` spacings (with
    the widest gap), or one piece. Only single-frame instances are split."""
    if series.grid is None or any(ref.instance.frames > 1 for ref in series.frames):
        return [(0.0, series.instances)]
    distance = np.array([ref.geometry.position for ref in series.frames], dtype=float) @ series.direction[0]
    steps = np.diff(distance)
    moving = steps[steps > SAME_POSITION_MM]
    if not len(moving):
        return [(0.0, series.instances)]
    dz = float(np.median(moving))
    cuts = [i + 1 for i, step in enumerate(steps) if step > MAX_FILLED_GAP * dz + SAME_POSITION_MM]
    if not cuts:
        return [(0.0, series.instances)]
    widest = float(steps.max())
    unused = [u.frame.instance for u in series.unused]
    bounds = [0, *cuts, len(series.frames)]
    pieces = [[ref.instance for ref in series.frames[a:b]] for a, b in zip(bounds, bounds[1:])]
    # Frames not used at a position go back with their piece (they are set aside again there).
    for inst in unused:
        d = float(np.dot(inst.geometry[0].position, series.direction[0]))
        index = int(np.searchsorted(distance[np.array(cuts)], d + SAME_POSITION_MM)) if cuts else 0
        pieces[min(index, len(pieces) - 1)].append(inst)
    return [(widest, piece) for piece in pieces]


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


def _keep_rule(ref: FrameRef) -> tuple:
    """Which of several frames at one position is used: lowest InstanceNumber, then SOP
    Instance UID, file name and frame number."""
    return (_instance_order(ref.instance)[:2], ref.instance.sop_instance_uid, natural_key(ref.instance.source.name),
            ref.frame)


def _frame_name(ref: FrameRef) -> str:
    name = os.path.basename(ref.instance.source.member or ref.instance.source.path) or ref.instance.source.name
    return f"{name} frame {ref.frame + 1}" if ref.instance.frames > 1 else name


def _sort_by_position(series: Series, dy: float, dx: float) -> None:
    frames = series.frames
    orientation = np.asarray(frames[0].geometry.orientation, dtype=float)
    row_dir, col_dir = orientation[:3], orientation[3:6]
    normal = np.cross(row_dir, col_dir)
    norm = np.linalg.norm(normal)
    if norm < 1e-6 or not np.all(np.isfinite(orientation)):
        series.warnings.append("invalid ImageOrientationPatient (parallel direction cosines)")
        row_dir, col_dir, normal = np.array([1.0, 0, 0]), np.array([0.0, 1, 0]), np.array([0.0, 0.0, 1.0])
    else:
        normal = normal / norm
        row_dir = row_dir / (np.linalg.norm(row_dir) or 1.0)
        col_dir = col_dir / (np.linalg.norm(col_dir) or 1.0)
    positions = np.array([ref.geometry.position for ref in frames], dtype=float)
    distance = positions @ normal
    order = sorted(range(len(frames)), key=lambda i: (round(distance[i], 4), _keep_rule(frames[i])))
    frames = [frames[i] for i in order]
    positions = positions[order]
    distance = distance[order]

    # Frames at the same position: groups of neighbours along the normal in the same plane.
    groups: list[list[int]] = []
    for i in range(len(frames)):
        if groups and distance[i] - distance[groups[-1][0]] <= SAME_POSITION_MM and np.linalg.norm(
                positions[i] - positions[groups[-1][0]]) <= max(SAME_POSITION_MM, 0.01 * min(dy, dx)):
            groups[-1].append(i)
        else:
            groups.append([i])
    sizes = {len(g) for g in groups}
    stacked = len(groups) > 1 and len(sizes) == 1 and sizes != {1}
    if len(groups) == 1 and len(frames) > 1:
        stacked = True
    if stacked:
        series.warnings.append(f"{len(frames) - len(groups)} slice(s) share a position with another slice "
                               f"({len(frames) // len(groups)} per position: phases or echoes?); shown stacked")
        keep = list(range(len(frames)))
    else:
        keep = []
        for group in groups:
            chosen = min(group, key=lambda i: _keep_rule(frames[i]))
            keep.append(chosen)
            for i in group:
                if i != chosen:
                    series.unused.append(Unused(frames[i], f"same position as {_frame_name(frames[chosen])}, "
                                                           "which is used"))
        if series.unused:
            names = ", ".join(_frame_name(u.frame) for u in series.unused[:3])
            more = f" and {len(series.unused) - 3} more" if len(series.unused) > 3 else ""
            series.warnings.append(
                f"{len(series.unused)} slice(s) share a position with another slice and are not used "
                f"(the lowest instance number is kept): {names}{more}")
    series.frames = [frames[i] for i in keep]
    positions = positions[keep]
    distance = distance[keep]

    thickness = series.frames[0].geometry.thickness
    steps = np.diff(distance)
    moving = steps[steps > SAME_POSITION_MM]
    if len(moving):
        dz = float(np.median(moving))
    else:
        dz = float(thickness or _float_or(series.first.get("SpacingBetweenSlices"), 1.0))
    gaps = moving[moving > 1.5 * dz] if len(moving) else moving
    if len(gaps):
        series.warnings.append(
            f"{len(gaps)} gap(s) in slice positions (largest {gaps.max():.2f} mm, usual spacing {dz:.2f} mm)")
    regular = moving[moving <= 1.5 * dz] if len(moving) else moving
    if len(regular) and (regular.max() - regular.min()) > 0.01 + 0.05 * dz:
        series.warnings.append(f"irregular slice spacing ({regular.min():.2f}–{regular.max():.2f} mm)")

    # In-plane offset of each slice against the first (zero for an orthogonal stack).
    offsets = positions - positions[0] - np.outer(distance - distance[0], normal)
    shear = float(np.linalg.norm(offsets, axis=1).max()) if len(positions) else 0.0
    sheared = shear > SHEAR_TOLERANCE_MM and not stacked
    along = float(distance[-1] - distance[0])
    uneven = False
    if not stacked and len(moving) and len(distance) > 2:
        # Even enough when every slice is within EVEN_TOLERANCE_MM of an even grid through the
        # first and the last (positions rounded in the header are not resampled for nothing).
        count = int(round(along / dz)) + 1
        step = along / (count - 1) if count > 1 else dz
        deviation = np.abs(distance - distance[0] - step * np.arange(len(distance)))
        if count == len(distance) and float(deviation.max()) <= min(EVEN_TOLERANCE_MM, 0.1 * dz):
            dz = float(step)
        else:
            uneven = True
    if sheared:
        angle = float(np.degrees(np.arctan2(np.linalg.norm(offsets[-1]), along))) if along > 0 else 0.0
        series.warnings.append(f"slices are sheared (gantry tilt about {angle:.1f}°): resampled onto an "
                               "orthogonal grid (tilt-corrected)")
    series.spacing_mm = (dz, float(dy), float(dx))
    series.origin_lps_mm = tuple(float(v) for v in positions[0])
    series.direction = np.vstack([normal, col_dir, row_dir])
    series.geometry_known = True
    if sheared or uneven:
        series.grid = _plan_grid(distance, offsets, col_dir, row_dir, dz, dy, dx, sheared, uneven,
                                 series.rows, series.columns)
        series.spacing_mm = (series.grid_spacing, float(dy), float(dx))
        # The grid's first voxel: the first slice's, moved out to hold the shifted slices.
        r0, c0 = series.grid.origin_shift
        series.origin_lps_mm = tuple(float(v) for v in positions[0] + r0 * dy * col_dir + c0 * dx * row_dir)
        if uneven:
            series.warnings.append(
                f"slices resampled to an even spacing of {series.grid_spacing:.3g} mm "
                f"({series.grid.count} slices from {len(series.frames)}; "
                f"{int((~series.grid.exact).sum())} interpolated)")


def _plan_grid(distance: np.ndarray, offsets: np.ndarray, col_dir: np.ndarray, row_dir: np.ndarray, dz: float,
               dy: float, dx: float, sheared: bool, uneven: bool, rows: int, cols: int) -> GridPlan:
    """The even grid from the first acquired slice to the last, at about ``dz`` mm."""
    along = float(distance[-1] - distance[0])
    count = max(1, int(round(along / dz))) + 1 if along > 0 else 1
    step = along / (count - 1) if count > 1 else dz
    targets = distance[0] + step * np.arange(count)
    targets[-1] = distance[-1]
    n = len(distance)
    lower = np.clip(np.searchsorted(distance, targets, side="right") - 1, 0, max(n - 2, 0))
    upper = np.minimum(lower + 1, n - 1)
    span = distance[upper] - distance[lower]
    weight = np.where(span > 0, (targets - distance[lower]) / np.where(span > 0, span, 1.0), 0.0)
    weight = np.clip(weight, 0.0, 1.0)
    at_upper = np.abs(targets - distance[upper]) <= SAME_POSITION_MM
    at_lower = np.abs(targets - distance[lower]) <= SAME_POSITION_MM
    lower = np.where(at_upper & ~at_lower, upper, lower)
    weight = np.where(at_lower | at_upper, 0.0, weight)
    exact = at_lower | at_upper
    # Acquired slice a's pixel (j, i) lies at grid (row, col) = (j, i) + shifts[a].
    shifts = np.stack([offsets @ col_dir / dy, offsets @ row_dir / dx], axis=1)
    shifts[np.abs(shifts - np.rint(shifts)) < 1e-4] = np.rint(shifts[np.abs(shifts - np.rint(shifts)) < 1e-4])
    low = np.floor(shifts.min(axis=0) + 1e-4).astype(int)
    high = np.ceil(shifts.max(axis=0) - 1e-4).astype(int)
    shifts = shifts - low
    reasons = [r for r, on in (("gantry tilt", sheared), ("uneven slice spacing", uneven)) if on]
    return GridPlan(" and ".join(reasons), lower.astype(np.intp), upper.astype(np.intp), weight, shifts, exact,
                    sheared, uneven, rows + int(high[0] - low[0]), cols + int(high[1] - low[1]),
                    (int(low[0]), int(low[1])))


def refused_sorted(refused: list[Refused]) -> list[Refused]:
    return sorted(refused, key=lambda r: natural_key(r.path))
