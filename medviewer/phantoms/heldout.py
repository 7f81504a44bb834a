"""Held-out synthetic chest-CT studies with truth: a test family, never training data.

Written independently of :mod:`medviewer.ai.phantom` (only the output contract is shared): its own body,
lung, tree and nodule models, and an acquisition stage that imitates scanners.

Anatomy (patient-space, mm): a superellipse body that may sit off-centre, of an adult, a child or an obese
habitus, arms down (beside the chest, often cut by the field of view) or up (out of the chest slices), a table;
a rib cage of tilted bands, spine, sternum, heart, aorta, liver under a domed diaphragm; each lung a polar
harmonic outline scaled by an apex profile; airway and vessel trees grown by randomised 3-D branching (two or
three children, Murray-like radii, a pull towards the lung interior); parenchyma with a gravity gradient and
smooth texture, optional emphysema and consolidation; nodules solid, part-solid, ground-glass or calcified,
free, juxta-pleural or juxta-vascular, smooth, lobulated or spiculated, 3-30 mm.

Acquisition: slice thickness 0.6-7 mm (anatomy supersampled in z and averaged over the slice), a field of
view that sets the in-plane spacing (0.5-1 mm at 512 px; at the small default sizes coarser), a reconstruction
circle, truncation when the body is wider than the field, beam-hardening cupping, metal with streaks, iodine
contrast or none, a soft or sharp kernel, correlated noise 5-60 HU, a global HU offset and one of several
storage / rescale conventions (see :data:`STORAGE`).

Arrays are ``(k, j, i)``: ``k`` slices inferior to superior (+z), ``j`` rows to posterior (+y), ``i`` columns
to patient left (+x); axial, ImageOrientationPatient ``[1, 0, 0, 0, 1, 0]``.  Everything is a function of
``(seed, size, max_slices, overrides)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = [
    "KINDS",
    "ATTACHMENTS",
    "MARGINS",
    "NODULE_HU",
    "STORAGE",
    "HeldoutNodule",
    "HeldoutStudy",
    "generate_heldout",
    "write_heldout_dicom",
    "write_heldout_truth",
    "write_heldout_study",
    "read_heldout_truth",
]

KINDS = ("solid", "part-solid", "ground-glass", "calcified")
ATTACHMENTS = ("none", "pleural", "vascular")
MARGINS = ("smooth", "lobulated", "spiculated")
# Nominal density (HU) per kind; part-solid: the ground-glass part, its solid core uses the "solid" range.
NODULE_HU = {"solid": (-60.0, 90.0), "part-solid": (-700.0, -300.0), "ground-glass": (-700.0, -300.0),
             "calcified": (250.0, 1000.0)}
DIAMETER_MM = (3.0, 30.0)

# name -> (pixel representation, bits stored, slope, intercept, lowest HU kept, highest HU kept, padding HU)
STORAGE = {
    "u12": (0, 12, 1.0, -1024.0, -1024, 3071, -1024),
    "u16": (0, 16, 1.0, -1024.0, -1024, 4000, -1024),
    "s16": (1, 16, 1.0, 0.0, -3024, 4000, -3024),
    "s16-1024": (1, 16, 1.0, -1024.0, -3024, 4000, -2048),
    "u16-slope2": (0, 16, 2.0, -1024.0, -1024, 4000, -1024),
}


@dataclass(frozen=True)
class HeldoutNodule:
    """One nodule: centre in LPS mm and as a fractional voxel index ``(k, j, i)``; ``hu`` its nominal density
    (the ground-glass part for part-solid, whose ``core_hu`` is the solid core's); ``label`` its value in
    :attr:`HeldoutStudy.nodule_labels`."""

    label: int
    center_lps_mm: tuple[float, float, float]
    center_index: tuple[float, float, float]
    diameter_mm: float
    kind: str
    attachment: str
    margin: str
    hu: float
    core_hu: float | None = None

    @property
    def type(self) -> str:
        """A short description such as ``"part-solid juxta-pleural spiculated"``."""
        parts = [self.kind]
        if self.attachment != "none":
            parts.append(f"juxta-{self.attachment}")
        if self.margin != "smooth":
            parts.append(self.margin)
        return " ".join(parts)


@dataclass
class HeldoutStudy:
    """A generated study: ``hu`` int16 HU; ``lung_mask`` bool (lung fields with their vessels, intrapulmonary
    airways and nodules); ``nodule_labels`` uint8 (0 none, else the nodule's ``label``); ``nodules``; the
    geometry; ``acquisition`` (scanner settings drawn) and ``anatomy`` (body settings drawn)."""

    hu: np.ndarray
    lung_mask: np.ndarray
    nodule_labels: np.ndarray
    spacing_mm: tuple[float, float, float]  # (dz, dy, dx)
    origin_lps_mm: tuple[float, float, float]  # LPS of the centre of voxel [0, 0, 0]
    nodules: list[HeldoutNodule]
    seed: int
    acquisition: dict = field(default_factory=dict)
    anatomy: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)

    @property
    def labels(self) -> np.ndarray:
        """The engine's label contract: uint8 0 background, 1 lung, 2 nodule (nodule wins)."""
        out = self.lung_mask.astype(np.uint8)
        out[self.nodule_labels > 0] = 2
        return out

    def index_to_lps(self, k: float, j: float, i: float) -> tuple[float, float, float]:
        dz, dy, dx = self.spacing_mm
        x0, y0, z0 = self.origin_lps_mm
        return (x0 + i * dx, y0 + j * dy, z0 + k * dz)

    def lps_to_index(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        dz, dy, dx = self.spacing_mm
        x0, y0, z0 = self.origin_lps_mm
        return ((z - z0) / dz, (y - y0) / dy, (x - x0) / dx)


# ----------------------------------------------------------------------------------------------------------
# drawing


def _u(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


class _Space:
    """Voxel-centre coordinates: the output grid, and the z-supersampled grid the anatomy is drawn on."""

    def __init__(self, n: int, nz: int, dxy: float, dz: float, sub: int, z0: float) -> None:
        self.n, self.nz, self.dxy, self.dz, self.sub = n, nz, dxy, dz, sub
        self.x = ((np.arange(n) - (n - 1) / 2) * dxy).astype(np.float32)
        self.y = self.x.copy()
        self.z = (z0 + np.arange(nz) * dz).astype(np.float32)
        offsets = (np.arange(sub) - (sub - 1) / 2) * (dz / sub)
        self.zs = (self.z[:, None] + offsets[None, :]).ravel().astype(np.float32)  # sub slices, ascending
        self.X = self.x[None, None, :]
        self.Y = self.y[None, :, None]
        self.Z = self.zs[:, None, None]

    def box(self, lo, hi):
        """Slices of the supersampled grid covering the LPS box [lo, hi] (x, y, z)."""
        def span(axis, a, b):
            return slice(int(np.searchsorted(axis, a, "left")), int(np.searchsorted(axis, b, "right")))
        return span(self.zs, lo[2], hi[2]), span(self.y, lo[1], hi[1]), span(self.x, lo[0], hi[0])


def _superellipse(X, Y, cx, cy, a, b, p):
    return np.abs((X - cx) / a) ** p + np.abs((Y - cy) / b) ** p <= 1.0


class _Lungs:
    """Both lungs as an analytic inside-test on broadcast coordinates (also used for single points)."""

    def __init__(self, rng, cav, zb, length, heart):
        bx, by, ac, bc = cav
        self.zb, self.length, self.heart = zb, length, heart
        self.sides = []
        for side in (-1.0, 1.0):  # -1: right lung (patient right is -x), +1: left
            width = _u(rng, 0.40, 0.47) * (0.92 if side > 0 else 1.0)
            self.sides.append({
                "cx": bx + side * ac * _u(rng, 0.47, 0.56),
                "cy": by + bc * _u(rng, 0.0, 0.1), "rx": ac * width, "ry": bc * _u(rng, 0.78, 0.9),
                "harm": [(m, _u(rng, -0.07, 0.07), _u(rng, 0, 2 * math.pi)) for m in (2, 3, 4, 5)],
                "dome": _u(rng, 25, 45) + (12.0 if side < 0 else 0.0), "tilt": _u(rng, 10, 25),
                "apex": _u(rng, 0.18, 0.3),
            })
        self.cav = cav
        self.med = _u(rng, 10, 20)
        self.spine = (bx, by + bc * 0.86, _u(rng, 18, 26))

    def inside(self, X, Y, Z):
        bx, by, ac, bc = self.cav
        out = None
        t = (Z - self.zb) / self.length
        for s in self.sides:
            dx, dy = X - s["cx"], Y - s["cy"]
            theta = np.arctan2(dy, dx)
            rr = np.sqrt((dx / s["rx"]) ** 2 + (dy / s["ry"]) ** 2)
            h = 1.0
            for m, a, ph in s["harm"]:
                h = h + a * np.cos(m * theta + ph)
            prof = np.sqrt(np.clip((1.0 - t) / s["apex"], 0.0, 1.0)) * (t >= 0)
            bowl = 1 - (dx / (s["rx"] * 1.15)) ** 2 - (dy / (s["ry"] * 1.2)) ** 2
            dome = self.zb + np.maximum(0.0, s["dome"] * bowl
                                        - s["tilt"] * (dy / s["ry"]))
            inside = (rr <= h * prof) & (Z > dome)
            out = inside if out is None else out | inside
        out &= _superellipse(X, Y, bx, by, ac, bc, 2.2)
        out &= np.abs(X - bx) > self.med
        sx, sy, sr = self.spine
        out &= (X - sx) ** 2 + (Y - sy) ** 2 > (sr + 6) ** 2
        hx, hy, hz, hrx, hry, hrz = self.heart
        out &= ((X - hx) / hrx) ** 2 + ((Y - hy) / hry) ** 2 + ((Z - hz) / hrz) ** 2 > 1.0
        return out

    def point_inside(self, p) -> bool:
        a = [np.asarray(v, dtype=np.float64) for v in p]
        return bool(self.inside(*a))

    def centre(self, side: int, z: float) -> np.ndarray:
        s = self.sides[side]
        return np.array([s["cx"], s["cy"] - 0.1 * s["ry"], z])


def _tube(vol, mask, space: _Space, p0, p1, r, value, where=None, label=None):
    """Paint a capsule of radius ``r`` from ``p0`` to ``p1`` (LPS mm) into ``vol`` (and True into ``mask``)."""
    p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
    lo, hi = np.minimum(p0, p1) - r, np.maximum(p0, p1) + r
    sz, sy, sx = space.box(lo, hi)
    if sz.start >= sz.stop or sy.start >= sy.stop or sx.start >= sx.stop:
        return
    Z, Y, X = space.zs[sz][:, None, None], space.y[sy][None, :, None], space.x[sx][None, None, :]
    d = p1 - p0
    dd = float(d @ d) or 1e-9
    t = np.clip(((X - p0[0]) * d[0] + (Y - p0[1]) * d[1] + (Z - p0[2]) * d[2]) / dd, 0, 1)
    dist2 = (X - p0[0] - t * d[0]) ** 2 + (Y - p0[1] - t * d[1]) ** 2 + (Z - p0[2] - t * d[2]) ** 2
    sel = dist2 <= r * r
    if where is not None:
        sel &= where[sz, sy, sx]
    vol[sz, sy, sx][sel] = value
    if mask is not None:
        mask[sz, sy, sx] |= sel


def _rotate(v, axis, angle):
    axis = axis / np.linalg.norm(axis)
    return (v * math.cos(angle) + np.cross(axis, v) * math.sin(angle)
            + axis * (axis @ v) * (1 - math.cos(angle)))


def _grow(rng, lungs: _Lungs, side, start, direction, length, radius, generations, trifurcate, out):
    """Randomised 3-D branching: children deviate 15-60 degrees around a random axis, pulled towards the lung
    interior; a branch that leaves the lung is shortened, then dropped."""
    stack = [(np.asarray(start, float), np.asarray(direction, float), length, radius, 0)]
    while stack and len(out) < 900:
        p, d, ln, r, g = stack.pop()
        end = None
        for scale in (1.0, 0.6, 0.35):
            e = p + d * ln * scale
            if lungs.point_inside(e) or g == 0:
                end = e
                break
        if end is None:
            continue
        out.append((p, end, r))
        if g >= generations or r < 0.45:
            continue
        count = 3 if rng.random() < trifurcate else 2
        for c in range(count):
            axis = np.cross(d, rng.normal(size=3))
            if np.linalg.norm(axis) < 1e-6:
                continue
            angle = math.radians(_u(rng, 15, 35) if c == 0 else _u(rng, 35, 60))
            nd = _rotate(d, axis, angle)
            pull = lungs.centre(side, float(end[2]) + rng.normal(0, 30)) - end
            nd = nd + 0.35 * pull / (np.linalg.norm(pull) + 1e-6)
            nd /= np.linalg.norm(nd)
            shrink = _u(rng, 0.78, 0.88) if c == 0 else _u(rng, 0.6, 0.8)
            stack.append((end, nd, ln * _u(rng, 0.62, 0.9), r * shrink, g + 1))


def _nodule_shape(space: _Space, c, radius, margin, rng):
    """Boolean mask of a nodule on the supersampled grid (within its box) and the box."""
    reach = radius * (2.2 if margin == "spiculated" else 1.4) + 2 * space.dxy
    sz, sy, sx = space.box(c - reach, c + reach)
    Z, Y, X = space.zs[sz][:, None, None] - c[2], space.y[sy][None, :, None] - c[1], space.x[sx][None, None, :] - c[0]
    dist = np.sqrt(X * X + Y * Y + Z * Z) + 1e-6
    bound = np.full(dist.shape, radius, np.float32)
    if margin == "lobulated":
        for _ in range(int(rng.integers(2, 5))):
            e = rng.normal(size=3)
            e /= np.linalg.norm(e)
            cosang = (X * e[0] + Y * e[1] + Z * e[2]) / dist
            bound = bound + radius * _u(rng, 0.15, 0.35) * np.clip(cosang, 0, 1) ** 6
        bound *= 0.9
    inside = dist <= bound
    if margin == "spiculated":
        for _ in range(int(rng.integers(5, 12))):
            e = rng.normal(size=3)
            e /= np.linalg.norm(e)
            along = X * e[0] + Y * e[1] + Z * e[2]
            perp = np.sqrt(np.maximum(dist * dist - along * along, 0))
            top = radius * _u(rng, 1.5, 2.2)
            width = max(0.8, radius * _u(rng, 0.12, 0.22)) * np.clip(1 - along / top, 0, 1)
            inside |= (along > 0) & (along < top) & (perp <= width)
    return inside, (sz, sy, sx), dist


def _scanner(rng, size: int, habitus: str) -> dict:
    kernel = str(rng.choice(["soft", "standard", "sharp", "very sharp"], p=[0.25, 0.3, 0.3, 0.15]))
    return {
        "slice_thickness_mm": float(rng.choice([0.6, 1.0, 1.25, 2.0, 3.0, 5.0, 7.0])),
        "field_of_view_mm": _u(rng, 300, 480) if habitus != "child" else _u(rng, 220, 340),
        "kernel": kernel,
        "noise_hu": float(np.exp(rng.uniform(np.log(5), np.log(60)))),
        "cupping_hu": _u(rng, 0, 45),
        "metal": bool(rng.random() < 0.3),
        "contrast": bool(rng.random() < 0.5),
        "hu_offset": float(np.round(rng.uniform(-25, 25), 1)),
        "storage": str(rng.choice(list(STORAGE))),
        "kvp": int(rng.choice([80, 100, 120, 140])),
        "instances_ascending": bool(rng.random() < 0.5),
    }


def generate_heldout(seed: int, *, size: int = 256, max_slices: int = 160, nodules: tuple[int, int] = (0, 5),
                     **overrides) -> HeldoutStudy:
    """One held-out study.  ``size``: rows == columns; ``max_slices`` caps the slice count (thin slices then
    cover part of the chest); ``nodules``: inclusive range of the nodule count; ``overrides``: scanner settings
    to force (keys of :attr:`HeldoutStudy.acquisition`, e.g. ``noise_hu=0``, ``metal=False``)."""
    if size < 32 or max_slices < 4:
        raise ValueError(f"need size >= 32 and max_slices >= 4, got {size}, {max_slices}")
    ss = np.random.SeedSequence([int(seed), 0x48454C44])
    r_body, r_tree, r_nod, r_scan, r_noise = (np.random.default_rng(s) for s in ss.spawn(5))

    habitus = str(r_body.choice(["adult", "adult", "child", "obese"]))
    scan = _scanner(r_scan, size, habitus)
    unknown = set(overrides) - set(scan)
    if unknown:
        raise ValueError(f"unknown scanner settings {sorted(unknown)}")
    scan.update(overrides)
    if scan["storage"] not in STORAGE:
        raise ValueError(f"storage must be one of {list(STORAGE)}")

    # body (patient space); the image centre is the scanner's isocentre
    scale = {"adult": _u(r_body, 0.9, 1.1), "child": _u(r_body, 0.5, 0.7), "obese": _u(r_body, 1.05, 1.2)}[habitus]
    fat = {"adult": _u(r_body, 8, 25), "child": _u(r_body, 4, 10), "obese": _u(r_body, 35, 70)}[habitus]
    a = 150 * scale + fat
    b = a * _u(r_body, 0.6, 0.78)
    bx, by = _u(r_body, -40, 40), _u(r_body, -30, 30)
    p_body = _u(r_body, 2.0, 2.8)
    muscle = _u(r_body, 6, 16) * max(scale, 0.6)
    rib_t = _u(r_body, 5, 9) * max(scale, 0.6)
    ac, bc = a - fat - muscle - rib_t, b - fat - muscle - rib_t
    arms = str(r_body.choice(["up", "down"]))
    length = {"adult": _u(r_body, 200, 270), "child": _u(r_body, 120, 170), "obese": _u(r_body, 190, 250)}[habitus]
    zb = _u(r_body, -300, -60)  # lung base in scanner z

    # acquisition grid
    dz = float(scan["slice_thickness_mm"])
    extent = length + _u(r_scan, 40, 80)
    nz = int(min(max_slices, max(4, round(extent / dz))))
    z_lo = zb - _u(r_scan, 15, 35)
    if nz * dz < extent:  # partial coverage: a window somewhere over the lungs
        z_lo = zb - 20 + _u(r_scan, 0, max(0.0, length + 40 - nz * dz))
    sub = 1 if dz <= 1.25 else (3 if dz <= 3 else 5)
    dxy = float(scan["field_of_view_mm"]) / size
    sp = _Space(size, nz, dxy, dz, sub, z_lo)

    heart = (bx + ac * _u(r_body, 0.05, 0.2), by - bc * _u(r_body, 0.1, 0.3), zb + length * _u(r_body, 0.2, 0.32),
             ac * _u(r_body, 0.3, 0.38), bc * _u(r_body, 0.32, 0.42), length * _u(r_body, 0.16, 0.22))
    lungs = _Lungs(r_body, (bx, by, ac, bc), zb, length, heart)
    contrast = bool(scan["contrast"])
    blood = _u(r_scan, 180, 360) if contrast else _u(r_scan, 35, 50)

    X, Y, Z = sp.X, sp.Y, sp.Z
    shape = (sp.zs.size, size, size)
    vol = np.full(shape, -1000.0, np.float32)
    body2d = _superellipse(X[0], Y[0], bx, by, a, b, p_body)
    inner2d = _superellipse(X[0], Y[0], bx, by, a - fat, b - fat, p_body)
    cav2d = _superellipse(X[0], Y[0], bx, by, ac, bc, 2.2)
    vol[:, body2d] = _u(r_body, -115, -85)  # subcutaneous fat
    vol[:, inner2d] = _u(r_body, 40, 60)  # muscle
    # ribs: tilted bands on the ring just outside the cavity
    ring = (_superellipse(X[0], Y[0], bx, by, ac + rib_t, bc + rib_t, 2.2) & ~cav2d)
    ang = np.arctan2(Y[0] - by, X[0] - bx)
    pitch, width = _u(r_body, 22, 34) * max(scale, 0.6), _u(r_body, 7, 11) * max(scale, 0.6)
    phase = (Z - zb + 18 * np.sin(ang)[None] + _u(r_body, 0, 30)) % pitch
    ribs = ring[None] & (phase < width) & (np.abs(np.cos(ang))[None] > 0.25)
    vol[ribs] = _u(r_body, 450, 750)
    vol[:, cav2d] = _u(r_body, -100, -70)  # mediastinal fat, filled in below
    # below the diaphragm: liver on the right, soft tissue and a gastric bubble on the left
    below = cav2d[None] & (Z < zb + 30)
    vol[below] = 45.0
    liver = below & (X < bx + ac * 0.2) & (Z < zb + 40)
    vol[liver] = _u(r_body, 55, 65) + (_u(r_scan, 40, 70) if contrast else 0.0)
    lung = lungs.inside(X, Y, Z)
    parenchyma = _u(r_body, -880, -820) + _u(r_body, 15, 45) * ((Y - by) / bc)  # dependent lung denser
    vol[lung] = np.broadcast_to(parenchyma, shape)[lung]
    # heart, aorta, spine, sternum, trachea
    hx, hy, hz, hrx, hry, hrz = heart
    hq = ((X - hx) / hrx) ** 2 + ((Y - hy) / hry) ** 2 + ((Z - hz) / hrz) ** 2
    vol[hq <= 1] = 45.0
    vol[hq <= 0.55] = blood
    sx, sy_, sr = lungs.spine
    spine2d = (X[0] - sx) ** 2 + (Y[0] - sy_) ** 2 <= sr ** 2
    vol[:, spine2d] = _u(r_body, 180, 300)
    vol[:, spine2d & ((X[0] - sx) ** 2 + (Y[0] - sy_) ** 2 >= (sr - 2.5) ** 2)] = _u(r_body, 550, 850)
    canal = (X[0] - sx) ** 2 + (Y[0] - sy_ - sr - 7) ** 2 <= (sr * 0.45) ** 2
    vol[:, canal] = 25.0
    sternum = ((X[0] - bx) / 12) ** 2 + ((Y[0] - (by - bc - rib_t / 2)) / 6) ** 2 <= 1
    vol[(Z > zb + length * 0.35) & sternum[None]] = _u(r_body, 300, 500)
    aorta_r = _u(r_body, 9, 14) * max(scale, 0.6)
    top = zb + length * 0.78
    desc = (sx + sr * 1.3, sy_ - sr * 1.2)
    asc = (hx - hrx * 0.2, hy - hry * 0.1)
    for p0, p1 in (((*desc, sp.zs[0] - 5), (*desc, top)), ((*desc, top), (bx, by - bc * 0.3, top + 15)),
                   ((bx, by - bc * 0.3, top + 15), (*asc, top)), ((*asc, top), (*asc, hz))):
        _tube(vol, None, sp, p0, p1, aorta_r, blood)
    carina = np.array([bx, by - bc * 0.05, zb + length * _u(r_body, 0.58, 0.68)])
    tr = _u(r_body, 7, 11) * max(scale, 0.6)
    _tube(vol, None, sp, (carina[0], carina[1], sp.zs[-1] + 5), carina, tr, 30.0)
    _tube(vol, None, sp, (carina[0], carina[1], sp.zs[-1] + 5), carina, tr - 2, -1000.0)
    # arms beside the chest
    if arms == "down":
        ar = _u(r_body, 35, 50) * max(scale, 0.6)
        for side in (-1, 1):
            axc, ayc = bx + side * (a + ar + _u(r_body, 5, 30)), by + _u(r_body, -10, 20)
            arm = ((X[0] - axc) ** 2 + (Y[0] - ayc) ** 2) <= ar ** 2
            vol[:, arm] = -90.0
            vol[:, ((X[0] - axc) ** 2 + (Y[0] - ayc) ** 2) <= (ar - 6) ** 2] = 50.0
            vol[:, ((X[0] - axc) ** 2 + (Y[0] - ayc) ** 2) <= (ar * 0.25) ** 2] = 700.0
    # table: a curved carbon shell under the back
    ty = by + b + _u(r_body, 4, 25)
    curve = ty + (X[0] - bx) ** 2 / 2500.0
    shell = (Y[0] > curve) & (Y[0] < curve + 7) & (np.abs(X[0] - bx) < 230)
    vol[:, shell] = _u(r_body, -250, 50)

    # parenchyma texture, emphysema, consolidation (inside the lung only)
    coarse = r_tree.normal(size=(max(4, shape[0] // 2), size // 2, size // 2)).astype(np.float32)
    tex = ndimage.gaussian_filter(coarse, 2)
    tex = ndimage.zoom(tex, [shape[i] / tex.shape[i] for i in range(3)], order=1)[: shape[0], :size, :size]
    tex *= _u(r_body, 8, 25) / (tex.std() + 1e-6)
    vol[lung] += tex[lung]
    emphysema = r_body.random() < 0.3
    cons = r_body.random() < 0.25
    lung_idx = np.argwhere(lung[::4, ::4, ::4]) * [4, 4, 4]
    if emphysema and len(lung_idx):
        for _ in range(int(r_tree.integers(10, 60))):
            k, j, i = lung_idx[r_tree.integers(len(lung_idx))]
            c = np.array([sp.x[i], sp.y[j], sp.zs[k]])
            _tube(vol, None, sp, c, c + r_tree.normal(0, 2, 3), _u(r_tree, 2, 9), _u(r_tree, -990, -955), where=lung)
    # the trees
    segments_air, segments_vessel = [], []
    for side in (0, 1):
        s = lungs.sides[side]
        hilum = np.array([s["cx"] * 0.55 + bx * 0.45, s["cy"] - 0.1 * s["ry"], carina[2] - _u(r_tree, 8, 20)])
        _tube(vol, None, sp, carina, hilum, tr * 0.7, 30.0)
        _tube(vol, None, sp, carina, hilum, tr * 0.7 - 1.5, -1000.0)
        out = []
        _grow(r_tree, lungs, side, hilum, np.array([(-1.0, 1.0)[side] * 0.8, 0.2, -0.5]), 30 * max(scale, 0.6),
              tr * 0.55, int(r_tree.integers(3, 6)), 0.1, out)
        segments_air += out
        for start_dz, down in ((5.0, 0.6), (-15.0, -0.8)):
            out = []
            _grow(r_tree, lungs, side, hilum + [0, 4, start_dz], np.array([(-1.0, 1.0)[side], 0.1, down]),
                  28 * max(scale, 0.6), _u(r_tree, 6, 9) * max(scale, 0.6), int(r_tree.integers(5, 8)), 0.25, out)
            segments_vessel += out
    vessel_mask = np.zeros(shape, bool)
    for p0, p1, r in segments_vessel:
        _tube(vol, vessel_mask, sp, p0, p1, r, blood, where=lung)
    for p0, p1, r in segments_air:
        _tube(vol, None, sp, p0, p1, r + max(0.5, 0.2 * r), 20.0, where=lung)
        _tube(vol, None, sp, p0, p1, r, -1000.0, where=lung)
    if cons and len(lung_idx):
        for _ in range(int(r_tree.integers(1, 3))):
            k, j, i = lung_idx[r_tree.integers(len(lung_idx))]
            c = np.array([sp.x[i], sp.y[j], sp.zs[k]])
            _tube(vol, None, sp, c, c + r_tree.normal(0, 12, 3), _u(r_tree, 10, 25), _u(r_tree, -150, 30), where=lung)

    # nodules
    mid = np.arange(sp.nz) * sub + sub // 2  # the sub slice at each output slice centre
    circle = np.hypot(sp.X[0], sp.Y[0]) <= sp.x[-1]  # the reconstruction circle: nothing is seen outside it
    lung &= circle[None]
    lung_out = lung[mid]
    edt = ndimage.distance_transform_edt(lung_out, sampling=(dz, dxy, dxy))
    labels_sub = np.zeros(shape, np.uint8)
    placed: list[HeldoutNodule] = []
    vessel_pts = [(p1, r) for _, p1, r in segments_vessel if r > 1.0 and lungs.point_inside(p1)]
    count = int(r_nod.integers(nodules[0], nodules[1] + 1))
    for _ in range(count * 40):
        if len(placed) >= count:
            break
        kind = str(r_nod.choice(KINDS, p=[0.45, 0.2, 0.2, 0.15]))
        attachment = str(r_nod.choice(ATTACHMENTS, p=[0.55, 0.25, 0.2]))
        margin = str(r_nod.choice(MARGINS, p=[0.5, 0.25, 0.25])) if kind != "calcified" else "smooth"
        hi_d = 12.0 if kind == "calcified" else DIAMETER_MM[1]
        diameter = float(np.exp(r_nod.uniform(np.log(DIAMETER_MM[0]), np.log(hi_d))))
        radius = diameter / 2
        if attachment == "vascular" and vessel_pts:
            p, vr = vessel_pts[int(r_nod.integers(len(vessel_pts)))]
            off = r_nod.normal(size=3)
            c = p + off / np.linalg.norm(off) * (radius + vr * 0.5)
        else:
            cand = np.argwhere(edt >= (radius * 0.6 if attachment == "pleural" else radius + 2))
            if attachment == "pleural":
                cand = cand[edt[tuple(cand.T)] <= radius * 0.9] if len(cand) else cand
            if not len(cand):
                continue
            k, j, i = cand[int(r_nod.integers(len(cand)))]
            c = np.array([sp.x[i], sp.y[j], sp.z[k]], float) + r_nod.uniform(-0.5, 0.5, 3) * [dxy, dxy, dz]
        ci = ((c[2] - sp.z[0]) / dz, (c[1] - sp.y[0]) / dxy, (c[0] - sp.x[0]) / dxy)
        kk, jj, ii = (int(round(v)) for v in ci)
        if not (0 <= kk < sp.nz and 0 <= jj < size and 0 <= ii < size) or not lung_out[kk, jj, ii]:
            continue
        depth = edt[kk, jj, ii]
        if attachment != "pleural" and depth < radius + 1.0:
            continue
        if attachment == "pleural" and not (0.3 * radius <= depth <= radius):
            continue
        if any(np.linalg.norm(c - np.array(n.center_lps_mm)) < radius + n.diameter_mm / 2 + 4 for n in placed):
            continue
        shape_mask, box, dist = _nodule_shape(sp, c, radius, margin, r_nod)
        shape_mask &= lung[box]
        if not shape_mask.any():
            continue
        lo, hi = NODULE_HU[kind]
        hu = _u(r_nod, lo, hi)
        core_hu = None
        values = np.full(shape_mask.shape, hu, np.float32)
        if kind == "part-solid":
            core_hu = _u(r_nod, *NODULE_HU["solid"])
            values[dist <= radius * _u(r_nod, 0.3, 0.6)] = core_hu
        if kind == "ground-glass" or kind == "part-solid":  # ground glass keeps a faint texture of the lung
            values += r_nod.normal(0, 15, values.shape).astype(np.float32)
        region = vol[box]
        region[shape_mask] = values[shape_mask]
        label = len(placed) + 1
        labels_sub[box][shape_mask] = label
        placed.append(HeldoutNodule(label, (float(c[0]), float(c[1]), float(c[2])),
                                    tuple(round(float(v), 3) for v in ci), round(diameter, 3), kind, attachment,
                                    margin, round(hu, 1), None if core_hu is None else round(core_hu, 1)))

    # metal (a chest port or spinal rods) before the slice average, streaks after
    metal_pts = []
    if scan["metal"]:
        if r_scan.random() < 0.5:
            m = np.array([bx + a * 0.45 * (-1 if r_scan.random() < 0.5 else 1), by - b * 0.75, zb + length * 0.8])
            metal_pts.append((m, 6.0))
        else:
            for side in (-1, 1):
                metal_pts.append((np.array([sx + side * (sr + 8), sy_ + sr + 10, zb + length * 0.3]), 3.0))
        for m, r in metal_pts:
            _tube(vol, None, sp, m - [0, 0, 10 if r < 5 else 4], m + [0, 0, 10 if r < 5 else 4], r, 3500.0)

    # slice profile: average the sub slices of each output slice; truth at the slice centre
    hu = vol.reshape(sp.nz, sub, size, size).mean(axis=1)
    lung_mask = lung_out.copy()
    nodule_labels = labels_sub[mid]
    del vol

    X2, Y2 = sp.X[0], sp.Y[0]
    rho2 = np.clip(((X2 - bx) / a) ** 2 + ((Y2 - by) / b) ** 2, 0, 1)
    hu -= float(scan["cupping_hu"]) * (1 - rho2) * body2d  # beam hardening: the centre reads low
    for m, _r in metal_pts:
        near = np.exp(-np.abs(sp.z - m[2]) / 12.0)[:, None, None]
        ang = np.arctan2(Y2 - m[1], X2 - m[0])
        distm = np.hypot(X2 - m[0], Y2 - m[1])
        streak = np.zeros_like(X2 * Y2)
        for _ in range(int(r_scan.integers(4, 10))):
            th = _u(r_scan, 0, math.pi)
            perp = distm * np.abs(np.sin(ang - th))
            streak = streak + _u(r_scan, -500, 300) * np.exp(-(perp / _u(r_scan, 1.5, 4)) ** 2)
        hu += near * (streak / (1 + distm / 60.0))[None]
    # kernel
    sig = {"soft": 1.1, "standard": 0.7, "sharp": 0.6, "very sharp": 0.6}[scan["kernel"]]
    blurred = ndimage.gaussian_filter(hu, (0, sig, sig))
    amount = {"soft": 0.0, "standard": 0.0, "sharp": 0.8, "very sharp": 1.6}[scan["kernel"]]
    hu = blurred + amount * (hu - ndimage.gaussian_filter(hu, (0, 1.5, 1.5)))
    # correlated noise, stronger through the thick centre of the body
    if scan["noise_hu"] > 0:
        noise = r_noise.normal(size=hu.shape).astype(np.float32)
        ncorr = {"soft": 1.2, "standard": 0.8, "sharp": 0.5, "very sharp": 0.35}[scan["kernel"]]
        noise = ndimage.gaussian_filter(noise, (0.3, ncorr, ncorr))
        noise /= noise.std() + 1e-6
        hu += noise * float(scan["noise_hu"]) * (0.6 + 0.6 * (1 - rho2) * body2d)
    # reconstruction circle and truncation brightening at its edge
    prep, bits, slope, intercept, lo_hu, hi_hu, pad = STORAGE[scan["storage"]]
    rr = np.hypot(X2, Y2)
    fov_r = sp.x[-1]
    hu += np.where(body2d, 120.0 * np.exp(-(fov_r - rr) / 8.0), 0.0)[None]
    hu += float(scan["hu_offset"])
    hu[:, rr > fov_r] = pad
    hu = np.clip(np.rint(hu), lo_hu, hi_hu).astype(np.int16)

    origin = (float(sp.x[0]), float(sp.y[0]), float(sp.z[0]))
    scan = dict(scan, slice_spacing_mm=dz, pixel_spacing_mm=dxy, size=size, slices=sp.nz, blood_hu=round(blood, 1),
                truncated=bool(body2d[rr > fov_r].any()))
    anatomy = {"habitus": habitus, "arms": arms, "offset_mm": [round(bx, 1), round(by, 1)],
               "body_width_mm": round(2 * a, 1), "lung_length_mm": round(length, 1), "emphysema": bool(emphysema),
               "consolidation": bool(cons), "airway_segments": len(segments_air),
               "vessel_segments": len(segments_vessel)}
    return HeldoutStudy(hu, lung_mask, nodule_labels, (dz, dxy, dxy), origin, placed, int(seed), scan, anatomy)


# ----------------------------------------------------------------------------------------------------------
# writing


def _ds(value: float):
    from pydicom.valuerep import DSfloat

    return DSfloat(float(value), auto_format=True)


def write_heldout_dicom(study: HeldoutStudy, folder: str | Path, *, patient_id: str = "HELDOUT",
                        study_name: str = "heldout") -> list[Path]:
    """Write the study as a CT series of one file per slice into ``folder`` (nothing else goes there);
    return the files in ``k`` order.  UIDs and dates derive from the seed, so files are reproducible."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scan = study.acquisition
    prep, bits, slope, intercept, *_ = STORAGE[scan["storage"]]
    key = ["medviewer-heldout", str(study.seed), str(study.shape), patient_id, study_name]
    uid = {name: generate_uid(entropy_srcs=[*key, name]) for name in ("study", "series", "frame")}
    nz, rows, cols = study.shape
    dz, dy, dx = study.spacing_mm
    x0, y0, z0 = study.origin_lps_mm
    stored = np.rint((study.hu.astype(np.float64) - intercept) / slope)
    dtype = np.int16 if prep else np.uint16
    info = np.iinfo(dtype)
    top = (1 << bits) - 1 if not prep else info.max
    stored = np.clip(stored, info.min if prep else 0, top).astype(dtype)
    kernels = {"soft": "B20f", "standard": "STANDARD", "sharp": "LUNG", "very sharp": "B70f"}
    files = []
    for k in range(nz):
        number = k + 1 if scan["instances_ascending"] else nz - k
        sop = generate_uid(entropy_srcs=[*key, "sop", str(k)])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20250301"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
        ds.AccessionNumber = f"HO{study.seed:08d}"
        ds.Modality = "CT"
        ds.Manufacturer = "MedViewer held-out phantom"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Chest CT (held-out synthetic phantom)"
        ds.SeriesDescription = f"Chest {dz:g} mm {scan['kernel']}" + (" contrast" if scan["contrast"] else "")
        ds.PatientName = f"HELDOUT^{study_name}"
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = _ds(dz)
        ds.SpacingBetweenSlices = _ds(dz)
        ds.KVP = str(scan["kvp"])
        ds.ConvolutionKernel = kernels[scan["kernel"]]
        if scan["contrast"]:
            ds.ContrastBolusAgent = "IODINE"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = uid["study"]
        ds.SeriesInstanceUID = uid["series"]
        ds.FrameOfReferenceUID = uid["frame"]
        ds.PositionReferenceIndicator = ""
        ds.StudyID = "1"
        ds.SeriesNumber = 3
        ds.InstanceNumber = number
        ds.ImagePositionPatient = [_ds(x0), _ds(y0), _ds(z0 + k * dz)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = _ds(z0 + k * dz)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.PixelSpacing = [_ds(dy), _ds(dx)]
        ds.BitsAllocated = 16
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = prep
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "HU"
        ds.WindowCenter = ["-600", "40"]
        ds.WindowWidth = ["1500", "400"]
        ds.PixelData = stored[k].astype("<i2" if prep else "<u2").tobytes()
        ds["PixelData"].VR = "OW"
        path = folder / f"IM{number:04d}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        files.append(path)
    return files


def write_heldout_truth(study: HeldoutStudy, folder: str | Path, *, files: list[Path] | None = None) -> Path:
    """Write ``labels.npy`` (uint8 0/1/2 as :attr:`HeldoutStudy.labels`), ``nodules.npy`` (uint8 nodule labels)
    and ``truth.json`` into ``folder``; return ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "labels.npy", study.labels)
    np.save(folder / "nodules.npy", study.nodule_labels)
    truth = {
        "format": "medviewer-heldout-truth", "version": 1, "seed": study.seed, "shape": list(study.shape),
        "array_order": "(k, j, i): k slices inferior to superior (+z), j rows to posterior (+y), "
                       "i columns to patient left (+x)",
        "spacing_mm": list(study.spacing_mm), "origin_lps_mm": list(study.origin_lps_mm),
        "labels": {"0": "background", "1": "lung", "2": "nodule"},
        "nodules": [dict(asdict(n), type=n.type) for n in study.nodules],
        "acquisition": study.acquisition, "anatomy": study.anatomy,
        "files": [str(p) for p in files] if files else [],
    }
    (folder / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return folder


def write_heldout_study(study: HeldoutStudy, root: str | Path, name: str) -> tuple[Path, Path]:
    """``root/dicom/name`` (the series only) and ``root/truth/name`` (the truth): two trees, so a scan of the
    DICOM folder never meets a sidecar.  Returns ``(dicom_folder, truth_folder)``."""
    root = Path(root)
    files = write_heldout_dicom(study, root / "dicom" / name, patient_id=name.upper()[:16], study_name=name)
    truth = write_heldout_truth(study, root / "truth" / name, files=files)
    return root / "dicom" / name, truth


def read_heldout_truth(folder: str | Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """``(truth.json contents, labels, nodule labels)`` of a folder :func:`write_heldout_truth` wrote."""
    folder = Path(folder)
    truth = json.loads((folder / "truth.json").read_text(encoding="utf-8"))
    return truth, np.load(folder / "labels.npy"), np.load(folder / "nodules.npy")
