"""Small previews of a series for the browser: one frame, windowed, as uint8."""

from __future__ import annotations

import numpy as np

from medviewer.core.decode import decode_frames, read_native_frame, to_rgb8
from medviewer.core.series import Series
from medviewer.core.windowing import to_uint8


def thumbnail(series: Series, size: int = 64) -> np.ndarray:
    """The middle frame of ``series`` as uint8 (rows, cols) or (rows, cols, 3), at most ``size`` pixels a side.

    Grayscale is windowed with the header's first window, else the 1st–99th percentile;
    MONOCHROME1 is inverted so that it looks as it will in the viewer.
    """
    ref = series.frames[len(series.frames) // 2]
    instance = ref.instance
    if instance.pixel_offset is not None and instance.samples_per_pixel == 1:
        stored = read_native_frame(instance, ref.frame, np.empty(instance.frame_bytes, dtype=np.uint8))
        palette = None
    else:
        (stored,), palette = decode_frames(instance, [ref.frame])
    step = max(1, int(np.ceil(max(stored.shape[:2]) / size)))
    small = stored[::step, ::step]
    if series.is_color:
        return np.ascontiguousarray(to_rgb8(small, instance, palette))
    values = small.astype(np.float32) * ref.geometry.slope + ref.geometry.intercept
    windows = ref.geometry.windows
    if windows:
        center, width = windows[0]
        lo, hi = center - width / 2, center + width / 2
    else:
        finite = values[np.isfinite(values)]
        lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    return np.ascontiguousarray(to_uint8(values, lo, hi, invert=instance.photometric == "MONOCHROME1"))
