"""The scale bar: a "nice" physical length near a target size on screen."""

from __future__ import annotations

import math

_NICE = (5.0, 2.0, 1.0)


def _nice_below(value: float) -> float:
    """The largest 1, 2 or 5 x 10^n not above ``value`` (> 0)."""
    exponent = math.floor(math.log10(value))
    # Guard against log10 rounding just below an exact power of ten (log10(1000) = 2.9999...).
    if 10.0 ** (exponent + 1) <= value * (1 + 1e-12):
        exponent += 1
    for mantissa in _NICE:
        nice = mantissa * 10.0**exponent
        if nice <= value * (1 + 1e-12):
            return nice
    return 5.0 * 10.0 ** (exponent - 1)


def _number(value: float) -> str:
    return f"{round(value, 6):g}"


def length_label(length_mm: float) -> str:
    """"1 m", "5 cm" (multiples of 10 mm), "2 mm", "500 µm", "200 nm"."""
    if length_mm >= 1000 and math.isclose(length_mm % 1000, 0, abs_tol=1e-9):
        return f"{_number(length_mm / 1000)} m"
    if length_mm >= 10 and math.isclose(length_mm % 10, 0, abs_tol=1e-9):
        return f"{_number(length_mm / 10)} cm"
    if length_mm >= 1:
        return f"{_number(length_mm)} mm"
    if length_mm >= 1e-3:
        return f"{_number(length_mm * 1e3)} µm"
    return f"{_number(length_mm * 1e6)} nm"


def scale_bar(mm_per_screen_pixel: float | None, target_px: float = 100) -> tuple[float | None, float, str]:
    """(length_mm, length_px, label) of a scale bar at most ``target_px`` screen pixels long.

    ``mm_per_screen_pixel`` is the image's pixel spacing divided by the zoom (mm per screen pixel
    along the bar). The length is the largest 1, 2 or 5 x 10^n mm that fits, so the bar is
    between 0.4 and 1 times ``target_px``. Unknown spacing (None, zero, negative, NaN): the bar
    measures screen pixels instead and length_mm is None, e.g. (None, 100.0, "100 px").
    """
    if target_px <= 0:
        raise ValueError(f"target_px must be positive, got {target_px}")
    if mm_per_screen_pixel is None or not math.isfinite(mm_per_screen_pixel) or mm_per_screen_pixel <= 0:
        length_px = _nice_below(target_px)
        return None, length_px, f"{_number(length_px)} px"
    length_mm = _nice_below(target_px * mm_per_screen_pixel)
    return length_mm, length_mm / mm_per_screen_pixel, length_label(length_mm)
