"""Draw MedViewer's icon set into ``resources/icons/``: the SVG, PNGs, a Windows ``.ico`` and a macOS ``.icns``.

The icon is an axial chest CT slice (body, two lungs, spine) on a blue rounded square, with an amber
ring around a nodule: the viewer and its assistant.  The SVG is the source; the PNGs are rendered from
it with Qt's SVG renderer (offscreen, no display needed), the ``.ico`` and ``.icns`` packed by Pillow.

    python3 packaging/make_icons.py            # rewrite resources/icons/
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

SIZES = (16, 32, 48, 64, 128, 256)
ICNS_SIZES = (16, 32, 64, 128, 256, 512, 1024)

SVG = """<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256" viewBox="0 0 256 256">
  <title>MedViewer</title>
  <defs>
    <linearGradient id="tile" x1="0" y1="0" x2="0" y2="1">
      <stop offset="0" stop-color="#2f74c0"/>
      <stop offset="1" stop-color="#173a63"/>
    </linearGradient>
    <radialGradient id="lung" cx="0.5" cy="0.45" r="0.6">
      <stop offset="0" stop-color="#3b4a5c"/>
      <stop offset="1" stop-color="#1b2430"/>
    </radialGradient>
  </defs>
  <rect x="8" y="8" width="240" height="240" rx="52" fill="url(#tile)"/>
  <ellipse cx="128" cy="134" rx="100" ry="76" fill="#e8edf3"/>
  <path d="M 112 86 C 86 72 52 88 46 122 C 40 152 52 182 80 188 C 102 192 112 176 112 154 Z"
        fill="url(#lung)"/>
  <path d="M 144 86 C 170 72 204 88 210 122 C 216 152 204 182 176 188 C 154 192 144 176 144 154 Z"
        fill="url(#lung)"/>
  <circle cx="128" cy="192" r="13" fill="#ffffff" stroke="#b8c4d2" stroke-width="4"/>
  <circle cx="84" cy="128" r="10" fill="#f6b24a"/>
  <circle cx="84" cy="128" r="24" fill="none" stroke="#f6b24a" stroke-width="7"/>
</svg>
"""


def render_png(svg: bytes, size: int) -> bytes:
    """The SVG rendered at ``size`` x ``size`` pixels as PNG bytes (Qt, offscreen)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt  # noqa: TID251 - a build tool, not the app
    from PySide6.QtGui import QGuiApplication, QImage, QPainter  # noqa: TID251
    from PySide6.QtSvg import QSvgRenderer  # noqa: TID251

    _app = QGuiApplication.instance() or QGuiApplication([sys.argv[0]])
    renderer = QSvgRenderer(QByteArray(svg))
    if not renderer.isValid():
        raise SystemExit("make_icons: the SVG does not parse")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter)
    painter.end()
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    image.save(buffer, "PNG")
    buffer.close()
    return bytes(data)


def main(out: Path) -> None:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    svg = SVG.encode("utf-8")
    (out / "medviewer.svg").write_bytes(svg)
    images = {}
    for size in sorted(set(SIZES) | set(ICNS_SIZES)):
        png = render_png(svg, size)
        images[size] = Image.open(io.BytesIO(png)).convert("RGBA")
        if size in SIZES:
            (out / f"medviewer-{size}.png").write_bytes(png)
    images[256].save(out / "medviewer.ico", sizes=[(s, s) for s in SIZES],
                     append_images=[images[s] for s in SIZES if s != 256])
    images[1024].save(out / "medviewer.icns", append_images=[images[s] for s in ICNS_SIZES if s != 1024])
    for path in sorted(out.iterdir()):
        print(f"{path}  {path.stat().st_size} bytes")


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else root / "resources" / "icons")
