"""``medviewer --selftest``: every check passes on this installation, the report is one line per check,
failures are one line without a traceback, and nothing is left on disk."""

from __future__ import annotations

import io
import os
import subprocess
import sys

from medviewer import selftest
from medviewer.cli import main

CHECK_NAMES = [name for name, _ in selftest.CHECKS]


def _isolated_env(tmp_path) -> tuple[dict, list]:
    """An environment whose home, caches, settings and temporary folder are empty folders under tmp_path."""
    env = dict(os.environ)
    folders = []
    for var in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "TMPDIR"):
        folder = tmp_path / var.lower()
        folder.mkdir()
        env[var] = str(folder)
        folders.append(folder)
    env["QT_QPA_PLATFORM"] = "offscreen"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("MEDVIEWER_RESOURCES", None)
    return env, folders


def test_selftest_passes_and_writes_nothing(tmp_path):
    env, folders = _isolated_env(tmp_path)
    done = subprocess.run([sys.executable, "-m", "medviewer", "--selftest"], env=env, cwd=tmp_path / "home",
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("MedViewer ") and lines[0].endswith("self-test")
    for label in ("Python 3.", "Qt 6.", "torch ", "pydicom ", "device: "):
        assert any(line.strip().startswith(label) for line in lines), (label, done.stdout)
    for name in CHECK_NAMES:
        assert any(line.startswith("OK") and line[7:].startswith(name) for line in lines), (name, done.stdout)
    assert lines[-1].startswith(f"self-test OK: all {len(CHECK_NAMES)} checks")
    assert "Traceback" not in done.stderr
    for folder in folders:
        assert list(folder.iterdir()) == [], f"the self-test left files in {folder.name}: {list(folder.rglob('*'))}"


def test_selftest_option_is_top_level_and_in_help(capsys):
    assert main(["--help"]) == 0
    assert "--selftest" in capsys.readouterr().out


def test_a_failed_check_is_one_line_and_exit_1(monkeypatch, tmp_path):
    def broken(_state):
        raise ZeroDivisionError("division by zero\nsecond line")

    def fine(_state):
        return "fine"

    monkeypatch.setattr(selftest, "CHECKS", (("first", fine), ("broken", broken), ("last", fine)))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    out = io.StringIO()
    assert selftest.run_selftest(out=out) == 1
    lines = out.getvalue().splitlines()
    failed = [line for line in lines if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].split()[1] == "broken"
    assert failed[0].endswith("ZeroDivisionError: division by zero second line")
    assert any(line.startswith("OK") and " last " in line for line in lines)  # later checks still run
    assert lines[-1].startswith("self-test FAILED: 1 of 3 checks (broken)")
    assert "Traceback" not in out.getvalue()


def test_missing_models_fail_the_resources_check(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDVIEWER_RESOURCES", str(tmp_path / "nowhere"))
    monkeypatch.setattr(selftest, "CHECKS", selftest.CHECKS[:1])
    out = io.StringIO()
    assert selftest.run_selftest(out=out) == 1
    failed = [line for line in out.getvalue().splitlines() if line.startswith("FAILED")]
    assert failed and "resources" in failed[0] and str(tmp_path / "nowhere") in failed[0]
