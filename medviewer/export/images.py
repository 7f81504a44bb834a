"""Key images: slices rendered as RGB with the assistant's overlays and the user's measurements.

What the viewer shows, as a plain ``(rows, cols, 3)`` uint8 array for the PDF report, the DICOM
secondary captures and PNG export: the slice windowed (MONOCHROME1 inverted, colour passed
through), the heatmap blended in the viewer's colour map, the label mask as contours (or a
translucent fill) in the manifest's colours, and the annotations with their measurement text.
numpy, scipy and Pillow only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from medviewer.ai.prediction import Prediction, label_rgb
from medviewer.core import mpr
from medviewer.core.annotations import Annotation, measurement_text
from medviewer.core.volume import Volume
from medviewer.core.windowing import Window, color_to_uint8, default_window, percentile_window, to_uint8

MASK_STYLES = ("contour", "fill")
HEATMAP_OPACITY = 0.5
FILL_OPACITY = 0.35
ANNOTATION_COLOR = (255, 220, 0)
DEFAULT_LABEL_COLORS = ((255, 64, 64), (64, 200, 255), (80, 220, 80), (255, 160, 0), (200, 100, 255))
FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/local/share/fonts/DejaVuSans.ttf",
    "/Library/Fonts/DejaVuSans.ttf",
    "C:/Windows/Fonts/DejaVuSans.ttf",
)
"""Where a TrueType font covering accented Latin, Greek and Cyrillic is looked for (DejaVu Sans)."""


def find_font(paths: Sequence[str] = FONT_PATHS) -> Path | None:
    """The first DejaVu Sans found, or None."""
    for candidate in paths:
        path = Path(candidate)
        if path.is_file():
            return path
    return None


def heat_lut(opacity: float = HEATMAP_OPACITY) -> np.ndarray:
    """A 256-entry RGBA table, the viewer's and the report's: transparent blue at 0 through yellow to opaque red
    at 255."""
    x = np.linspace(0, 1, 256)
    r = np.clip(1.5 - np.abs(4 * x - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * x - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * x - 1), 0, 1)
    a = np.clip(x * 1.6, 0, 1) * opacity
    return (np.stack([r, g, b, a], axis=1) * 255).astype(np.uint8)


def _as_window(window: Window | tuple[float, float] | None, volume: Volume) -> Window:
    if isinstance(window, Window):
        return window
    if window is not None:
        center, width = window
        return Window(center, width)
    chosen = default_window(volume)
    return chosen if chosen is not None else percentile_window(volume.voxels)


def window_slice(volume: Volume, k: int, window: Window | tuple[float, float] | None = None) -> np.ndarray:
    """Slice ``k`` as (rows, cols, 3) uint8: windowed and MONOCHROME1 inverted, colour passed through.

    ``window``: a :class:`Window` or (centre, width) in modality units; by default the series'
    :func:`~medviewer.core.windowing.default_window` (the header's, a CT preset, or a percentile window).
    """
    count = volume.voxels.shape[0]
    if not 0 <= int(k) < count:
        raise IndexError(f"slice {k} outside 0..{count - 1}")
    plane = volume.voxels[int(k)]
    if volume.is_color:
        return np.array(color_to_uint8(plane, volume.color_bits), dtype=np.uint8, copy=True)
    lo, hi = _as_window(window, volume).levels()
    gray = to_uint8(plane, lo, hi, invert=volume.invert)
    return np.repeat(gray[:, :, None], 3, axis=2)


def label_color(prediction: Prediction | None, value: int) -> tuple[int, int, int]:
    """The manifest's colour of label ``value`` (a fixed palette where the manifest has none)."""
    spec = prediction.labels.get(int(value), {}) if prediction is not None else {}
    rgb = label_rgb(spec.get("color"))
    if rgb is not None:
        return rgb
    return DEFAULT_LABEL_COLORS[(int(value) - 1) % len(DEFAULT_LABEL_COLORS)]


def _wanted_labels(prediction: Prediction, present: np.ndarray, labels_to_show: Iterable | None) -> list[int]:
    values = [int(v) for v in present if v != 0]
    if labels_to_show is None:
        return values
    wanted: set[int] = set()
    for item in labels_to_show:
        if isinstance(item, str):
            wanted.update(v for v, spec in prediction.labels.items() if spec.get("name") == item)
        else:
            wanted.add(int(item))
    return [v for v in values if v in wanted]


def _blend(rgb: np.ndarray, where: np.ndarray, color: Sequence[int] | np.ndarray, alpha: np.ndarray | float) -> None:
    """rgb[where] = rgb * (1 - alpha) + color * alpha, in place (alpha scalar or per pixel of ``where``)."""
    base = rgb[where].astype(np.float32)
    alpha = np.asarray(alpha, dtype=np.float32)
    if alpha.ndim == 1:
        alpha = alpha[:, None]
    mixed = base * (1 - alpha) + np.asarray(color, dtype=np.float32) * alpha
    rgb[where] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def _upscale(array: np.ndarray, factor: int, resample: int) -> np.ndarray:
    if factor == 1:
        return array
    rows, cols = array.shape[:2]
    image = Image.fromarray(np.ascontiguousarray(array))
    return np.array(image.resize((cols * factor, rows * factor), resample=resample))


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    path = find_font()
    if path is not None:
        try:
            return ImageFont.truetype(str(path), size)
        except OSError:
            pass
    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow without FreeType's scalable default
        return ImageFont.load_default()


def annotation_text(volume: Volume, annotation: Annotation) -> str:
    """The measurement the viewer writes beside ``annotation`` ('23.4 mm', '87.0°', ROI statistics, the note)."""
    geometry = mpr.reformat_geometry(volume, annotation.axis)
    image = None
    if annotation.kind in ("rectangle", "ellipse") and not volume.is_color:
        image = mpr.reformat(volume.voxels, annotation.axis, annotation.slice_index, direction=volume.direction)
    return measurement_text(annotation, image, geometry.spacing_yx, volume.units, volume.pixel_spacing_known)


def _draw_annotations(rgb: np.ndarray, volume: Volume, annotations: Sequence[Annotation], factor: int) -> np.ndarray:
    image = Image.fromarray(rgb)
    draw = ImageDraw.Draw(image)
    rows, cols = rgb.shape[:2]
    width = max(1, round(min(rows, cols) / 256))
    font = _font(max(10, round(min(rows, cols) / 28)))

    def xy(point: tuple[float, float]) -> tuple[float, float]:
        # pixel centres at integers, before and after upscaling
        row, col = point
        return (col + 0.5) * factor - 0.5, (row + 0.5) * factor - 0.5

    for annotation in annotations:
        points = [xy(p) for p in annotation.points]
        if annotation.kind == "distance":
            draw.line(points, fill=ANNOTATION_COLOR, width=width)
            for x, y in points:
                draw.ellipse((x - 2 * width, y - 2 * width, x + 2 * width, y + 2 * width), outline=ANNOTATION_COLOR)
        elif annotation.kind == "angle":
            draw.line(points, fill=ANNOTATION_COLOR, width=width, joint="curve")
        elif annotation.kind in ("rectangle", "ellipse"):
            (x0, y0), (x1, y1) = points
            box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            shape = draw.rectangle if annotation.kind == "rectangle" else draw.ellipse
            shape(box, outline=ANNOTATION_COLOR, width=width)
        text = annotation_text(volume, annotation)
        if not text:
            continue
        if annotation.kind == "text":
            x, y = points[0]
        elif annotation.kind in ("rectangle", "ellipse"):
            x, y = max(p[0] for p in points) + 3 * width, min(p[1] for p in points)
        else:
            x, y = points[-1][0] + 3 * width, points[-1][1]
        if ", " in text and draw.textlength(text, font=font) > 0.45 * cols:
            text = text.replace(", ", "\n")  # ROI statistics: one value a line
        left, top, right, bottom = draw.multiline_textbbox((x, y), text, font=font)
        # keep the label inside the image
        x, y = max(x - max(0, right - (cols - 1)), 0), max(y - max(0, bottom - (rows - 1)), 0)
        draw.multiline_text((x, y), text, fill=ANNOTATION_COLOR, font=font, stroke_width=max(1, width),
                            stroke_fill=(0, 0, 0))
    return np.asarray(image).copy()


def upscale_factor(shape: tuple[int, ...], min_size: int) -> int:
    """The integer factor that brings the longer side of ``shape`` (rows, cols) to at least ``min_size``."""
    longest = max(shape[:2]) if shape else 0
    if min_size <= 0 or longest <= 0 or longest >= min_size:
        return 1
    return int(math.ceil(min_size / longest))


def render_slice(
    volume: Volume,
    k: int,
    *,
    window: Window | tuple[float, float] | None = None,
    prediction: Prediction | None = None,
    mask_style: str = "contour",
    heatmap: bool = True,
    annotations: Iterable[Annotation] = (),
    labels_to_show: Iterable[int | str] | None = None,
    min_size: int = 0,
) -> np.ndarray:
    """Slice ``k`` of ``volume`` as the viewer shows it: (rows, cols, 3) uint8.

    - ``window``: :class:`Window` or (centre, width); default the series' default window.
    - ``prediction``: its heatmap (if ``heatmap``) is blended in the viewer's colour map, its mask drawn
      as ``mask_style`` "contour" (the label minus its erosion) or "fill" in the manifest's colours,
      for the label values (or names) in ``labels_to_show`` (default all).
    - ``annotations``: those on this slice of the acquired view (axis 0) are drawn with their text.
    - ``min_size``: upscale by an integer factor so the longer side is at least this many pixels (for
      print); contours and text are drawn at the upscaled size, so they stay thin and sharp.
    """
    if mask_style not in MASK_STYLES:
        raise ValueError(f"mask_style must be one of {MASK_STYLES}, got {mask_style!r}")
    k = int(k)
    rgb = window_slice(volume, k, window)
    factor = upscale_factor(rgb.shape, min_size)
    rgb = _upscale(rgb, factor, Image.Resampling.BICUBIC)
    if prediction is not None:
        shape = volume.voxels.shape[:3]
        for name in ("mask", "heatmap"):
            array = getattr(prediction, name)
            if array is not None and tuple(array.shape) != shape:
                raise ValueError(f"the prediction's {name} {tuple(array.shape)} does not match the volume {shape}")
        if heatmap and prediction.heatmap is not None:
            heat = np.asarray(prediction.heatmap[k], dtype=np.float32)
            if np.any(heat > 0):
                index = np.rint(np.clip(np.nan_to_num(heat), 0, 1) * 255).astype(np.uint8)
                index = _upscale(index, factor, Image.Resampling.BILINEAR)
                lut = heat_lut(HEATMAP_OPACITY)
                where = lut[index, 3] > 0
                if where.any():
                    colors = lut[index[where]]
                    _blend(rgb, where, colors[:, :3], colors[:, 3].astype(np.float32) / 255.0)
        if prediction.mask is not None:
            labels = np.asarray(prediction.mask[k])
            present = np.unique(labels)
            for value in _wanted_labels(prediction, present, labels_to_show):
                region = _upscale((labels == value).view(np.uint8), factor, Image.Resampling.NEAREST).astype(bool)
                color = label_color(prediction, value)
                if mask_style == "fill":
                    _blend(rgb, region, color, FILL_OPACITY)
                    region = region & ~ndimage.binary_erosion(region)
                else:
                    thickness = max(1, round(min(rgb.shape[:2]) / 300))
                    region = region & ~ndimage.binary_erosion(region, iterations=thickness, border_value=0)
                rgb[region] = color
    on_slice = [a for a in annotations if a.axis == 0 and a.slice_index == k]
    if on_slice:
        rgb = _draw_annotations(np.ascontiguousarray(rgb), volume, on_slice, factor)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _finding_scores(prediction: Prediction, finding, first: int, last: int) -> np.ndarray | None:
    """A score per slice first..last for ``finding`` (heatmap max within its label, else slice probability)."""
    if prediction.heatmap is not None:
        heat = np.asarray(prediction.heatmap[first:last + 1], dtype=np.float32)
        if prediction.mask is not None:
            inside = np.asarray(prediction.mask[first:last + 1]) == finding.label_value
            masked = np.where(inside, heat, -1.0).reshape(heat.shape[0], -1).max(axis=1)
            if np.any(masked >= 0):
                return masked
        scores = heat.reshape(heat.shape[0], -1).max(axis=1)
        if np.any(scores > 0):
            return scores
    probabilities = prediction.slice_probabilities
    if probabilities is not None and probabilities.ndim == 2 and probabilities.shape[1] > 0:
        column = prediction.classes.index(finding.label) if finding.label in prediction.classes else -1
        return np.asarray(probabilities[first:last + 1, column], dtype=np.float32)
    return None


def key_slices(prediction: Prediction | None, bookmarks: Iterable[int] = (),
               annotations: Iterable[Annotation] = ()) -> list[tuple[int, str]]:
    """The slices worth a key image, as sorted, distinct (k, reason) pairs.

    For each finding its most probable slice: the highest heatmap value over the finding's label (or the
    highest slice probability) inside its slice range, ties going to the slice nearest its centroid; the
    centroid slice where there is neither. Then the bookmarked slices and the slices with a measurement of
    the acquired view (axis 0). Reasons of one slice are joined with '; '.
    """
    reasons: dict[int, list[str]] = {}
    count = len(prediction.sop_instance_uids) if prediction is not None else None

    def add(k: int, reason: str) -> None:
        entries = reasons.setdefault(int(k), [])
        if reason not in entries:
            entries.append(reason)

    if prediction is not None:
        for finding in prediction.findings:
            first, last = sorted(int(s) for s in finding.slices)
            if count:
                first, last = max(first, 0), min(last, count - 1)
            centre = int(round(finding.centroid_index[0]))
            best = centre
            if first <= last:
                scores = _finding_scores(prediction, finding, first, last)
                if scores is not None and scores.size:
                    ks = np.arange(first, last + 1)
                    order = np.lexsort((np.abs(ks - finding.centroid_index[0]), -scores))
                    best = int(ks[order[0]])
            if count:
                best = min(max(best, 0), count - 1)
            add(best, f"finding {finding.id} ({finding.label})")
    for k in bookmarks:
        add(int(k), "bookmark")
    for annotation in annotations:
        if annotation.axis == 0:
            add(annotation.slice_index, "measurement")
    return [(k, "; ".join(reasons[k])) for k in sorted(reasons)]
