"""Render ``resources/icons/crownscan.svg`` into a multi-size Windows ``.ico`` for the bundle.

    python packaging/make_icon.py OUT.ico

Run by ``packaging/build`` inside the build environment (PySide6 draws the SVG, Pillow writes
the icon), so the repository keeps only the SVG.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SIZES = (16, 24, 32, 48, 64, 128, 256)


def main(out: Path) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PIL import Image
    from PySide6 import QtCore, QtGui, QtSvg

    app = QtGui.QGuiApplication.instance() or QtGui.QGuiApplication([sys.argv[0]])
    svg = Path(__file__).resolve().parents[1] / "resources" / "icons" / "crownscan.svg"
    renderer = QtSvg.QSvgRenderer(str(svg))
    if not renderer.isValid():
        print(f"error: {svg}: not a valid SVG", file=sys.stderr)
        return 1
    size = SIZES[-1]
    image = QtGui.QImage(size, size, QtGui.QImage.Format.Format_RGBA8888)
    image.fill(QtCore.Qt.GlobalColor.transparent)
    painter = QtGui.QPainter(image)
    renderer.render(painter)
    painter.end()
    pixels = Image.frombuffer("RGBA", (size, size), bytes(image.constBits()), "raw", "RGBA", 0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    pixels.save(out, format="ICO", sizes=[(s, s) for s in SIZES])
    del app
    print(f"icon written to {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python packaging/make_icon.py OUT.ico", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(Path(sys.argv[1])))
