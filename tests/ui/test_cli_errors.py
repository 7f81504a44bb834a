"""CLI errors are one plain line naming the file and the reason, with a non-zero exit, never a traceback."""

from __future__ import annotations

from medviewer.cli import main
from tests.ui.conftest import write_disc_series


def test_report_with_a_file_as_predictions_is_one_plain_line(tmp_path, capsys):
    folder, _ = write_disc_series(tmp_path / "disc")
    not_a_folder = tmp_path / "predictions.json"
    not_a_folder.write_text("{}")
    code = main(["report", str(folder), "--predictions", str(not_a_folder), "--out", str(tmp_path / "r.pdf")])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert "unexpected error" not in err and "Traceback" not in err
    assert str(not_a_folder) in err
    assert not (tmp_path / "r.pdf").exists()


def test_report_with_missing_predictions_is_one_plain_line(tmp_path, capsys):
    folder, _ = write_disc_series(tmp_path / "disc")
    code = main(["report", str(folder), "--predictions", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.pdf")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "unexpected error" not in err, err
