"""The layering of DESIGN.md, checked rather than promised.

core, ai and export never import Qt; core never imports torch. Checked twice: statically
(every import statement in those packages) and at run time (importing the package in a
fresh interpreter leaves Qt and torch out of sys.modules).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medviewer"
QT = ("PySide6", "PyQt5", "PyQt6", "shiboken6", "pyqtgraph", "superqt")
FORBIDDEN = {"core": QT + ("torch", "safetensors"), "ai": QT, "export": QT}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_statically(layer):
    offenders = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        bad = _imports(path) & set(FORBIDDEN[layer])
        if bad:
            offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_importing_core_loads_neither_qt_nor_torch():
    code = (
        "import sys, medviewer, medviewer.core, medviewer.core.info, medviewer.cli\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN['core']!r}]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


_LINT = ("import sys; from importlinter.cli import lint_imports; "
         "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")


def test_import_contracts_hold():
    """pyproject's [tool.importlinter]: the layer order cli | selftest | ui | export | ai | core (which also
    rules out cycles between layers), and the Qt and torch bans followed through indirect imports."""
    done = subprocess.run([sys.executable, "-c", _LINT], cwd=PACKAGE.parent, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout, done.stdout[-2000:]


def test_no_module_imports_itself_back():
    """No import cycle between any two modules, lazy imports included (grimp sees those too)."""
    import grimp

    graph = grimp.build_graph("medviewer")
    modules = sorted(graph.modules)
    imports = {m: set(graph.find_modules_directly_imported_by(m)) for m in modules}
    cycles = []
    for module in modules:
        for other in imports[module]:
            if other != module and graph.chain_exists(importer=other, imported=module):
                cycles.append(graph.find_shortest_chain(importer=other, imported=module) + (other,))
    assert not cycles, cycles[:5]
