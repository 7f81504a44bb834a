"""Broken model packages and failing writes: named in one line, never hiding the rest, nothing half-written.

A deeply nested ``manifest.json`` in the user's model folder is refused (listed with its reason) while
the other packages still work in ``medviewer models``, ``predict`` and the GUI's model panel; ``demo-data``
killed or on a full disk leaves no half folder; ``predict`` on a full disk leaves no empty folder.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import medviewer.ai.package as package_module
from medviewer.ai.package import find_packages, json_depth
from medviewer.cli import main as cli_main

BUILTIN = [p for p in find_packages() if p.source == "builtin" and p.manifest is not None]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def user_models(tmp_path, monkeypatch) -> Path:
    """A user model folder holding one package whose manifest nests 100,000 levels deep."""
    folder = tmp_path / "user-models"
    (folder / "deep").mkdir(parents=True)
    (folder / "deep" / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    monkeypatch.setattr(package_module, "user_models_dir", lambda: folder)
    return folder


def test_json_depth():
    assert json_depth('{"a": [1, {"b": "[[[["}]}') == 3
    assert json_depth('"\\"[["') == 0


def test_deep_manifest_is_refused_and_the_others_still_found(user_models):
    packages = find_packages()
    (deep,) = [p for p in packages if p.path.name == "deep"]
    assert deep.manifest is None
    assert deep.error == f"{user_models / 'deep' / 'manifest.json'}: nested 100000 levels deep (at most 32): not read"
    assert [p.path for p in packages if p.manifest is not None] == [p.path for p in BUILTIN]


def test_models_cli_lists_the_others_and_fails_for_a_named_bad_package(user_models, capsys):
    code = cli_main(["models"])
    captured = capsys.readouterr()
    assert code == 0  # found by looking: listed as unusable, the others work
    assert "nested 100000 levels deep" in captured.err and "Traceback" not in captured.err
    for info in BUILTIN:
        assert info.manifest.id in captured.out
    code = cli_main(["models", str(user_models / "deep")])
    captured = capsys.readouterr()
    assert code == 1
    assert f"{user_models / 'deep' / 'manifest.json'}: nested" in captured.err
    code = cli_main(["models", str(user_models / "absent")])
    assert code == 1 and "does not exist" in capsys.readouterr().err


def test_predict_with_a_bad_package_names_the_package(user_models, tmp_path, capsys):
    study = tmp_path / "study"
    study.mkdir()
    out = tmp_path / "out"
    code = cli_main(["predict", "--model", str(user_models / "deep"), "--out", str(out), str(study)])
    captured = capsys.readouterr()
    assert code == 1
    (line,) = captured.err.strip().splitlines()
    assert line == (f"medviewer: model {user_models / 'deep' / 'manifest.json'}: "
                    "nested 100000 levels deep (at most 32): not read")
    assert not out.exists()


def test_gui_model_panel_lists_the_good_packages_and_names_the_refused_one(user_models, qtbot):
    from medviewer.ui.assistant import AssistantPanel

    panel = AssistantPanel()
    qtbot.addWidget(panel)
    panel.set_packages(find_packages())
    assert panel.model_list.count() == len(BUILTIN) + 1
    assert panel.run_button.isEnabled() == bool(BUILTIN)
    refused = panel.model_list.item(panel.model_list.count() - 1)
    assert refused.text().startswith("deep  [refused: ") and "nested 100000 levels deep" in refused.text()
    assert not refused.flags() & type(refused.flags()).ItemIsUserCheckable
    assert str(user_models / "deep") in refused.toolTip()
    panel.model_list.setCurrentItem(refused)
    assert panel.card.text().startswith("Not usable: ") and "nested" in panel.card.text()
    assert str(user_models / "deep") not in panel.selected_paths()
    assert sorted(panel.selected_paths()) == sorted(str(p.path) for p in BUILTIN)


# --- nothing half-written ------------------------------------------------------------------------


def _demo(out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "medviewer", "demo-data", str(out), *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_demo_data_killed_leaves_no_half_folder(tmp_path):
    out = tmp_path / "demo"
    process = _demo(out, "--slices", "400", "--size", "128", "--count", "3")
    deadline = time.monotonic() + 60
    staging = []
    while time.monotonic() < deadline and process.poll() is None:
        staging = [p for p in tmp_path.glob(".medviewer-demo-*") if list(p.rglob("*.dcm"))]
        if staging:
            break
        time.sleep(0.05)
    assert staging, "demo-data finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not out.exists()  # no empty or half folder where the user looks
    # The next run removes what the killed one left and writes a whole study.
    done = _demo(out, "--slices", "4", "--size", "32")
    assert done.wait(120) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    assert len(list((out / "demo-chest-ct-001" / "CT").glob("*.dcm"))) == 4


def _full_disk(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_demo_data_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    import medviewer.ai.demo_data as demo_data

    monkeypatch.setattr(demo_data, "dcmwrite", _full_disk)
    out = tmp_path / "demo"
    code = cli_main(["demo-data", str(out), "--slices", "4", "--size", "32"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip().splitlines() == [f"medviewer: {out}: writing failed (No space left on device)"]
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    code = cli_main(["demo-data", str(out), "--slices", "4", "--size", "32"])
    assert code == 1 and list(out.iterdir()) == []


def test_predict_on_a_full_disk_leaves_no_empty_folder(tmp_path, monkeypatch, capsys):
    import medviewer.ai.infer as infer
    import medviewer.ai.prediction as prediction
    from medviewer.ai.demo_data import write_demo_data
    from medviewer.ai.phantom import PhantomConfig

    (study,) = write_demo_data(tmp_path / "data", config=PhantomConfig(slices=4, size=32))
    monkeypatch.setattr(infer, "predict", lambda *a, **k: SimpleNamespace(warnings=[]))
    monkeypatch.setattr(prediction, "write_prediction", _full_disk)
    out = tmp_path / "out" / "run"
    code = cli_main(["predict", "--model", str(BUILTIN[0].path) if BUILTIN else "x", "--out", str(out),
                     str(study / "CT")])
    captured = capsys.readouterr()
    if not BUILTIN:
        pytest.skip("no built-in model packages")
    assert code == 1
    assert captured.err.strip().splitlines() == [f"medviewer: {out}: cannot write (No space left on device)"]
    assert not out.exists()


def test_gui_worker_tracebacks_go_to_the_log_not_stderr(qtbot, capfd, caplog):
    import logging

    from medviewer.ui.workers import TaskManager

    tasks = TaskManager()
    outcome = {}

    def broken(context):
        raise ZeroDivisionError("division by zero")

    with caplog.at_level(logging.DEBUG, logger="medviewer"):
        tasks.start(broken, "measure", on_failed=lambda message: outcome.setdefault("failed", message))
        qtbot.waitUntil(lambda: "failed" in outcome and not tasks.running, timeout=5000)
    tasks.shutdown()
    assert outcome["failed"] == "measure failed: ZeroDivisionError: division by zero"
    assert "Traceback" not in capfd.readouterr().err
    assert any(record.exc_info for record in caplog.records if record.name == "medviewer")
