"""The demo study's ground truth is kept where the scanner never looks: no command warns about it."""

from __future__ import annotations

import json

import numpy as np

from medviewer.ai.demo_data import TRUTH_DIR, truth_files
from medviewer.cli import main


def _demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo-data", str(out), "--slices", "8", "--size", "64"]) == 0
    (study,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    capsys.readouterr()
    return study


def test_info_on_the_demo_study_prints_no_sidecar_warning(tmp_path, capsys):
    study = _demo(tmp_path, capsys)
    assert sorted(p.name for p in study.iterdir()) == [TRUTH_DIR, "CT"]
    for target in (study, study.parent):  # the study, and the folder of studies
        assert main(["info", str(target), "--no-pixels"]) == 0
        out, err = capsys.readouterr()
        assert "labels.npy" not in out + err and "truth.json" not in out + err
        assert "warning" not in err.lower() and "not a DICOM" not in out + err
        assert "8" in out  # the series itself is listed


def test_truth_is_found_in_the_hidden_folder_and_where_older_writers_put_it(tmp_path, capsys):
    study = _demo(tmp_path, capsys)
    labels, truth = truth_files(study)
    assert labels == study / TRUTH_DIR / "labels.npy" and truth == study / TRUTH_DIR / "truth.json"
    assert np.load(labels).shape == (8, 64, 64) and json.loads(truth.read_text())["shape"] == [8, 64, 64]
    # an older layout: beside CT/
    labels.rename(study / "labels.npy")
    truth.rename(study / "truth.json")
    assert truth_files(study) == (study / "labels.npy", study / "truth.json")


def test_cached_demo_study_of_an_older_layout_is_moved(tmp_path):
    from medviewer.ai import demo_data

    study = tmp_path / "cache" / "demo-chest-ct"
    study.mkdir(parents=True)
    (study / "labels.npy").write_bytes(b"x")
    (study / "truth.json").write_text("{}")
    demo_data._move_legacy_truth(study)
    assert sorted(p.name for p in study.iterdir()) == [TRUTH_DIR]
    assert sorted(p.name for p in (study / TRUTH_DIR).iterdir()) == ["labels.npy", "truth.json"]
