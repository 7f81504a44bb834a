"""Synthetic chest-CT phantoms with ground truth, for demos, tests and training.

A phantom is a deterministic function of ``(PhantomConfig, seed)``: body with subcutaneous fat, chest wall,
ribs, spine, sternum, heart, aorta, trachea and bronchi, two lungs with a diaphragm dome, a branching
pulmonary vessel tree, and spherical nodules placed fully inside the lungs.  Values are Hounsfield units.

Geometry (what the DICOM writer and the loader rely on): arrays are ``(slices, rows, cols)`` = ``(k, j, i)``;
slices are axial with ImageOrientationPatient ``[1, 0, 0, 0, 1, 0]``; ``k`` increases towards superior
(+z, slice 0 is the most inferior), ``j`` towards posterior (+y), ``i`` towards the patient's left (+x).
The LPS position of voxel ``(k, j, i)`` is ``origin + (i*dx, j*dy, k*dz)``; the origin centres the volume
on ``x = y = z = 0``.

Everything is drawn one slice at a time with float32 temporaries, so memory is the two output arrays
(2 + 1 bytes per voxel) plus a few slices.  Only ``numpy.random.default_rng(seed)`` supplies randomness;
the anatomy, the nodules and the noise draw from separate child generators, so changing the nodule settings
leaves the anatomy and the noise of a seed unchanged.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

__all__ = [
    "HU_MAX",
    "HU_MIN",
    "LABELS",
    "Nodule",
    "Phantom",
    "PhantomConfig",
    "generate_phantom",
]

LABELS = {0: "background", 1: "lung", 2: "nodule"}
HU_MIN, HU_MAX = -1024, 3071  # what 12 stored bits with intercept -1024 can hold

# Tissue densities in HU (non-contrast CT).
_AIR, _FAT, _MEDIASTINAL_FAT, _SOFT, _LIVER, _BLOOD = -1000.0, -100.0, -85.0, 40.0, 58.0, 40.0
_CORTEX, _CANCELLOUS, _RIB, _DISC, _CORD = 750.0, 260.0, 650.0, 85.0, 25.0


@dataclass(frozen=True)
class PhantomConfig:
    """How to draw a phantom.  Sizes in mm, densities in HU; ``(lo, hi)`` pairs are inclusive ranges drawn per phantom."""

    slices: int = 120  # number of axial slices
    size: int = 256  # rows == columns
    field_of_view_mm: float = 350.0  # in-plane field of view; pixel spacing = fov / size
    slice_thickness_mm: float = 2.5  # also the slice spacing
    nodule_count: tuple[int, int] = (0, 3)
    nodule_diameter_mm: tuple[float, float] = (3.0, 30.0)  # drawn uniformly
    nodule_hu: tuple[float, float] = (-100.0, 100.0)  # lung parenchyma is about -850
    noise_hu: float = 15.0  # standard deviation of the gaussian noise
    body_scale: tuple[float, float] = (0.9, 1.1)  # patient size relative to nominal (300 mm wide chest)
    lung_hu: float = -850.0  # mean parenchyma density
    lung_texture_hu: float = 20.0  # amplitude of the smooth parenchyma texture
    vessel_generations: int = 8  # branchings of the pulmonary vessel trees (0: trunks only)
    airway_generations: int = 3  # branchings of the bronchial trees below the lobar bronchi
    blur: bool = True  # in-plane 3-tap binomial blur (scanner point-spread) before the noise

    def __post_init__(self) -> None:
        for f in fields(self):  # lists (from JSON or argparse) become tuples, so configs stay hashable
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        for name in ("slices", "size", "vessel_generations", "airway_generations"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), (int, np.integer)):
                raise TypeError(f"PhantomConfig.{name}: need an integer, got {getattr(self, name)!r}")

        def pair(name: str, lo_min: float = -math.inf) -> None:
            lo, hi = getattr(self, name)
            if not lo <= hi or lo < lo_min:
                raise ValueError(f"PhantomConfig.{name}: need {lo_min} <= lo <= hi, got {(lo, hi)}")

        if self.slices < 1:
            raise ValueError(f"PhantomConfig.slices: need >= 1, got {self.slices}")
        if self.size < 16:
            raise ValueError(f"PhantomConfig.size: need >= 16, got {self.size}")
        for name in ("field_of_view_mm", "slice_thickness_mm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PhantomConfig.{name}: need > 0, got {getattr(self, name)}")
        if self.noise_hu < 0 or self.lung_texture_hu < 0:
            raise ValueError("PhantomConfig.noise_hu and lung_texture_hu must be >= 0")
        if self.vessel_generations < 0 or self.airway_generations < 0:
            raise ValueError("PhantomConfig.vessel_generations and airway_generations must be >= 0")
        pair("nodule_count", 0)
        pair("nodule_diameter_mm", 0.5)
        pair("nodule_hu")
        pair("body_scale", 0.1)
        if not HU_MIN <= self.nodule_hu[0] and self.nodule_hu[1] <= HU_MAX:
            raise ValueError(f"PhantomConfig.nodule_hu must lie in [{HU_MIN}, {HU_MAX}]")

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel spacing ``(dz, dy, dx)`` in mm."""
        d = self.field_of_view_mm / self.size
        return (float(self.slice_thickness_mm), d, d)

    def to_dict(self) -> dict:
        """Plain JSON-able values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> PhantomConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"PhantomConfig: unknown keys {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class Nodule:
    """One spherical nodule: centre in patient coordinates (LPS, mm) and as the nearest voxel ``(k, j, i)``."""

    center_lps_mm: tuple[float, float, float]
    center_index: tuple[int, int, int]
    diameter_mm: float
    hu: float


@dataclass
class Phantom:
    """A generated volume and its ground truth.

    ``hu``: int16 ``(slices, rows, cols)`` Hounsfield units; ``labels``: uint8, same shape, keys of
    :data:`LABELS` (nodule wins over lung; the lung label covers the parenchyma with its vessels and the
    airways inside the lung fields, not the trachea or main bronchi).  Both C-contiguous.
    """

    hu: np.ndarray
    labels: np.ndarray
    spacing_mm: tuple[float, float, float]  # (dz, dy, dx)
    origin_lps_mm: tuple[float, float, float]  # LPS (x, y, z) of the centre of voxel [0, 0, 0]
    nodules: list[Nodule]
    config: PhantomConfig
    seed: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)

    def index_to_lps(self, k: float, j: float, i: float) -> tuple[float, float, float]:
        """LPS position (mm) of voxel ``(k, j, i)``."""
        dz, dy, dx = self.spacing_mm
        x0, y0, z0 = self.origin_lps_mm
        return (x0 + i * dx, y0 + j * dy, z0 + k * dz)

    def lps_to_index(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        """Fractional voxel index ``(k, j, i)`` of an LPS position (mm)."""
        dz, dy, dx = self.spacing_mm
        x0, y0, z0 = self.origin_lps_mm
        return ((z - z0) / dz, (y - y0) / dy, (x - x0) / dx)


# ----------------------------------------------------------------------------------------------------------
# geometry helpers


class _Grid:
    """Voxel-centre coordinates (mm) of a phantom; 1-D float32 axes so masks broadcast as (rows, cols)."""

    def __init__(self, cfg: PhantomConfig) -> None:
        self.nz, self.n = cfg.slices, cfg.size
        self.dz, self.dy, self.dx = cfg.spacing_mm
        self.x0 = -(self.n - 1) / 2 * self.dx
        self.y0 = -(self.n - 1) / 2 * self.dy
        self.z0 = -(self.nz - 1) / 2 * self.dz
        self.xs = (self.x0 + np.arange(self.n) * self.dx).astype(np.float32)
        self.ys = (self.y0 + np.arange(self.n) * self.dy).astype(np.float32)
        self.pixel = max(self.dx, self.dy)

    def z(self, k: int) -> float:
        return self.z0 + k * self.dz

    def slices(self, lo: float, hi: float) -> range:
        """Slice indices whose centre z lies in [lo, hi]."""
        k0 = max(0, math.ceil((lo - self.z0) / self.dz - 1e-9))
        k1 = min(self.nz - 1, math.floor((hi - self.z0) / self.dz + 1e-9))
        return range(k0, k1 + 1)


def _span(coords: np.ndarray, lo: float, hi: float) -> slice:
    """Indices of the ascending 1-D ``coords`` that lie in [lo, hi] (a decision on each value alone)."""
    return slice(int(np.searchsorted(coords, lo, "left")), int(np.searchsorted(coords, hi, "right")))


def _paint(img: np.ndarray, mask: np.ndarray, value: float | bool) -> None:
    np.copyto(img, value, where=mask, casting="unsafe")


def _smoothstep(t: float) -> float:
    t = min(max(t, 0.0), 1.0)
    return t * t * (3.0 - 2.0 * t)


# ----------------------------------------------------------------------------------------------------------
# painters: ``img`` is a (rows, cols) window whose voxel centres are ``y`` (rows) and ``x`` (cols), both
# ascending float32; each works only on the bounding box of its shape and decides per voxel.


def _disc(img, x, y, cx, cy, r, value) -> None:
    ci, ri = _span(x, cx - r, cx + r), _span(y, cy - r, cy + r)
    if ci.start >= ci.stop or ri.start >= ri.stop:
        return
    ex, ey = x[ci] - np.float32(cx), y[ri] - np.float32(cy)
    _paint(img[ri, ci], (ey * ey)[:, None] + (ex * ex)[None, :] < np.float32(r * r), value)


def _ellipse(img, x, y, cx, cy, a, b, angle, value) -> None:
    """Ellipse with semi-axes ``a`` (along ``angle`` from +x) and ``b``."""
    rmax = max(a, b)
    ci, ri = _span(x, cx - rmax, cx + rmax), _span(y, cy - rmax, cy + rmax)
    if ci.start >= ci.stop or ri.start >= ri.stop or min(a, b) <= 0:
        return
    c, sn = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    ex, ey = x[ci] - np.float32(cx), y[ri] - np.float32(cy)
    u = (ey * (sn / np.float32(a)))[:, None] + (ex * (c / np.float32(a)))[None, :]
    v = (ey * (c / np.float32(b)))[:, None] - (ex * (sn / np.float32(b)))[None, :]
    u *= u
    v *= v
    u += v
    _paint(img[ri, ci], u < 1.0, value)


def _capsule(img, x, y, x0, y0, x1, y1, r, value) -> None:
    """All points within ``r`` of the in-plane segment (x0, y0)-(x1, y1)."""
    ci = _span(x, min(x0, x1) - r, max(x0, x1) + r)
    ri = _span(y, min(y0, y1) - r, max(y0, y1) + r)
    if ci.start >= ci.stop or ri.start >= ri.stop:
        return
    vx, vy = np.float32(x1 - x0), np.float32(y1 - y0)
    inv = np.float32(1.0 / max(float(vx * vx + vy * vy), 1e-9))
    ex, ey = x[ci] - np.float32(x0), y[ri] - np.float32(y0)
    t = (ey * (vy * inv))[:, None] + (ex * (vx * inv))[None, :]
    np.clip(t, 0.0, 1.0, out=t)
    px = ex[None, :] - t * vx
    py = ey[:, None] - t * vy
    px *= px
    py *= py
    px += py
    _paint(img[ri, ci], px < np.float32(r * r), value)


def _tubes(accs, offset: tuple[int, int], x: np.ndarray, y: np.ndarray, step: tuple[float, float], z: float,
           segs: np.ndarray, radii: np.ndarray, soft: float) -> tuple[slice, slice] | None:
    """Max-accumulate, into each full-slice ``accs[a]``, the partial-volume weight of tubes of radius
    ``radii[:, a]`` around the 3-D segments ``segs`` (N, 6: x0, y0, z0, x1, y1, z1; mm) at height z.

    ``x``, ``y``: the regular voxel-centre axes of a window that starts at ``offset`` (row, col) of the slice,
    ``step``: their spacing (dx, dy).  The weight is 1 inside the radius and ramps to 0 over ``soft`` mm.
    All segments are done at once over the pixels of their bounding boxes (a ragged batch), because a numpy
    call per segment costs more than the arithmetic.  Returns the (rows, cols) box touched, in slice indices.
    """
    if not len(segs):
        return None
    p0 = segs[:, :3]
    v = segs[:, 3:6] - p0
    reach = radii.max(axis=1) + 0.5 * soft
    # only the part of a segment within reach of this slice bounds its in-plane box
    flat = np.abs(v[:, 2]) <= 1e-9
    vz = np.where(flat, 1.0, v[:, 2])
    ta, tb = (z - reach - p0[:, 2]) / vz, (z + reach - p0[:, 2]) / vz
    lo = np.where(flat, 0.0, np.maximum(np.minimum(ta, tb), 0.0))
    hi = np.where(flat, 1.0, np.minimum(np.maximum(ta, tb), 1.0))
    ok = (lo <= hi) & ~(flat & (np.abs(z - p0[:, 2]) > reach))
    xs0, xs1 = p0[:, 0] + lo * v[:, 0], p0[:, 0] + hi * v[:, 0]
    ys0, ys1 = p0[:, 1] + lo * v[:, 1], p0[:, 1] + hi * v[:, 1]
    dx, dy = step
    xf, yf = float(x[0]), float(y[0])
    c0 = np.maximum(np.ceil((np.minimum(xs0, xs1) - reach - xf) / dx), 0).astype(np.intp)
    c1 = np.minimum(np.floor((np.maximum(xs0, xs1) + reach - xf) / dx) + 1, len(x)).astype(np.intp)
    r0 = np.maximum(np.ceil((np.minimum(ys0, ys1) - reach - yf) / dy), 0).astype(np.intp)
    r1 = np.minimum(np.floor((np.maximum(ys0, ys1) + reach - yf) / dy) + 1, len(y)).astype(np.intp)
    ok &= (c0 < c1) & (r0 < r1)
    if not ok.any():
        return None
    p0, v, radii, c0, c1, r0, r1 = p0[ok], v[ok], radii[ok], c0[ok], c1[ok], r0[ok], r1[ok]
    width = c1 - c0
    count = width * (r1 - r0)
    sid = np.repeat(np.arange(len(count)), count)
    local = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    rr = r0[sid] + local // width[sid]
    cc = c0[sid] + local % width[sid]
    ex = x[cc] - p0[sid, 0]
    ey = y[rr] - p0[sid, 1]
    ez = z - p0[sid, 2]
    vs = v[sid]
    t = (ex * vs[:, 0] + ey * vs[:, 1] + ez * vs[:, 2]) / np.maximum((v * v).sum(axis=1), 1e-12)[sid]
    np.clip(t, 0.0, 1.0, out=t)
    ex -= t * vs[:, 0]
    ey -= t * vs[:, 1]
    ez -= t * vs[:, 2]
    d = np.sqrt(ex * ex + ey * ey + ez * ez)
    flat_index = (rr + offset[0]) * accs[0].shape[1] + (cc + offset[1])
    for a, acc in enumerate(accs):
        w = (radii[sid, a] - d) * (1.0 / soft) + 0.5
        np.clip(w, 0.0, 1.0, out=w)
        np.maximum.at(acc.reshape(-1), flat_index, w.astype(np.float32))
    return (slice(int(r0.min()) + offset[0], int(r1.max()) + offset[0]),
            slice(int(c0.min()) + offset[1], int(c1.max()) + offset[1]))


# ----------------------------------------------------------------------------------------------------------
# anatomy


class _Anatomy:
    """The random anatomy of one phantom (mm, LPS, independent of the voxel grid) and how to draw a slice."""

    def __init__(self, cfg: PhantomConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        s = self.s = float(rng.uniform(*cfg.body_scale))

        def jit(v: float, rel: float = 0.05) -> float:
            return float(v * s * (1.0 + rng.uniform(-rel, rel)))

        # body outline: a squarish ellipse, flatter at the back; normalised radius^2 = X + Y - box*X*Y
        self.ax, self.ay_ant, self.ay_post = jit(148), jit(112), jit(102)
        self.box = float(rng.uniform(0.35, 0.6))
        fat = float(rng.uniform(7.0, 18.0)) * s
        muscle, rib = 7.0 * s, 6.0 * s
        am = 0.5 * (self.ax + 0.5 * (self.ay_ant + self.ay_post))
        self.r2_fat = (1 - fat / am) ** 2
        self.r2_rib_out = (1 - (fat + muscle) / am) ** 2
        self.r2_rib_in = (1 - (fat + muscle + rib) / am) ** 2
        self.r2_cavity = (1 - (fat + muscle + rib + 2.0 * s) / am) ** 2

        # craniocaudal landmarks
        self.lung_height = jit(255, 0.04)
        self.z_base = -0.5 * self.lung_height + float(rng.uniform(-6, 6)) * s  # deepest costophrenic recess
        self.z_apex = self.z_base + self.lung_height
        self.z_widest = self.z_base + 0.35 * self.lung_height

        # lungs; right = patient right = -x.  dome: height of the diaphragm dome above z_base
        self.lungs = []
        for sign, ax_nom, dome_nom in ((-1.0, 72.0, 70.0), (1.0, 68.0, 56.0)):
            self.lungs.append(
                dict(
                    sign=sign,
                    cx=sign * jit(76),
                    cy=float(rng.uniform(2, 10)) * s,
                    ax=jit(ax_nom),
                    ay=jit(98),
                    dome=jit(dome_nom, 0.12),
                )
            )

        # spine, heart, great vessels, airways, sternum, stomach
        self.vb_y = self.ay_post - jit(50, 0.03)  # vertebral body centre
        self.vb_r = jit(16)
        self.canal_y, self.canal_r = self.vb_y + self.vb_r + 7.0 * s, 7.0 * s
        self.disc_period, self.disc_phase = jit(27), float(rng.uniform(0, 27)) * s
        self.heart = dict(
            x=jit(16, 0.2),
            y=-jit(30, 0.15),
            z=self.z_base + jit(80, 0.08),
            a=jit(62),
            b=jit(45),
            c=jit(55),
            angle=math.radians(float(rng.uniform(20, 40))),
        )
        self.z_arch = self.z_apex - jit(55, 0.1)
        self.asc = (-jit(10, 0.2), -jit(16, 0.2), jit(14))  # ascending aorta: x, y, radius
        self.desc = (jit(21, 0.1), self.vb_y - self.vb_r - jit(12, 0.1), jit(11))
        self.arch_mid = (jit(12, 0.2), -jit(2, 0.5))
        self.band_half = jit(16, 0.15)  # half-width of the anterior mediastinum between the lungs
        self.trachea = (0.0, self.vb_y - self.vb_r - jit(24, 0.1), jit(9))
        self.z_carina = self.z_arch - jit(22, 0.15)
        self.stomach = (jit(65, 0.1), -jit(20, 0.3), jit(30), jit(24), jit(18))
        self.sternum = (-self.ay_ant * (1 - (fat + 0.6 * muscle) / am) + 7.0 * s, jit(14), jit(6))

        # ribs: height at the spine, drop to the anterior end, angular end (rad from the posterior midline)
        self.rib_half_height = 5.0 * s
        spacing = jit(24, 0.06)
        self.ribs = []
        for n in range(12):
            top = self.z_apex + 8.0 * s - n * spacing
            drop = jit(30 + 3.0 * n, 0.15)
            end = 2.45 if n < 10 else 1.7
            self.ribs.append((top, drop, end - float(rng.uniform(0, 0.2))))

        self.lung_base_hu = cfg.lung_hu + float(rng.uniform(-15, 15))
        self.lung_gradient_hu = float(rng.uniform(20, 50))  # denser posteriorly (dependent lung)

    # ---- shapes at a height z

    def body_axes(self, z: float) -> tuple[float, float, float]:
        """Semi-axes (x, anterior y, posterior y) at height z: the neck above the lungs is narrower."""
        t = _smoothstep((z - (self.z_apex - 10.0 * self.s)) / (70.0 * self.s))
        fx, fy = 1.0 - 0.45 * t, 1.0 - 0.22 * t
        return self.ax * fx, self.ay_ant * fy, self.ay_post * fy

    def rho2(self, z: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Normalised squared radius of the body outline on the (y, x) grid: 1 on the skin."""
        ax, ay_ant, ay_post = self.body_axes(z)
        X = x * np.float32(1.0 / ax)
        X *= X
        Y = y * np.where(y < 0, np.float32(1.0 / ay_ant), np.float32(1.0 / ay_post))
        Y *= Y
        r = X[None, :] * (np.float32(1.0) - np.float32(self.box) * Y)[:, None]
        r += Y[:, None]
        return r

    def lung_section(self, lung: dict, z: float) -> tuple[float, float, float, float] | None:
        """Centre and semi-axes of a lung's outline at height z (tapering to the apex), or None."""
        if z <= self.z_base or z >= self.z_apex:
            return None
        cx, cy, ax, ay = lung["cx"], lung["cy"], lung["ax"], lung["ay"]
        if z > self.z_widest:
            u = (z - self.z_widest) / (self.z_apex - self.z_widest)
            f = math.sqrt(max(0.0, 1.0 - u * u))
            if f < 0.04:
                return None
            cx, cy, ax, ay = cx * (1 - 0.3 * u * u), cy + 12.0 * self.s * u * u, ax * f, ay * f * (0.6 + 0.4 * f)
        return cx, cy, ax, ay

    def lung_mask(self, z: float, x: np.ndarray, y: np.ndarray, r2: np.ndarray | None = None) -> np.ndarray:
        """Lung fields (bool, len(y) x len(x)) at height z on the window with voxel centres ``y``, ``x``.

        Every decision is elementwise on a voxel's own coordinates, so any window gives the same answer
        for the same voxel (nodule placement relies on it).  ``r2``: :meth:`rho2` on the same window.
        """
        out = np.zeros((len(y), len(x)), dtype=bool)
        for lung in self.lungs:
            sec = self.lung_section(lung, z)
            if sec is None:
                continue
            cx, cy, ax, ay = sec
            ci, ri = _span(x, cx - ax, cx + ax), _span(y, cy - ay, cy + ay)
            if ci.start >= ci.stop or ri.start >= ri.stop:
                continue
            xx, yy = x[ci], y[ri]
            ex = (xx - np.float32(cx)) * np.float32(1.0 / ax)
            ey = (yy - np.float32(cy)) * np.float32(1.0 / ay)
            inside = (ey * ey)[:, None] + (ex * ex)[None, :] < 1.0
            height = z - self.z_base
            if height < lung["dome"]:
                # diaphragm dome, centred anteriorly so that the posterior recess is the deepest part
                dx = (xx - np.float32(lung["cx"])) * np.float32(1.0 / (1.05 * lung["ax"]))
                dy = (yy - np.float32(lung["cy"] - 18.0 * self.s)) * np.float32(1.0 / lung["ay"])
                q = (dy * dy)[:, None] + (dx * dx)[None, :]
                inside &= q > np.float32(1.0 - height / lung["dome"])
            out[ri, ci] |= inside
        if not out.any():
            return out
        if r2 is None:
            r2 = self.rho2(z, x, y)
        out &= r2 < self.r2_cavity
        self._carve(out, z, x, y, margin=4.0 * self.s)
        return out

    def _carve(self, m: np.ndarray, z: float, x: np.ndarray, y: np.ndarray, margin: float) -> None:
        """Clear the mediastinum, heart, aorta and spine (grown by ``margin`` mm) from mask ``m``."""
        s = self.s
        # anterior mediastinum between the lungs, in front of the spine
        m[_span(y, -1e9, self.vb_y), _span(x, -self.band_half, self.band_half)] = False
        # vertebral body and the paravertebral muscles behind it
        _disc(m, x, y, 0.0, self.vb_y, self.vb_r + margin, False)
        half = self.vb_r + 12.0 * s
        m[_span(y, self.vb_y, 1e9), _span(x, -half, half)] = False
        h = self.heart
        u = (z - h["z"]) / h["c"]
        if abs(u) < 1.0:
            f = math.sqrt(1.0 - u * u)
            _ellipse(m, x, y, h["x"], h["y"], h["a"] * f + margin, h["b"] * f + margin, h["angle"], False)
        for cx, cy, r in self._aorta_sections(z):
            _disc(m, x, y, cx, cy, r + margin, False)
        for (x0, y0), (x1, y1), r in self._arch_capsules(z):
            _capsule(m, x, y, x0, y0, x1, y1, r + margin, False)

    def _aorta_sections(self, z: float) -> list[tuple[float, float, float]]:
        out = []
        if self.heart["z"] <= z <= self.z_arch:
            out.append(self.asc)
        if z <= self.z_arch:
            out.append(self.desc)
        return out

    def _arch_capsules(self, z: float) -> list:
        r = self.desc[2]
        if abs(z - self.z_arch) >= r:
            return []
        rr = math.sqrt(r * r - (z - self.z_arch) ** 2)
        a, mid, d = self.asc[:2], self.arch_mid, self.desc[:2]
        return [(a, mid, rr), (mid, d, rr)]

    # ---- drawing into a float32 slice

    def draw_tissue(self, img: np.ndarray, z: float, x: np.ndarray, y: np.ndarray, r2: np.ndarray) -> None:
        """Air, fat, muscle, mediastinum, abdomen, heart and aorta (not lungs, airways, bones, nodules)."""
        s = self.s
        img.fill(_AIR)
        _paint(img, r2 < 1.0, _FAT)
        _paint(img, r2 < self.r2_fat, _SOFT)
        if z < self.z_apex + 15.0 * s:
            cavity = r2 < self.r2_cavity
            _paint(img, cavity, _MEDIASTINAL_FAT)
            height = z - self.z_base
            if height < max(lung["dome"] for lung in self.lungs):
                # below the diaphragm dome the cavity is abdomen: liver on the right, stomach on the left
                below = np.zeros_like(cavity)
                if height < 0:
                    below[:] = True
                else:
                    for lung in self.lungs:
                        dx = (x - np.float32(lung["cx"])) * np.float32(1.0 / (1.25 * lung["ax"]))
                        dy = (y - np.float32(lung["cy"] - 18.0 * s)) * np.float32(1.0 / (1.15 * lung["ay"]))
                        below |= (dy * dy)[:, None] + (dx * dx)[None, :] < np.float32(1.0 - height / lung["dome"])
                below &= cavity
                _paint(img, below, _SOFT)
                _paint(img, below & (x < np.float32(20.0 * s))[None, :], _LIVER)
                sx, sy, sa, sb, sc = self.stomach
                u = (z - (self.z_base + self.lungs[1]["dome"] - sc - 4.0 * s)) / sc
                if abs(u) < 1.0:
                    f = math.sqrt(1.0 - u * u)
                    _ellipse(img, x, y, sx, sy, sa * f, sb * f, 0.3, _AIR)
        half = self.vb_r + 12.0 * s  # paraspinal muscles
        ri, ci = _span(y, self.vb_y - self.vb_r, 1e9), _span(x, -half, half)
        _paint(img[ri, ci], r2[ri, ci] < self.r2_rib_out, _SOFT)
        h = self.heart  # non-contrast: blood and myocardium alike
        u = (z - h["z"]) / h["c"]
        if abs(u) < 1.0:
            f = math.sqrt(1.0 - u * u)
            _ellipse(img, x, y, h["x"], h["y"], h["a"] * f, h["b"] * f, h["angle"], _BLOOD)
        for cx, cy, r in self._aorta_sections(z):
            _disc(img, x, y, cx, cy, r, _BLOOD)
        for (x0, y0), (x1, y1), r in self._arch_capsules(z):
            _capsule(img, x, y, x0, y0, x1, y1, r, _BLOOD)

    def draw_bones(self, img: np.ndarray, z: float, x, y, r2: np.ndarray, theta: np.ndarray) -> None:
        """Spine, sternum and ribs; ``theta``: angle around the body from the posterior midline (rad)."""
        s = self.s
        in_disc = ((z - self.disc_phase) % self.disc_period) < 6.0 * s
        _disc(img, x, y, 0.0, self.vb_y, self.vb_r, _DISC if in_disc else _CORTEX)
        if not in_disc:
            _disc(img, x, y, 0.0, self.vb_y, self.vb_r - 2.0 * s, _CANCELLOUS)
        cy, cr = self.canal_y, self.canal_r
        _ellipse(img, x, y, 0.0, cy + 1.0 * s, cr + 5.0 * s, cr + 4.0 * s, 0.0, _CORTEX)  # neural arch
        _capsule(img, x, y, -27.0 * s, cy - 3 * s, 27.0 * s, cy - 3 * s, 4.0 * s, _CORTEX)  # transverse
        _capsule(img, x, y, 0.0, cy, 0.0, cy + cr + 15.0 * s, 3.5 * s, _CORTEX)  # spinous
        _disc(img, x, y, 0.0, cy, cr, _CORD)
        sy, sa, sb = self.sternum
        if self.z_base + 45.0 * s < z < self.z_apex - 20.0 * s:
            _ellipse(img, x, y, 0.0, sy, sa, sb, 0.0, _CORTEX)
            _ellipse(img, x, y, 0.0, sy, sa - 2.0 * s, sb - 2.0 * s, 0.0, _CANCELLOUS)
        # ribs descend anteriorly, so a slice cuts each near it over an interval of angles
        h, theta0, ring = self.rib_half_height, 0.32, None
        for top, drop, end in self.ribs:
            if z > top + h or z < top - drop - h:
                continue

            def angle_at(zz: float, top=top, drop=drop, end=end) -> float:
                u = min(max((top - zz) / drop, 0.0), 1.0) ** (1 / 1.5)
                return theta0 + u * (end - theta0)

            ta, tb = angle_at(z + h), (end if z - h < top - drop else angle_at(z - h))
            if ring is None:
                ring = (r2 < self.r2_rib_out) & (r2 >= self.r2_rib_in)
            _paint(img, ring & (theta >= np.float32(ta)) & (theta <= np.float32(tb)), _RIB)

    def lung_values(self, z: float, x: np.ndarray, y: np.ndarray, texture: _Texture) -> np.ndarray:
        """Parenchyma HU on a window: base, denser posteriorly, smooth texture."""
        val = texture.sample(z, x, y)
        grad = y * np.float32(self.lung_gradient_hu / (200.0 * self.s))
        val += (grad + np.float32(self.lung_base_hu))[:, None]
        return val


class _Texture:
    """A smooth random 3-D field on a coarse lattice (``cell_mm``), sampled by separable smooth interpolation."""

    def __init__(self, grid: _Grid, rng: np.random.Generator, cell_mm: float, amplitude: float) -> None:
        self.cell = cell_mm
        self.lo = (grid.x0 - cell_mm, grid.y0 - cell_mm, grid.z0 - cell_mm)
        nxy = int(grid.n * grid.pixel / cell_mm) + 4
        nz = int(grid.nz * grid.dz / cell_mm) + 4
        self.nodes = (rng.standard_normal((nz, nxy, nxy)) * amplitude).astype(np.float32)

    def _weights(self, coords, lo: float):
        u = (np.asarray(coords, dtype=np.float64) - lo) / self.cell
        i = np.floor(u).astype(np.intp)
        f = u - i
        return i, (f * f * (3 - 2 * f)).astype(np.float32)

    def sample(self, z: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        (iz,), (fz,) = self._weights([z], self.lo[2])
        plane = (1 - fz) * self.nodes[iz] + fz * self.nodes[iz + 1]
        xi, xf = self._weights(x, self.lo[0])
        rows = plane[:, xi] * (1 - xf) + plane[:, xi + 1] * xf  # (lattice rows, cols)
        yi, yf = self._weights(y, self.lo[1])
        yf = yf[:, None]
        out = rows[yi] * (1 - yf)
        out += rows[yi + 1] * yf
        return out


# ----------------------------------------------------------------------------------------------------------
# trees (vessels and airways) as arrays of 3-D segments (x0, y0, z0, x1, y1, z1, radius)


class _LungAtlas:
    """Coarse lung occupancy (``cell_mm`` voxels over the anatomy's extent), for steering the trees cheaply."""

    def __init__(self, anat: _Anatomy, cell_mm: float = 3.0) -> None:
        self.cell = cell_mm
        half = anat.ax + cell_mm
        self.x = np.arange(-half, half + cell_mm, cell_mm, dtype=np.float32)
        self.y = np.arange(-anat.ay_ant - cell_mm, anat.ay_post + 2 * cell_mm, cell_mm, dtype=np.float32)
        self.z0 = anat.z_base - cell_mm
        nz = int((anat.z_apex - anat.z_base) / cell_mm) + 3
        self.occ = np.stack([anat.lung_mask(self.z0 + k * cell_mm, self.x, self.y) for k in range(nz)])

    def __contains__(self, p) -> bool:
        k = round((p[2] - self.z0) / self.cell)
        j = round((p[1] - float(self.y[0])) / self.cell)
        i = round((p[0] - float(self.x[0])) / self.cell)
        nz, ny, nx = self.occ.shape
        return 0 <= k < nz and 0 <= j < ny and 0 <= i < nx and bool(self.occ[k, j, i])


def _grow_tree(atlas: _LungAtlas, rng, out: list, start, direction, length, radius, generations, min_radius) -> None:
    """Bifurcating tree from ``start``: children shorter and thinner, spread away from the start, kept in the lung.

    Plain-float 3-vectors: numpy's per-call overhead on 3-element arrays would dominate.
    """

    def unit(v):
        n = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
        return (v[0] / n, v[1] / n, v[2] / n)

    def cross(a, b):
        return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])

    def normal3():
        return rng.normal(size=3).tolist()

    root = tuple(float(c) for c in start)
    stack = [(root, unit([float(c) for c in direction]), length, radius, 0)]
    while stack:
        p, d, ln, r, gen = stack.pop()
        end = (p[0] + d[0] * ln, p[1] + d[1] * ln, p[2] + d[2] * ln)
        if gen > 0 and end not in atlas:
            for _ in range(3):  # re-aim a few times before giving up on this branch
                g = normal3()
                d = unit((d[0] + 0.8 * g[0], d[1] + 0.8 * g[1], d[2] + 0.8 * g[2]))
                end = (p[0] + d[0] * ln * 0.7, p[1] + d[1] * ln * 0.7, p[2] + d[2] * ln * 0.7)
                if end in atlas:
                    break
            else:
                continue
        out.append((*p, *end, r))
        if gen >= generations or r * 0.79 < min_radius:
            continue
        away = (end[0] - root[0], end[1] - root[1], end[2] - root[2])
        away = unit(away) if math.hypot(*away) > 1e-6 else d
        while True:  # a random axis perpendicular to d
            axis = cross(d, normal3())
            if math.hypot(*axis) > 1e-6:
                axis = unit(axis)
                break
        side = cross(axis, d)
        spread = math.radians(float(rng.uniform(22, 40)))
        for sgn in (1.0, -1.0):
            a = sgn * spread * float(rng.uniform(0.6, 1.0))
            ca, sa = math.cos(a), math.sin(a)
            cd = unit(tuple(d[i] * ca + side[i] * sa + 0.3 * away[i] for i in range(3)))
            stack.append((end, cd, ln * float(rng.uniform(0.78, 0.92)), r * float(rng.uniform(0.74, 0.84)), gen + 1))


def _build_trees(anat: _Anatomy, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Vessel segments and airway segments, each (N, 7): x0, y0, z0, x1, y1, z1, radius (mm)."""
    s, cfg = anat.s, anat.cfg
    atlas = _LungAtlas(anat)
    vessels: list = []
    airways: list = []
    tx, ty, tr = anat.trachea
    carina = np.array([tx, ty, anat.z_carina])
    airways.append((tx, ty, anat.z_apex + 200.0 * s, *carina, tr))
    for lung in anat.lungs:
        sg = lung["sign"]
        z_hilum = anat.z_carina - (24.0 if sg < 0 else 34.0) * s
        hilum = np.array([sg * (0.48 * abs(lung["cx"]) + 4.0 * s), ty - 2.0 * s, z_hilum])
        airways.append((*carina, *hilum, (7.0 if sg < 0 else 6.0) * s))
        # lobar directions (lateral, y, z): upper, middle/lingula, lower posterior, lower lateral
        for lx, ly, lz in ((0.45, -0.1, 0.9), (0.8, -0.55, -0.2), (0.35, 0.6, -0.75), (0.75, 0.05, -0.65)):
            d = np.array([sg * lx, ly, lz]) + 0.15 * rng.normal(size=3)
            # an artery from the hilum and a vein from lower and more anterior, with the bronchus
            _grow_tree(atlas, rng, vessels, hilum + np.array([0, -3.0 * s, 6.0 * s]), d, 34.0 * s, 5.0 * s,
                       cfg.vessel_generations, 0.45)
            _grow_tree(atlas, rng, vessels, hilum + np.array([0, -10.0 * s, -14.0 * s]),
                       d + 0.25 * rng.normal(size=3), 32.0 * s, 4.5 * s, cfg.vessel_generations, 0.45)
            _grow_tree(atlas, rng, airways, hilum, d, 20.0 * s, 4.5 * s, cfg.airway_generations, 1.0)
    return (np.asarray(vessels, dtype=np.float64).reshape(-1, 7), np.asarray(airways, dtype=np.float64).reshape(-1, 7))


def _bucket(grid: _Grid, segs: np.ndarray, pad: float) -> list[np.ndarray]:
    """For each slice, the segments that come within their radius + ``pad`` of it."""
    buckets: list[list[int]] = [[] for _ in range(grid.nz)]
    for n, sgm in enumerate(segs.tolist()):
        reach = sgm[6] + pad
        for k in grid.slices(min(sgm[2], sgm[5]) - reach, max(sgm[2], sgm[5]) + reach):
            buckets[k].append(n)
    return [np.array(b, dtype=np.intp) for b in buckets]


# ----------------------------------------------------------------------------------------------------------
# nodules


def _place_nodules(cfg: PhantomConfig, anat: _Anatomy, grid: _Grid, rng: np.random.Generator) -> list[Nodule]:
    """Spheres inside the lung mask with a shell of at least one voxel of lung around them, apart from each other.

    A nodule that finds no room in 300 tries is dropped, so a small volume may hold fewer than drawn.
    """
    count = int(rng.integers(cfg.nodule_count[0], cfg.nodule_count[1] + 1))
    margin = math.sqrt(grid.dx**2 + grid.dy**2 + grid.dz**2) + 0.5
    placed: list[tuple[np.ndarray, float, float]] = []
    z_lo, z_hi = grid.z(0), grid.z(grid.nz - 1)
    for _ in range(count):
        for _attempt in range(300):
            diameter = float(rng.uniform(*cfg.nodule_diameter_mm))
            hu = float(rng.uniform(*cfg.nodule_hu))
            lung = anat.lungs[int(rng.integers(0, 2))]
            r = diameter / 2
            reach = r + margin
            u = rng.uniform(-1, 1, size=2)
            if z_hi - z_lo < 2 * reach:
                continue
            c = np.array(
                [lung["cx"] + u[0] * lung["ax"], lung["cy"] + u[1] * lung["ay"], rng.uniform(z_lo + reach, z_hi - reach)]
            )
            if any(np.linalg.norm(c - pc) < r + pr + 2.0 for pc, pr, _ in placed):
                continue
            if _sphere_in_lung(anat, grid, c, reach):
                placed.append((c, r, hu))
                break
    nodules = []
    for c, r, hu in placed:
        idx = (round((c[2] - grid.z0) / grid.dz), round((c[1] - grid.y0) / grid.dy), round((c[0] - grid.x0) / grid.dx))
        nodules.append(Nodule(tuple(float(v) for v in c), tuple(int(v) for v in idx), 2 * r, hu))
    return nodules


def _sphere_in_lung(anat: _Anatomy, grid: _Grid, c: np.ndarray, reach: float) -> bool:
    ks = grid.slices(c[2] - reach, c[2] + reach)
    rs, cs = _span(grid.ys, c[1] - reach, c[1] + reach), _span(grid.xs, c[0] - reach, c[0] + reach)
    if rs.start >= rs.stop or cs.start >= cs.stop or len(ks) == 0:
        return False
    x, y = grid.xs[cs], grid.ys[rs]
    ex, ey = x - np.float32(c[0]), y - np.float32(c[1])
    d2 = (ey * ey)[:, None] + (ex * ex)[None, :]
    for k in sorted(ks, key=lambda k: abs(grid.z(k) - c[2])):  # central slice first: cheapest rejection
        ball = d2 + np.float32((grid.z(k) - c[2]) ** 2) <= np.float32(reach * reach)
        if ball.any() and not np.all(anat.lung_mask(grid.z(k), x, y)[ball]):
            return False
    return True


def _draw_nodules(img, lab, grid: _Grid, z: float, nodules: list[Nodule], soft: float) -> None:
    for nd in nodules:
        r = nd.diameter_mm / 2
        dzc = z - nd.center_lps_mm[2]
        reach = r + 0.5 * soft
        if abs(dzc) > reach:
            continue
        cx, cy = nd.center_lps_mm[0], nd.center_lps_mm[1]
        rs, cs = _span(grid.ys, cy - reach, cy + reach), _span(grid.xs, cx - reach, cx + reach)
        ex, ey = grid.xs[cs] - np.float32(cx), grid.ys[rs] - np.float32(cy)
        d2 = (ey * ey)[:, None] + (ex * ex)[None, :]
        d2 += np.float32(dzc * dzc)
        _paint(lab[rs, cs], d2 <= np.float32(r * r), 2)
        d = np.sqrt(d2, out=d2)
        w = np.clip((np.float32(r) - d) * np.float32(1.0 / soft) + np.float32(0.5), 0.0, 1.0)
        win = img[rs, cs]
        win += (np.float32(nd.hu) - win) * w


def _blur3(img: np.ndarray, tmp: np.ndarray) -> None:
    """In-place separable [1, 2, 1] / 4 blur (the scanner's point spread), edges replicated."""
    q, h = np.float32(0.25), np.float32(0.5)
    for a, t in ((img, tmp), (img.T, tmp.T)):
        np.multiply(a[:, 1:-1], h, out=t[:, 1:-1])
        t[:, 1:-1] += a[:, :-2] * q
        t[:, 1:-1] += a[:, 2:] * q
        t[:, 0] = a[:, 0] * np.float32(0.75) + a[:, 1] * q
        t[:, -1] = a[:, -1] * np.float32(0.75) + a[:, -2] * q
        a[...] = t


# ----------------------------------------------------------------------------------------------------------


def generate_phantom(config: PhantomConfig = PhantomConfig(), seed: int = 0) -> Phantom:
    """Draw a chest-CT phantom; the same ``(config, seed)`` always gives the same arrays."""
    if not isinstance(config, PhantomConfig):
        raise TypeError(f"config must be a PhantomConfig, got {type(config).__name__}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    grid = _Grid(config)
    rng_anatomy, rng_trees, rng_texture, rng_nodules, rng_noise = np.random.default_rng(seed).spawn(5)
    anat = _Anatomy(config, rng_anatomy)
    vessels, airways = _build_trees(anat, rng_trees)
    texture = _Texture(grid, rng_texture, 9.0, config.lung_texture_hu)
    nodules = _place_nodules(config, anat, grid, rng_nodules)

    soft = max(0.6, 0.75 * grid.pixel)  # partial-volume ramp (mm)
    wall = 1.2 * anat.s  # bronchial wall thickness (mm)
    v_buckets = _bucket(grid, vessels, soft)
    a_buckets = _bucket(grid, airways, soft + wall)

    n, x, y, step = grid.n, grid.xs, grid.ys, (grid.dx, grid.dy)
    hu = np.empty((grid.nz, n, n), dtype=np.int16)
    labels = np.empty((grid.nz, n, n), dtype=np.uint8)
    img, tmp, acc, acc2 = (np.empty((n, n), dtype=np.float32) for _ in range(4))
    ay_mean = 0.5 * (anat.ay_ant + anat.ay_post)
    theta = np.arctan2(np.abs(x * np.float32(1 / anat.ax))[None, :], (y * np.float32(1 / ay_mean))[:, None])
    for k in range(grid.nz):
        z = grid.z(k)
        r2 = anat.rho2(z, x, y)
        anat.draw_tissue(img, z, x, y, r2)
        lung = anat.lung_mask(z, x, y, r2)
        lab = labels[k]
        np.copyto(lab, lung, casting="unsafe")
        rows = np.flatnonzero(lung.any(axis=1))
        if rows.size:
            cols = np.flatnonzero(lung.any(axis=0))
            rs, cs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
            val = anat.lung_values(z, x[cs], y[rs], texture)
            a = acc[rs, cs]
            a.fill(0.0)
            idx = v_buckets[k]
            _tubes((acc,), (rs.start, cs.start), x[cs], y[rs], step, z, vessels[idx, :6], vessels[idx, 6:7], soft)
            val += (np.float32(_BLOOD) - val) * a  # vessels: partial-volume blend towards blood
            np.copyto(img[rs, cs], val, where=lung[rs, cs])
        idx = a_buckets[k]
        if len(idx):  # airways: soft-tissue wall around an air lumen, inside the body
            acc.fill(0.0)
            acc2.fill(0.0)
            radii = np.stack([airways[idx, 6] + wall, airways[idx, 6]], axis=1)
            box = _tubes((acc, acc2), (0, 0), x, y, step, z, airways[idx, :6], radii, soft)
            if box is not None:
                win, inside = img[box], r2[box] < anat.r2_fat
                for a, value in ((acc[box], _SOFT), (acc2[box], _AIR)):
                    a *= inside
                    win += (np.float32(value) - win) * a
        anat.draw_bones(img, z, x, y, r2, theta)
        _draw_nodules(img, lab, grid, z, nodules, soft)
        if config.blur:
            _blur3(img, tmp)
        if config.noise_hu > 0:
            noise = rng_noise.standard_normal((n, n), dtype=np.float32)
            noise *= np.float32(config.noise_hu)
            img += noise
        np.rint(img, out=img)
        np.clip(img, HU_MIN, HU_MAX, out=img)
        np.copyto(hu[k], img, casting="unsafe")

    return Phantom(
        hu=hu,
        labels=labels,
        spacing_mm=config.spacing_mm,
        origin_lps_mm=(float(grid.x0), float(grid.y0), float(grid.z0)),
        nodules=nodules,
        config=config,
        seed=seed,
    )
