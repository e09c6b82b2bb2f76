"""Crown decoder paths on the IF-Net benchmark model: one graph, split, split + gather sampler.

Each row runs in a fresh process (so its peak memory is its own) with the voxels of a solid
sphere and random unit-cube points, in the batches the memory budget gives that path, and
reports the encoder time (once per batch for the one graph), the decoder time and the peak
resident memory. Parity is checked against the one graph on the first batch.

    python benchmarks/bench_decoder.py [--points 100000] [--sampler native|plain] [--threads 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from app.core.crown.decode import CrownEvaluator  # noqa: E402
from app.core.crown.decoder_plan import plan_decoder  # noqa: E402
from app.core.manifest import load_manifest  # noqa: E402
from app.core.runtime import RuntimeConfig, SessionPool  # noqa: E402
from benchmarks.models import ifnet128  # noqa: E402

ROWS = ("one graph", "split", "split+gather")


def _voxels(r: int) -> np.ndarray:
    g = np.arange(r) / (r - 1) - 0.5
    return ((g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2) < 0.09).astype(
        np.float32
    )


def _row(row: str, sampler: str, points: int, threads: int) -> dict:
    spec = load_manifest(ifnet128.ensure(None, sampler))
    gen = spec.generation
    if row == "one graph":
        spec = dataclasses.replace(spec, generation=dataclasses.replace(gen, fast_decoder=False))
    pool = SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=threads))
    voxels = _voxels(spec.voxel_resolution)
    unit = np.random.default_rng(0).uniform(-0.5, 0.5, (points, 3))
    plan = None
    if row == "split":  # the split without the sampler rewrite: prepared once, then cached
        plan = plan_decoder(spec.onnx, "x", "p", spec.voxel_resolution, rewrite=False)
    ev = CrownEvaluator(spec, pool, voxels, plan=plan)
    values = ev.evaluate(unit)
    encode, decode = ev.encode_ms, ev.decode_ms
    if not ev.plan.split:  # one graph: the encoder runs inside every batch
        probe = CrownEvaluator(spec, pool, voxels)
        probe.evaluate(unit[:1])
        encode = probe.decode_ms * ev.batches
        decode -= encode
    np.save(f"{os.environ['BENCH_OUT']}/{row.replace(' ', '_').replace('+', '_')}.npy", values)
    return {
        "row": row,
        "path": ev.plan.label,
        "batch": ev.batch_points,
        "batches": ev.batches,
        "encode_ms": encode,
        "decode_ms": decode,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--sampler", choices=("native", "plain"), default="native")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: default)")
    ap.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.row:
        print(json.dumps(_row(args.row, args.sampler, args.points, args.threads)))
        return 0

    import tempfile

    manifest = ifnet128.ensure(None, args.sampler)
    plan_decoder(load_manifest(manifest).onnx, "x", "p", ifnet128.RESOLUTION)  # prepare once
    results = []
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "BENCH_OUT": out}
        for row in ROWS:
            cmd = [sys.executable, __file__, "--row", row, "--sampler", args.sampler,
                   "--points", str(args.points), "--threads", str(args.threads)]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        ref = np.load(f"{out}/one_graph.npy")
        diffs = [float(np.abs(np.load(f"{out}/{r.replace(' ', '_').replace('+', '_')}.npy")
                              - ref).max()) for r in ROWS]  # fmt: skip

    print(f"machine: {os.cpu_count()} CPUs (nproc), load {os.getloadavg()[0]:.1f}, ONNX Runtime "
          f"CPU, threads {args.threads or 'default'}; IF-Net ShapeNet128Vox benchmark model "
          f"({args.sampler} sampler, {ifnet128.digest(manifest.with_suffix('.onnx'))}); "
          f"{args.points} points")  # fmt: skip
    head = (f"{'path':<14}{'batch':>8}{'batches':>8}{'encode ms':>11}{'decode ms':>11}"
            f"{'total ms':>10}{'peak MB':>9}{'max|d|':>10}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for r, d in zip(results, diffs, strict=True):
        total = r["encode_ms"] + r["decode_ms"]
        print(f"{r['row']:<14}{r['batch']:>8}{r['batches']:>8}{r['encode_ms']:>11.0f}"
              f"{r['decode_ms']:>11.0f}{total:>10.0f}{r['peak_mb']:>9.0f}{d:>10.1e}")  # fmt: skip
    print("(one graph: its encoder runs in every batch; 'encode ms' is that share, from one extra")
    print(" 1-point run, times the batches. max|d|: against the one graph. Paths as reported:")
    for r in results:
        print(f"  {r['row']}: {r['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
