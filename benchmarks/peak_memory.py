"""Peak memory of ``crownscan segment`` and ``crownscan crown`` on the largest inputs accepted.

Each run is a fresh ``python -m app`` process; its peak resident set is the ``ru_maxrss`` that
``os.wait4`` returns for it (Linux: KiB), so
the figure covers imports, model sessions and the whole pipeline. Inputs are synthetic: a
noise-textured RGB JPEG of the given megapixels, and a binary STL height field of the given
triangle count (a 20 x 20 mm patch with a bump, so the demo crown model finds a surface).

    python benchmarks/peak_memory.py [--megapixels 24 50] [--triangles 1000000 3000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _image(path: Path, megapixels: float) -> Path:
    from PIL import Image

    w = int((megapixels * 1e6 * 4 / 3) ** 0.5)
    h = int(megapixels * 1e6 / w)
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(small, 16, 0), 16, 1)[:h, :w]
    Image.fromarray(big).save(path, quality=90)
    return path


def _scan(path: Path, triangles: int) -> Path:
    n = int((triangles / 2) ** 0.5) + 1
    g = np.linspace(-10.0, 10.0, n)
    x, y = np.meshgrid(g, g, indexing="ij")
    z = 4.0 * np.exp(-(x**2 + y**2) / 20.0)
    v = np.stack([x, y, z], -1).reshape(-1, 3).astype(np.float32)
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel(), i[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    rec = np.zeros(len(faces), dtype=[("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("a", "<u2")])
    rec["v"] = v[faces]
    with open(path, "wb") as f:
        f.write(b"peak memory scan".ljust(80, b" "))
        f.write(np.uint32(len(faces)).tobytes())
        f.write(rec.tobytes())
    return path


def _peak_mb(args: list[str], log: Path) -> tuple[float, int, str]:
    with open(log, "w+") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", *args, "--providers", "cpu", "--threads", "2"],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        lines = out.read().strip().splitlines()
    return usage.ru_maxrss / 1024, proc.returncode, lines[-1] if lines else ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--megapixels", type=float, nargs="*", default=[])
    p.add_argument("--triangles", type=int, nargs="*", default=[])
    args = p.parse_args()
    print("| input | peak RSS (MB) | exit | last line |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for mp in sorted(args.megapixels):
            image = _image(folder / f"scan_{mp:g}mp.jpg", mp)
            peak, code, line = _peak_mb(
                ["segment", str(image), "-o", str(folder / "m.png")], folder / "log"
            )
            print(f"| image {mp:g} MP | {peak:.0f} | {code} | {line[:80]} |")
        for n in sorted(args.triangles):
            scan = _scan(folder / f"scan_{n}.stl", n)
            peak, code, line = _peak_mb(
                ["crown", str(scan), "-o", str(folder / "c.stl")], folder / "log"
            )
            print(f"| scan {n:,} triangles | {peak:.0f} | {code} | {line[:80]} |")


if __name__ == "__main__":
    main()
