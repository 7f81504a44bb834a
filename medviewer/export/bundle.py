"""The assistant's results as standard DICOM objects in one folder: ``seg.dcm`` (Segmentation), ``sr.dcm``
(TID 1500 measurement report) and ``key-images/SC0001.dcm``… (Secondary Captures of the key slices).

One function for the CLI (``predict --dicom``) and the viewer (File → Export → DICOM objects): everything
is built first, then written together through :func:`medviewer.core.safe.write_files`, so a refusal (a
series without DICOM headers, an existing file without ``force``, a full disk) leaves nothing behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from pydicom import dcmwrite

from medviewer.ai.prediction import Prediction
from medviewer.core.annotations import Annotation
from medviewer.core.safe import ExportError, check_targets, write_files
from medviewer.core.volume import Volume
from medviewer.core.windowing import Window
from medviewer.export.dicom_objects import build_dicom_objects, dicom_object_targets
from medviewer.export.secondary_capture import build_secondary_captures

KEY_IMAGES = "key-images"


def write_dicom_bundle(volume: Volume, prediction: Prediction, out_dir: str | os.PathLike, *,
                       bookmarks: Iterable[int] = (), annotations: Iterable[Annotation] = (),
                       window: Window | tuple[float, float] | None = None, force: bool = False) -> list[Path]:
    """Write the SEG, the SR and the key images of ``prediction`` into ``out_dir``, all or none; returns the
    written paths (SEG, SR, then the key images in slice order)."""
    out = Path(out_dir)
    check_targets(dicom_object_targets(prediction, out), force)  # refused before the slow part
    objects = build_dicom_objects(volume, prediction, out)
    try:
        images = build_secondary_captures(volume, prediction, bookmarks=bookmarks, annotations=annotations,
                                          window=window)
    except ValueError as exc:
        raise ExportError(str(out / KEY_IMAGES), str(exc)) from None
    files = {path: (lambda fp, data=data: fp.write(data)) for path, data in objects}
    for number, image in enumerate(images, start=1):
        files[out / KEY_IMAGES / f"SC{number:04d}.dcm"] = lambda fp, image=image: dcmwrite(fp, image,
                                                                                            enforce_file_format=True)
    check_targets(list(files), force)
    return write_files(files, force=force)
