"""Where MedViewer's read-only resources are: the built-in models, the icons, the desktop entry.

The same ``resources/`` folder is found in a source checkout, an installed package and a
PyInstaller bundle.  :func:`resources_dir` looks in this order and takes the first folder that
holds MedViewer's resources (a ``models/`` folder or ``medviewer.desktop``):

1. ``$MEDVIEWER_RESOURCES``, when set: an explicit override (a packager's layout, a test).
2. A frozen bundle (PyInstaller, ``sys.frozen``): ``<sys._MEIPASS>/resources``; the spec in
   ``packaging/medviewer.spec`` puts the checkout's ``resources/`` there (``_internal/resources``
   in a one-folder bundle, ``Contents/Frameworks/resources`` in a macOS ``.app``).
3. A checkout or an editable install (``pip install -e .``): ``resources/`` beside the
   ``medviewer`` package folder, at the repository root.
4. Package data: ``medviewer/resources/`` inside the installed package.  A wheel does not carry the
   repository's ``resources/`` by itself; a packager who wants a plain ``pip install`` to have the
   models copies the folder to ``medviewer/resources/`` before building the wheel and lists it as
   package data (``[tool.setuptools.package-data] medviewer = ["resources/**/*"]``).  The folder has
   no ``__init__.py`` and never shadows this module: a module file wins over a plain folder.
5. Shared data of an installation prefix: ``<sys.prefix>/share/medviewer/`` (a wheel's
   ``data_files`` or a distribution's package put it there).

When none of these exists the checkout location (3) is returned, so that writing the built-in
models (``python -m medviewer.ai.builtin``) goes where it always has.

Nothing here imports Qt or torch: every layer may use it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = [
    "ICON_SIZES",
    "demo_cache_dir",
    "desktop_entry_path",
    "icon_path",
    "models_dir",
    "resource_candidates",
    "resources_dir",
]

ENV_VAR = "MEDVIEWER_RESOURCES"
ICON_SIZES = (16, 32, 48, 64, 128, 256)
_PACKAGE_DIR = Path(__file__).resolve().parent


def _is_ours(folder: Path) -> bool:
    return (folder / "models").is_dir() or (folder / "medviewer.desktop").is_file()


def resource_candidates() -> list[tuple[str, Path]]:
    """The places looked at, in order, as ``(setting, folder)``; see the module's documentation."""
    candidates = []
    override = os.environ.get(ENV_VAR)
    if override:
        candidates.append(("environment", Path(override).expanduser()))
    if getattr(sys, "frozen", False):
        base = getattr(sys, "_MEIPASS", None) or os.path.dirname(sys.executable)
        candidates.append(("bundle", Path(base) / "resources"))
    candidates.append(("checkout", _PACKAGE_DIR.parent / "resources"))
    candidates.append(("package", _PACKAGE_DIR / "resources"))
    candidates.append(("prefix", Path(sys.prefix) / "share" / "medviewer"))
    return candidates


def resources_dir() -> Path:
    """The resources folder in use (the first candidate that holds MedViewer's resources).

    An ``$MEDVIEWER_RESOURCES`` that is set is taken as it is, even when it does not exist (a
    packager's mistake should show up as "not found there", not as resources from elsewhere).
    """
    candidates = resource_candidates()
    if candidates[0][0] == "environment":
        return candidates[0][1]
    for _setting, folder in candidates:
        if _is_ours(folder):
            return folder
    return _PACKAGE_DIR.parent / "resources"


def models_dir() -> Path:
    """The built-in model packages: ``<resources>/models`` (may not exist)."""
    return resources_dir() / "models"


def icon_path(size: int | None = None) -> Path | None:
    """The application icon: the PNG of ``size`` pixels (the smallest one at least that large, else the
    largest), or the SVG when ``size`` is None.  None when the icon set is missing."""
    icons = resources_dir() / "icons"
    if size is None:
        svg = icons / "medviewer.svg"
        return svg if svg.is_file() else None
    sizes = [s for s in ICON_SIZES if (icons / f"medviewer-{s}.png").is_file()]
    if not sizes:
        return None
    fitting = [s for s in sizes if s >= size]
    chosen = min(fitting) if fitting else max(sizes)
    return icons / f"medviewer-{chosen}.png"


def desktop_entry_path() -> Path:
    """The Linux desktop entry (``medviewer.desktop``)."""
    return resources_dir() / "medviewer.desktop"


def demo_cache_dir(version: str) -> Path:
    """Where the demo study of ``version`` is written on first use: the user's cache folder.

    The demo is generated (``medviewer.ai.demo_data``), not shipped, so a bundle stays small and
    the folder is writable wherever the program runs from.
    """
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("medviewer")) / f"demo-{version}"
