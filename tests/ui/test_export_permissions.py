"""Exports get the user's umask, not mkstemp's 0600."""

from __future__ import annotations

import os
import stat

from medviewer.core.safe import write_bytes, write_folder


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_folders_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        png = write_bytes(tmp_path / "view.png", b"png")
        assert _mode(png) == 0o644
        folder = write_folder(tmp_path / "copy", lambda staging: (staging / "a.dcm").write_bytes(b"x"))
        assert _mode(folder) == 0o755
        os.umask(0o077)
        private = write_bytes(tmp_path / "report.pdf", b"%PDF")
        assert _mode(private) == 0o600
        os.umask(0o002)
        shared = write_bytes(tmp_path / "predictions.json", b"{}")
        assert _mode(shared) == 0o664
    finally:
        os.umask(old)


def test_predictions_follow_the_umask(tmp_path):
    import numpy as np

    from medviewer.ai.prediction import Prediction, write_prediction

    prediction = Prediction(series_uid="1.2", sop_instance_uids=["1.2.1"], positions_lps_mm=[(0.0, 0.0, 0.0)],
                            classes=["nodule"], slice_probabilities=np.zeros((1, 1), np.float32),
                            study_probability=0.0)
    old = os.umask(0o022)
    try:
        written = write_prediction(prediction, tmp_path / "out")
    finally:
        os.umask(old)
    assert written and all(_mode(p) == 0o644 for p in written)
