"""``crownscan bench crown``: the crown paths on the IF-Net benchmark model, timed on this machine.

The scan is a closed crown-sized shape (an ellipsoid of 14 x 10 x 8 mm in the model's 20 mm
frame), the model the IF-Net ShapeNet128Vox benchmark model (:mod:`app.core.crown.bench_model`,
built into the user cache on first use). Rows, each in a fresh process so that its peak
memory is its own:

- ``dense one graph``: the handover's way, the baseline. The graph (encoder inside) runs on
  :data:`BASELINE_BATCHES` of its batches of grid points; its decoder seconds per point times
  ``resolution^3``, plus any separate encoder run and the fast row's pre- and post-processing,
  gives its end-to-end time (**extrapolated**, labelled so; session creation left out);
- ``split + dense``: encoder once, gather-sampler decoder, extrapolated the same way;
- ``split + coarse-to-fine``: the fast path, run end to end (``generate_crown``);
- ``int8 decoder``: the same with ``decoder_int8``, end to end.

The dense batches are taken from the grid planes through the middle of the crown, so their
exact values also check the coarse-to-fine grids there (``differing`` cells); the int8 grid is
compared with the fp32 one over the whole grid.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BASELINE_BATCHES = 3
ROWS = ("dense one graph", "split + dense", "split + coarse-to-fine", "int8 decoder")
_PRE_POST = ("frame", "voxelize", "grid", "extract", "postprocess", "smooth", "checks")


def crown_scan():
    """The benchmark scan: a closed ellipsoid of 14 x 10 x 8 mm (a crown's size), in mm."""
    import trimesh

    from app.core.crown.meshio import Mesh

    sphere = trimesh.creation.icosphere(subdivisions=5)
    return Mesh(vertices=sphere.vertices * np.array([7.0, 5.0, 4.0]) + 10.0,
                faces=np.asarray(sphere.faces))  # fmt: skip


def _spec(row: str):
    from app.core.crown.bench_model import ensure
    from app.core.manifest import load_manifest

    spec = load_manifest(ensure(None, "native"))
    gen = spec.generation
    if row == "dense one graph":
        gen = dataclasses.replace(gen, fast_decoder=False)
    if row == "int8 decoder":
        gen = dataclasses.replace(gen, decoder_int8=True)
    return dataclasses.replace(spec, generation=gen)


def _middle_planes(res: int, count: int) -> np.ndarray:
    """Flat [x, y, z] indices of ``count`` grid points in the x-planes around the middle."""
    start = (res // 2) * res * res - count // 2
    return np.arange(start, start + count)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _dense_row(row: str, resolution: int, pool, folder: Path) -> dict:
    """Run the row's evaluator on BASELINE_BATCHES batches of grid points around the middle."""
    from app.core.crown.decode import CrownEvaluator
    from app.core.crown.frame import make_frame
    from app.core.crown.pipeline import compatible_resolution
    from app.core.crown.surface import grid_points
    from app.core.crown.voxelize import voxelize

    spec = _spec(row)
    res = compatible_resolution(resolution, spec.generation.coarse_resolution)
    scan = crown_scan()
    frame = make_frame(scan.vertices, spec.frame)
    voxels = voxelize(frame.to_unit(scan.vertices), scan.faces, spec.voxel_resolution,
                      spec.voxelization)  # fmt: skip
    ev = CrownEvaluator(spec, pool, voxels)
    flat = _middle_planes(res, BASELINE_BATCHES * ev.batch_points)
    values = ev.evaluate(grid_points(res, flat))
    np.save(folder / f"{row}.npy", np.stack([flat.astype(np.float64), values]))
    return {"row": row, "path": ev.plan.label, "points": int(flat.size),
            "batch": ev.batch_points, "batches": ev.batches, "encode_s": ev.encode_ms / 1000,
            "decode_s": ev.decode_ms / 1000}  # fmt: skip


def _full_row(row: str, resolution: int, pool, folder: Path) -> dict:
    """The whole pipeline on the benchmark scan, stage by stage."""
    from app.core.crown.pipeline import generate_crown

    spec = _spec(row)
    t0 = time.perf_counter()
    result = generate_crown(crown_scan(), spec, pool, resolution=resolution, keep_grid=True)
    total = time.perf_counter() - t0
    info = result.report.info
    np.save(folder / f"{row}.npy", result.grid)
    stages = {k: v / 1000 for k, v in result.report.timings_ms.items()}
    return {"row": row, "path": info["decoder_path"], "points": info["decoder_points"],
            "batch": info["batch_points"], "batches": info["batches"], "total_s": total,
            "stages_s": stages, "pre_post_s": sum(stages.get(k, 0.0) for k in _PRE_POST),
            "resolution": info["resolution"]}  # fmt: skip


def run_row(row: str, resolution: int, threads: int, folder: Path) -> dict:
    """One row in this process (see module docstring); its arrays go to ``folder``."""
    from app.core.runtime import RuntimeConfig, SessionPool

    pool = SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=threads))
    if row in ("dense one graph", "split + dense"):
        out = _dense_row(row, resolution, pool, folder)
    else:
        out = _full_row(row, resolution, pool, folder)
    out["peak_rss_mb"] = _peak_mb()
    return out


def _prepare() -> None:
    """Build the model and its split and int8 parts once, outside the timed rows."""
    from app.core.crown.decoder_plan import plan_decoder
    from app.core.crown.int8_decoder import int8_copy

    spec = _spec("split + coarse-to-fine")
    plan = plan_decoder(spec.onnx, "x", "p", spec.voxel_resolution)
    if plan.decoder is not None:
        int8_copy(plan.decoder)


def _compare(folder: Path, rows: dict[str, dict]) -> None:
    """Differing occupancy cells: dense rows' points against the coarse-to-fine grids, and
    the int8 grid against the fp32 one."""
    from app.core.crown.decode import decision_level

    spec = _spec("split + coarse-to-fine")
    level = decision_level(spec.generation.threshold, spec.output_kind)
    fast = np.load(folder / "split + coarse-to-fine.npy")
    int8 = np.load(folder / "int8 decoder.npy")
    for name in ("dense one graph", "split + dense"):
        flat, values = np.load(folder / f"{name}.npy")
        idx = flat.astype(np.int64)
        rows[name]["differing_vs_fast"] = int(((fast.reshape(-1)[idx] > level)
                                               != (values > level)).sum())  # fmt: skip
    flat, values = np.load(folder / "dense one graph.npy")
    idx = flat.astype(np.int64)
    rows["int8 decoder"]["differing_vs_dense"] = int(((int8.reshape(-1)[idx] > level)
                                                      != (values > level)).sum())  # fmt: skip
    rows["int8 decoder"]["differing_vs_fp32"] = int(((int8 > level) != (fast > level)).sum())
    rows["int8 decoder"]["cells"] = int(fast.size)
    rows["split + coarse-to-fine"]["occupied"] = int((fast > level).sum())


def crown_bench(resolution: int = 256, threads: int = 0) -> dict:
    """Run every row in its own process and return the figures (see module docstring).

    ``crown`` holds the headline: ``baseline_s`` (dense one graph, extrapolated), ``fast_s``
    (split + coarse-to-fine, end to end), ``speedup``, ``differing_cells`` (fast against the
    dense rows' exact values), ``peak_rss_mb`` and ``pre_post_share`` of the fast row.
    """
    _prepare()
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="crownscan-bench-") as tmp:
        for row in ROWS:
            cmd = [sys.executable, "-m", "app.core.crown.bench", row, str(resolution),
                   str(threads), tmp]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"bench row '{row}' failed: {tail}")
            rows[row] = json.loads(done.stdout.strip().splitlines()[-1])
        _compare(Path(tmp), rows)
    fast = rows["split + coarse-to-fine"]
    res = fast["resolution"]
    for name in ("dense one graph", "split + dense"):
        r = rows[name]
        r["extrapolated"] = True
        r["model_s"] = r["encode_s"] + r["decode_s"] / r["points"] * resolution**3
        r["pre_post_s"] = fast["pre_post_s"]
        r["total_s"] = r["model_s"] + fast["pre_post_s"]
    baseline = rows["dense one graph"]["total_s"]
    differing = sum(rows[n]["differing_vs_fast"] for n in ("dense one graph", "split + dense"))
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "load_1min": round(os.getloadavg()[0], 2),
            "provider": "CPU",
            "threads": threads or "default",
        },  # fmt: skip
        "resolution": resolution,
        "grid": res,
        "rows": [rows[r] for r in ROWS],
        "baseline_s": baseline,
        "baseline_extrapolated_from_points": rows["dense one graph"]["points"],
        "fast_s": fast["total_s"],
        "speedup": baseline / fast["total_s"],
        "differing_cells": differing,
        "checked_cells": sum(rows[n]["points"] for n in ("dense one graph", "split + dense")),
        "peak_rss_mb": fast["peak_rss_mb"],
        "pre_post_share": fast["pre_post_s"] / fast["total_s"],
        "decoder_points": fast["points"],
        "int8_s": rows["int8 decoder"]["total_s"],
        "int8_differing_cells": rows["int8 decoder"]["differing_vs_fp32"],
    }


def table(crown: dict) -> str:
    """The bench figures as a text table, one row per path."""
    m = crown["machine"]
    lines = [
        f"crown, IF-Net ShapeNet128Vox benchmark model, generation resolution "
        f"{crown['resolution']} (grid {crown['grid']}^3), {m['cpus']} CPUs, load "
        f"{m['load_1min']}, ONNX Runtime CPU, threads {m['threads']}",
        f"{'path':<24}{'total s':>10}{'model s':>9}{'pre+post s':>11}{'points':>10}"
        f"{'batch':>8}{'peak MB':>9}{'differing':>10}",
    ]
    for r in crown["rows"]:
        model = r.get("model_s") or (r["stages_s"].get("encode", 0) + r["stages_s"]["decode"])
        pre_post = r.get("pre_post_s", 0.0)
        label = r["row"] + (" (extrap.)" if r.get("extrapolated") else "")
        diff = r.get("differing_vs_fast", r.get("differing_vs_fp32", 0))
        lines.append(f"{label:<24}{r['total_s']:>10.1f}{model:>9.1f}{pre_post:>11.1f}"
                     f"{r['points']:>10}{r['batch']:>8}{r['peak_rss_mb']:>9.0f}"
                     f"{diff:>10}")  # fmt: skip
    lines += [
        f"speedup (fast vs dense one graph): {crown['speedup']:.1f}x; pre+post share "
        f"{100 * crown['pre_post_share']:.1f}%; differing cells {crown['differing_cells']} of "
        f"{crown['checked_cells']} checked; int8 vs fp32 differing cells "
        f"{crown['int8_differing_cells']}",
        "(extrap.: timed on the points shown, seconds per point times resolution^3 plus the fast "
        "row's pre+post. differing: dense rows against the fast grid at their points; int8 row "
        "against the fp32 grid over the whole grid)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    name, res_arg, threads_arg, out_dir = sys.argv[1:5]
    print(json.dumps(run_row(name, int(res_arg), int(threads_arg), Path(out_dir))))
