"""Crown pipeline stage timings on the real sample scan with the identity test model.

Rows: dense generation (the IF-Net way, the baseline) against coarse-to-fine, and the fast
voxelizer against the trimesh reference on the same (smaller) grid.

    python benchmarks/bench_crown.py [--scan PATH] [--voxels 128] [--resolution 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.core.crown.frame import make_frame  # noqa: E402
from app.core.crown.meshio import load_mesh  # noqa: E402
from app.core.crown.pipeline import run_crown  # noqa: E402
from app.core.crown.voxelize import voxelize, voxelize_reference  # noqa: E402
from app.core.manifest import load_manifest  # noqa: E402
from app.core.runtime import RuntimeConfig, SessionPool  # noqa: E402
from tests.onnx_builders import (  # noqa: E402
    crown_manifest,
    identity_crown_model,
    save,
    write_manifest,
)

SAMPLE = ROOT.parent / "shared" / "dental-samples" / "vbcd_1723719_pna.ply"
STAGES = ("load", "frame", "voxelize", "session", "decode", "grid", "extract", "smooth", "write")


def _model(folder: Path, voxels: int, resolution: int, coarse: int | None, stem: str):
    data = crown_manifest(
        folder,
        "identity.onnx",
        voxel_resolution=voxels,
        frame={"mode": "fixed", "size_mm": 45.0, "center": "bbox"},
        generation={
            "resolution": resolution,
            "threshold": 0.5,
            "batch_points": 500_000,
            "coarse_resolution": coarse,
        },
        smoothing={"method": "taubin", "iterations": 10},
    )
    return load_manifest(write_manifest(folder, data, stem))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", type=Path, default=SAMPLE)
    ap.add_argument("--voxels", type=int, default=128)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--reference-grid", type=int, default=40)
    args = ap.parse_args()
    if not args.scan.is_file():
        print(f"scan not present: {args.scan}")
        return 1
    res = args.resolution
    coarse = [c for c in range(max(8, res // 4), 7, -1) if (res - 1) % (c - 1) == 0][:1]
    pool = SessionPool(RuntimeConfig(preference=("cpu",)))
    load_mesh(args.scan)  # warm-up: a cold process also pays ~1.5 s importing trimesh here
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save(identity_crown_model(), folder / "identity.onnx")
        variants = [("dense (baseline)", None)] + [(f"coarse-to-fine from {c}", c) for c in coarse]
        if res % 2 == 0:  # a 2x-per-level pyramid needs an odd grid: show it one point up
            variants.append((f"coarse-to-fine {(res - 1) // 4 + 1}->{res + 1}", "pyramid"))
        for label, c in variants:
            r = res
            if c == "pyramid":
                r, c = res + 1, res // 4 + 1
            model = _model(folder, args.voxels, r, c, f"m{len(rows)}")
            t0 = time.perf_counter()
            result = run_crown(args.scan, folder / "crown.stl", model, pool)
            total = (time.perf_counter() - t0) * 1000.0
            rows.append((f"{label} @ {r}", result, total))

        mesh = load_mesh(args.scan)
        v = make_frame(mesh.vertices, model.frame).to_unit(mesh.vertices)
        vox_rows = []
        for grid in (args.reference_grid, args.voxels):
            t0 = time.perf_counter()
            voxelize(v, mesh.faces, grid, "solid")
            vox_rows.append((grid, (time.perf_counter() - t0) * 1000.0))
        t0 = time.perf_counter()
        voxelize_reference(v, mesh.faces, args.reference_grid, "solid")
        ref_ms = (time.perf_counter() - t0) * 1000.0

    print(f"machine: {os.cpu_count()} CPUs (nproc), ONNX Runtime CPU; scan: {args.scan.name} "
          f"({len(mesh.faces)} faces); voxels {args.voxels}^3; identity model")  # fmt: skip
    head = f"{'run':<34}" + "".join(f"{s:>9}" for s in STAGES) + f"{'total':>9}{'points':>11}"
    print(head)
    print("-" * len(head))
    for label, result, total in rows:
        t = result.report.timings_ms
        cells = "".join(f"{t.get(s, 0.0):>9.0f}" for s in STAGES)
        print(f"{label:<34}{cells}{total:>9.0f}{result.report.info['decoder_points']:>11}")
    base_total, base_points = rows[0][2], rows[0][1].report.info["decoder_points"]
    for label, result, total in rows[1:]:
        pts = result.report.info["decoder_points"]
        print(f"  {label}: {base_total / total:.2f}x faster overall, "
              f"{pts / base_points:.1%} of the dense decoder points")  # fmt: skip
    print("(all times ms; 'grid' = point generation and interpolation outside the model;")
    print(" 'session' = ONNX Runtime session creation, cached after the first run)")
    print()
    print(f"{'voxelizer (solid)':<34}{'grid':>6}{'ms':>10}")
    print(f"{'reference (trimesh, baseline)':<34}{args.reference_grid:>6}{ref_ms:>10.0f}")
    for grid, ms in vox_rows:
        print(f"{'fast':<34}{grid:>6}{ms:>10.0f}")
    print(f"  fast is {ref_ms / vox_rows[0][1]:.0f}x the reference at {args.reference_grid}^3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
