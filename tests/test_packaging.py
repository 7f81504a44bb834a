"""The desktop bundle and what it is made of: resources found in every setting, icons, desktop entry.

The bundle build itself (``packaging/build.sh``, then ``<bundle>/medviewer --selftest``) is marked slow:
``python3 -m pytest -m slow tests/test_packaging.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medviewer import resources
from medviewer.ai.package import builtin_models_dir

ROOT = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fake_resources(folder: Path) -> Path:
    (folder / "models").mkdir(parents=True)
    return folder


def test_checkout_resources_are_the_repository_folder(monkeypatch):
    monkeypatch.delenv("MEDVIEWER_RESOURCES", raising=False)
    assert resources.resources_dir() == ROOT / "resources"
    assert resources.models_dir() == ROOT / "resources" / "models"
    assert builtin_models_dir() == resources.models_dir()
    assert resources.desktop_entry_path().is_file()


def test_frozen_bundle_resources_come_from_meipass(monkeypatch, tmp_path):
    monkeypatch.delenv("MEDVIEWER_RESOURCES", raising=False)
    bundled = _fake_resources(tmp_path / "_internal" / "resources")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path / "_internal"), raising=False)
    assert resources.resources_dir() == bundled
    assert builtin_models_dir() == bundled / "models"


def test_package_data_and_prefix_are_looked_at_when_there_is_no_checkout(monkeypatch, tmp_path):
    monkeypatch.delenv("MEDVIEWER_RESOURCES", raising=False)
    package = tmp_path / "site-packages" / "medviewer"
    package.mkdir(parents=True)
    monkeypatch.setattr(resources, "_PACKAGE_DIR", package)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    # nothing anywhere: the checkout location, for writing the built-in models
    assert resources.resources_dir() == tmp_path / "site-packages" / "resources"
    shared = _fake_resources(tmp_path / "prefix" / "share" / "medviewer")
    assert resources.resources_dir() == shared
    inside = _fake_resources(package / "resources")
    assert resources.resources_dir() == inside
    # a stray site-packages/resources that is not ours is passed over
    (tmp_path / "site-packages" / "resources").mkdir()
    assert resources.resources_dir() == inside


def test_environment_override_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDVIEWER_RESOURCES", str(tmp_path / "custom"))
    assert resources.resources_dir() == tmp_path / "custom"
    assert resources.resource_candidates()[0] == ("environment", tmp_path / "custom")


def test_icon_set(monkeypatch):
    monkeypatch.delenv("MEDVIEWER_RESOURCES", raising=False)
    from PIL import Image

    for size in resources.ICON_SIZES:
        path = resources.icon_path(size)
        assert path == ROOT / "resources" / "icons" / f"medviewer-{size}.png"
        assert path.read_bytes()[:8] == PNG_MAGIC
        with Image.open(path) as image:
            assert image.size == (size, size) and image.mode == "RGBA"
            assert image.getpixel((0, 0))[3] == 0  # transparent corners (rounded tile)
            assert image.getpixel((size // 2, size // 2))[3] == 255
    assert resources.icon_path(20) == resources.icon_path(32)  # the next size up
    assert resources.icon_path(1000) == resources.icon_path(256)  # the largest there is
    svg = resources.icon_path()
    assert svg.suffix == ".svg" and b"<svg" in svg.read_bytes()
    with Image.open(ROOT / "resources" / "icons" / "medviewer.ico") as ico:
        assert ico.format == "ICO" and {(16, 16), (32, 32), (256, 256)} <= set(ico.info["sizes"])
    with Image.open(ROOT / "resources" / "icons" / "medviewer.icns") as icns:
        assert icns.format == "ICNS"


def test_desktop_entry():
    entry = ROOT / "resources" / "medviewer.desktop"
    text = entry.read_text(encoding="utf-8")
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert text.startswith("[Desktop Entry]\n")
    assert fields["Type"] == "Application" and fields["Exec"].split()[0] == "medviewer"
    assert fields["Icon"] == "medviewer"
    assert "application/dicom" in fields["MimeType"].split(";")
    validator = shutil.which("desktop-file-validate")
    if validator is None:
        pytest.skip("desktop-file-validate is not installed (Debian/Ubuntu: desktop-file-utils)")
    done = subprocess.run([validator, str(entry)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_spec_collects_what_the_bundle_needs():
    spec = (ROOT / "packaging" / "medviewer.spec").read_text(encoding="utf-8")
    for needed in ('"resources"', "copy_metadata", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle",
                   "pyjpegls", "python-gdcm", "tkinter", "COLLECT("):
        assert needed in spec, needed
    assert "--onefile" not in (ROOT / "packaging" / "build.sh").read_text(encoding="utf-8")


@pytest.mark.slow
def test_bundle_builds_and_passes_its_selftest(tmp_path):
    if sys.platform != "linux":
        pytest.skip("the build script is for Linux")
    out = tmp_path / "bundle"
    try:
        _build_and_check(out, tmp_path)
    finally:
        shutil.rmtree(out, ignore_errors=True)  # about 1 GB


def _build_and_check(out: Path, tmp_path: Path) -> None:
    build = subprocess.run(["bash", str(ROOT / "packaging" / "build.sh"), str(out)], capture_output=True,
                           text=True, timeout=1800)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    assert "size: " in build.stdout
    bundle = out / "dist" / "medviewer"
    internal = bundle / "_internal"
    assert (internal / "resources" / "models").is_dir()
    assert (internal / "resources" / "icons" / "medviewer-256.png").is_file()
    platforms = internal / "PySide6" / "Qt" / "plugins" / "platforms"
    names = {p.name for p in platforms.iterdir()}
    assert {"libqoffscreen.so", "libqxcb.so"} <= names, names
    assert any((internal / "PySide6" / "Qt" / "plugins" / "imageformats").iterdir())
    assert list(internal.glob("pylibjpeg_libjpeg-*.dist-info/entry_points.txt"))

    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "MEDVIEWER_"))}
    folders = []
    for var in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "TMPDIR"):
        folder = tmp_path / var.lower()
        folder.mkdir()
        env[var] = str(folder)
        folders.append(folder)
    env["QT_QPA_PLATFORM"] = "offscreen"
    done = subprocess.run([str(bundle / "medviewer"), "--selftest"], env=env, cwd=tmp_path / "home",
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "frozen bundle" in done.stdout
    assert f"{internal / 'resources'} (bundle)" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("self-test OK")
    for folder in folders:
        assert list(folder.iterdir()) == [], f"the bundle's self-test left files in {folder.name}"
