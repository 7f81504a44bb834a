"""Measurements and notes a user draws on a slice, as plain data.

Points are image coordinates (row, col) in pixels of the view they were drawn on, pixel
centres at integers. Each annotation lives on one slice of one view (``axis`` 0 for the
acquired slices, 1 and 2 for reformats). The viewer draws them; reports read them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from medviewer.core import measure

KINDS = ("distance", "angle", "rectangle", "ellipse", "text")
_ids = itertools.count(1)


@dataclass
class Annotation:
    kind: str
    slice_index: int
    points: list[tuple[float, float]]
    axis: int = 0
    text: str = ""
    id: int = field(default_factory=lambda: next(_ids))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown annotation kind {self.kind!r} (one of {', '.join(KINDS)})")
        needed = {"distance": 2, "angle": 3, "rectangle": 2, "ellipse": 2, "text": 1}[self.kind]
        if len(self.points) != needed:
            raise ValueError(f"a {self.kind} needs {needed} point(s), got {len(self.points)}")
        self.points = [(float(r), float(c)) for r, c in self.points]


def measurement_text(annotation: Annotation, image: np.ndarray | None, spacing_yx: tuple[float, float],
                     units: str = "", spacing_known: bool = True) -> str:
    """What the viewer writes beside an annotation: '23.4 mm', '87.0°', ROI statistics, or the note."""
    unit = "mm" if spacing_known else "px"
    spacing = spacing_yx if spacing_known else (1.0, 1.0)
    if annotation.kind == "distance":
        return f"{measure.distance_mm(*annotation.points, spacing):.1f} {unit}"
    if annotation.kind == "angle":
        return f"{measure.angle_deg(*annotation.points, spacing):.1f}°"
    if annotation.kind in ("rectangle", "ellipse"):
        if image is None or image.ndim != 2:
            return ""
        function = measure.rect_stats if annotation.kind == "rectangle" else measure.ellipse_stats
        stats = function(image, annotation.points[0], annotation.points[1], spacing, units)
        text = stats.text()
        return text if spacing_known else text.replace("mm²", "px²")
    return annotation.text
