#!/usr/bin/env bash
# Build MedViewer as a one-folder desktop bundle with PyInstaller.
#
#   bash packaging/build.sh [OUT_DIR]
#
# OUT_DIR defaults to build/bundle; the bundle is OUT_DIR/dist/medviewer/ (run OUT_DIR/dist/medviewer/medviewer),
# PyInstaller's work files go to OUT_DIR/work.  PYTHON picks the interpreter (default python3): the bundle
# carries that interpreter's packages, so use the environment MedViewer is installed in.
# Check the result with:  QT_QPA_PLATFORM=offscreen OUT_DIR/dist/medviewer/medviewer --selftest
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${1:-$root/build/bundle}"
python="${PYTHON:-python3}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if ! "$python" -c 'import PyInstaller, sys; sys.exit(int(PyInstaller.__version__.split(".")[0]) < 6)' 2>/dev/null; then
  echo "build.sh: installing PyInstaller 6"
  "$python" -m pip install -q "pyinstaller>=6,<7"
fi

start=$(date +%s)
cd "$root"
"$python" -m PyInstaller --noconfirm --clean --log-level "${PYINSTALLER_LOG_LEVEL:-WARN}" \
  --distpath "$out/dist" --workpath "$out/work" "$here/medviewer.spec"
seconds=$(( $(date +%s) - start ))

bundle="$out/dist/medviewer"
if [[ ! -x "$bundle/medviewer" ]]; then
  echo "build.sh: no executable at $bundle/medviewer" >&2
  exit 1
fi
echo "bundle: $bundle"
echo "executable: $bundle/medviewer"
echo "size: $(du -sh "$bundle" | cut -f1) ($(du -sb "$bundle" | cut -f1) bytes)"
echo "build time: ${seconds} s"
