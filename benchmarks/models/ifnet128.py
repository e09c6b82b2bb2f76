"""Command-line entry for the IF-Net ShapeNet128Vox benchmark crown model.

The recipe itself is :mod:`app.core.crown.bench_model` (inside the app, so that
``crownscan bench crown`` builds it from an installed copy too).

    python -m benchmarks.models.ifnet128 [FOLDER]   # build (or find) it, print the manifest path
"""

from __future__ import annotations

import sys
from pathlib import Path

from app.core.crown.bench_model import RESOLUTION, build, digest, ensure  # noqa: F401

if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    for kind in ("native", "plain"):
        print(ensure(target, kind))
