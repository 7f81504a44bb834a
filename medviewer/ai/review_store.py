"""The review of the assistant's findings (accepted, rejected, notes, the corrected mask), kept across launches.

One folder per reviewed series in the user's data folder, keyed by StudyInstanceUID and SeriesInstanceUID::

    <user data>/medviewer/reviews/<study uid>/<series uid>/predictions.json   findings with review and note
                                                           mask.npy           the mask as corrected
                                                           review.json        the model packages that ran

Written with :func:`~medviewer.ai.prediction.write_prediction` into a hidden staging folder beside it and
renamed into place, so a crash or a full disk leaves the previous review (or none), never half of one. The
Grad-CAM heatmap is not kept (it is large and not part of the review). A review is given back only for the
same slices (their SOP Instance UIDs, in the same order) and the same image size; anything unreadable is
treated as no review.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from medviewer.ai.prediction import Prediction, read_prediction, write_prediction

__all__ = ["load_review", "review_folder", "reviews_dir", "save_review"]

_UNSAFE = re.compile(r"[^0-9A-Za-z._-]+")


def reviews_dir() -> Path:
    """``<user data folder>/medviewer/reviews``."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("medviewer", appauthor=False)) / "reviews"


def _name(uid: str, fallback: str) -> str:
    name = _UNSAFE.sub("_", str(uid or "")).strip("._")
    return name[:128] or fallback


def review_folder(root: Path, study_uid: str, series_uid: str) -> Path:
    return Path(root) / _name(study_uid, "unknown-study") / _name(series_uid, "unknown-series")


def save_review(root: Path, study_uid: str, prediction: Prediction, model_paths: list[str]) -> Path:
    """Keep ``prediction``'s findings, reviews and mask for its series; returns the folder written."""
    target = review_folder(root, study_uid, prediction.series_uid)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = None
    try:
        write_prediction(replace(prediction, heatmap=None), staging, force=True)
        (staging / "review.json").write_text(json.dumps({
            "format": "medviewer-review", "study_instance_uid": study_uid,
            "series_instance_uid": prediction.series_uid, "model_paths": [str(p) for p in model_paths]}, indent=2))
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(staging, target)
    except BaseException:
        if old is not None and not target.exists():
            os.replace(old, target)  # the previous review stays
            old = None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return target


def load_review(root: Path, study_uid: str, series_uid: str, sop_instance_uids: list[str],
                shape: tuple[int, ...]) -> tuple[Prediction, list[str]] | None:
    """The kept review of this series as ``(prediction, model paths)``, or None where there is none that fits."""
    folder = review_folder(root, study_uid, series_uid)
    if not (folder / "review.json").is_file():
        return None
    try:
        meta = json.loads((folder / "review.json").read_text())
        prediction = read_prediction(folder)
        if meta.get("format") != "medviewer-review" or prediction.series_uid != series_uid:
            return None
        if list(prediction.sop_instance_uids) != list(sop_instance_uids):
            return None
        if prediction.mask is not None:
            if tuple(prediction.mask.shape) != tuple(shape[:3]):
                return None
            prediction.mask = np.array(prediction.mask, dtype=np.uint8)  # writable: the brush edits it
        prediction.done_slices = np.ones(len(prediction.sop_instance_uids), dtype=bool)
        prediction.complete = True
        return prediction, [str(p) for p in meta.get("model_paths", [])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logging.getLogger("medviewer").debug("review in %s not read: %s", folder, exc)
        return None
