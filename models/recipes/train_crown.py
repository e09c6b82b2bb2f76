"""Train, export and evaluate the demo crown model, in one command.

    python -m models.recipes.train_crown --threads 1

Steps: generate synthetic cases (cached per seed in models/recipes/work/), voxelize each
context with the runtime's own frame and voxelizer (``app.core.crown``), train :class:`CrownNet`
on occupancy of query points (near the crown surface and uniform in the cube), export ONNX with
the plain-op trilinear sampler, check sampler and ONNX parity, evaluate volumetric IoU and
Chamfer distance on held-out seeds against the mean-crown baselines, and write
``models/crown_demo.onnx``, ``models/crown_demo.json`` and ``models/recipes/crown_metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import map_coordinates
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes
from torch.nn import functional as F

from app.core.crown.frame import make_frame
from app.core.crown.voxelize import voxelize
from app.core.manifest import Frame
from models.recipes.crown_net import CrownNet, parameter_count, reference_sample, trilinear_sample
from models.recipes.synth_cases import Case, make_case

REPO = Path(__file__).resolve().parents[2]
WORK = Path(__file__).resolve().parent / "work"
DATA_VERSION = "v1"

RESOLUTION = 48
SIZE_MM = 20.0
VOXEL_MODE = "surface"
FRAME = Frame(mode="fixed", size_mm=SIZE_MM, center="bbox")
EVAL_GRID = 64
TRAIN_SEED0 = 0
HELDOUT_SEED0 = 1_000_000


@dataclass
class Sample:
    """One training/evaluation case in the model's frame."""

    vox: np.ndarray  # (R, R, R) bool, [x, y, z]
    points: np.ndarray  # (M, 3) float32 unit-cube points
    occ: np.ndarray  # (M,) bool
    grid_occ: np.ndarray  # (G, G, G) bool: true crown on the evaluation grid
    prep_offset: np.ndarray  # (3,) prep centre in unit coords of this frame
    tooth_type: str
    margin_offset: np.ndarray | None = None  # (3,) margin centre (the baselines' anchor), unit


def eval_grid_points(g: int = EVAL_GRID) -> np.ndarray:
    """The (g^3, 3) unit-cube grid, [x, y, z] order, x slowest."""
    ax = np.linspace(-0.5, 0.5, g)
    gx, gy, gz = np.meshgrid(ax, ax, ax, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1)


def to_ifnet(points_unit: np.ndarray) -> np.ndarray:
    """Unit-cube (x, y, z) -> the model's input order and scale, 2*(z, y, x)."""
    return (2.0 * points_unit[..., ::-1]).astype(np.float32)


def query_points(case: Case, frame, rng: np.random.Generator, n: int) -> np.ndarray:
    """Half tight around the crown surface (sigma 0.3 mm), 30 % looser (1.5 mm), 20 % uniform."""
    n_tight, n_loose = n // 2, (3 * n) // 10
    n_uni = n - n_tight - n_loose
    surf_idx = rng.integers(0, len(case.crown.faces), n_tight + n_loose)
    tri = case.crown.triangles[surf_idx]
    uv = rng.random((len(tri), 2))
    flip = uv.sum(1) > 1
    uv[flip] = 1 - uv[flip]
    on = tri[:, 0] + uv[:, :1] * (tri[:, 1] - tri[:, 0]) + uv[:, 1:] * (tri[:, 2] - tri[:, 0])
    sig = np.r_[np.full(n_tight, 0.3), np.full(n_loose, 1.5)][:, None]
    near = frame.to_unit(on + rng.normal(size=on.shape) * sig)
    uni = rng.uniform(-0.5, 0.5, (n_uni, 3))
    return np.clip(np.concatenate([near, uni]), -0.5, 0.5)


def build_sample(seed: int, n_points: int) -> Sample:
    """Generate one case and turn it into model inputs and targets (runtime frame + voxelizer)."""
    case = make_case(seed, context_spacing=0.3, crown_spacing=0.15)
    frame = make_frame(case.context.vertices, FRAME)
    vox = voxelize(frame.to_unit(case.context.vertices), case.context.faces, RESOLUTION, VOXEL_MODE)
    rng = np.random.default_rng(seed + 12345)
    pts = query_points(case, frame, rng, n_points)
    occ = case.crown_inside(frame.to_mm(pts))
    grid_occ = case.crown_inside(frame.to_mm(eval_grid_points())).reshape((EVAL_GRID,) * 3)
    return Sample(
        vox=vox,
        points=pts.astype(np.float32),
        occ=occ,
        grid_occ=grid_occ,
        prep_offset=frame.to_unit(case.prep_center),
        tooth_type=case.tooth_type,
    )


def load_samples(seeds: list[int], n_points: int, label: str) -> list[Sample]:
    """Build (or read from the cache) one sample per seed."""
    cache = WORK / f"crown_{DATA_VERSION}_r{RESOLUTION}_{VOXEL_MODE}_s{int(SIZE_MM)}"
    cache.mkdir(parents=True, exist_ok=True)
    out = []
    t0 = time.time()
    for i, seed in enumerate(seeds):
        path = cache / f"{seed}_{n_points}.npz"
        if path.exists():
            z = np.load(path)
            s = Sample(
                vox=np.unpackbits(z["vox"])[: RESOLUTION**3]
                .reshape((RESOLUTION,) * 3)
                .astype(bool),
                points=z["points"],
                occ=z["occ"],
                grid_occ=np.unpackbits(z["grid"])[: EVAL_GRID**3]
                .reshape((EVAL_GRID,) * 3)
                .astype(bool),
                prep_offset=z["prep"],
                tooth_type=str(z["type"]),
            )
        else:
            s = build_sample(seed, n_points)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(
                tmp,
                vox=np.packbits(s.vox),
                points=s.points,
                occ=s.occ,
                grid=np.packbits(s.grid_occ),
                prep=s.prep_offset,
                type=s.tooth_type,
            )
            os.replace(tmp, path)
        # the margin centre from the case's layout (no meshing): where the baselines are placed
        layout = make_case(seed, build_meshes=False)
        frame_center = layout.prep_center - s.prep_offset * SIZE_MM
        s.margin_offset = (layout.margin_center - frame_center) / SIZE_MM
        out.append(s)
        if (i + 1) % 50 == 0:
            print(f"  {label}: {i + 1}/{len(seeds)} cases ({time.time() - t0:.0f} s)", flush=True)
    return out


def train(
    model: CrownNet,
    samples: list[Sample],
    steps: int,
    batch: int,
    points: int,
    lr: float,
    seed: int,
) -> list[float]:
    """Adam with cosine decay; each step draws ``batch`` cases, random x/y mirror flips, and
    ``points`` of each case's stored query points."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    warm = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        return 0.01 + 0.99 * 0.5 * (1.0 + np.cos(np.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    vox = torch.from_numpy(np.stack([s.vox for s in samples]).astype(np.float32))
    pts = [torch.from_numpy(s.points) for s in samples]
    occ = [torch.from_numpy(s.occ.astype(np.float32)) for s in samples]
    model.train()
    model.use_reference_sampler = True  # grid_sample trains faster; export uses the plain ops
    losses = []
    t0 = time.time()
    for step in range(steps):
        ids = rng.choice(len(samples), batch, replace=False)
        xs, ps, ys = [], [], []
        for i in ids:
            pick = torch.from_numpy(rng.choice(len(pts[i]), points, replace=False))
            x, p = vox[i], pts[i][pick].clone()
            if rng.random() < 0.5:  # mirror x (mesial <-> distal)
                x, p[:, 0] = x.flip(0), -p[:, 0]
            if rng.random() < 0.5:  # mirror y (buccal <-> lingual)
                x, p[:, 1] = x.flip(1), -p[:, 1]
            xs.append(x)
            ps.append(2.0 * p.flip(-1))
            ys.append(occ[i][pick])
        logits = model(torch.stack(xs), torch.stack(ps))
        loss = F.binary_cross_entropy_with_logits(logits, torch.stack(ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 50 == 0 or step == 0:
            print(
                f"  step {step + 1}/{steps} loss {np.mean(losses[-50:]):.4f} "
                f"({time.time() - t0:.0f} s)",
                flush=True,
            )
    model.use_reference_sampler = False
    model.eval()
    return losses


@torch.no_grad()
def predict_grid(model: CrownNet, vox: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """Logits of the model on the evaluation grid, (G, G, G); grid_sample inside (the plain-op
    sampler gives the same numbers, checked at export, but is slower in PyTorch)."""
    model.use_reference_sampler = True
    feats = model.encode(torch.from_numpy(vox.astype(np.float32))[None])
    p = torch.from_numpy(to_ifnet(eval_grid_points()))[None]
    out = [model.decode(feats, p[:, i : i + chunk]) for i in range(0, p.shape[1], chunk)]
    model.use_reference_sampler = False
    return torch.cat(out, 1)[0].numpy().reshape((EVAL_GRID,) * 3)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def grid_surface_points(occ_or_field: np.ndarray, level: float, n: int, rng) -> np.ndarray | None:
    """Points on the marching-cubes surface of a grid in unit coords (padded so it closes)."""
    g = occ_or_field.shape[0]
    vol = np.pad(occ_or_field.astype(np.float32), 1, constant_values=level - 1e3)
    if vol.max() <= level or vol.min() >= level:
        return None
    verts, faces, _, _ = marching_cubes(vol, level=level)
    verts = (verts - 1.0) / (g - 1) - 0.5
    tri = verts[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    idx = rng.choice(len(tri), n, p=area / area.sum())
    uv = rng.random((n, 2))
    flip = uv.sum(1) > 1
    uv[flip] = 1 - uv[flip]
    t = tri[idx]
    return t[:, 0] + uv[:, :1] * (t[:, 1] - t[:, 0]) + uv[:, 1:] * (t[:, 2] - t[:, 0])


def chamfer_mm(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Symmetric mean nearest-neighbour distance between two point sets given in unit coords."""
    if a is None or b is None:
        return float("nan")
    da = cKDTree(b).query(a)[0].mean()
    db = cKDTree(a).query(b)[0].mean()
    return float(0.5 * (da + db) * SIZE_MM)


def mean_crowns(train: list[Sample]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Baselines from training crowns: mean occupancy in the context frame; in a frame centred
    on each case's margin centre (to be placed on a new case's preparation at its margin
    centre); and the latter per tooth type (a lab knows the tooth number, so this is the stronger
    simple baseline)."""
    in_frame = np.mean([s.grid_occ for s in train], axis=0)
    g = EVAL_GRID
    step = 1.0 / (g - 1)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for s in train:
        # resample the true crown, shifted so the preparation sits at the grid centre
        coords = (eval_grid_points() + s.margin_offset + 0.5) / step
        occ = map_coordinates(s.grid_occ.astype(np.float32), coords.T, order=1).reshape((g,) * 3)
        sums[s.tooth_type] = sums.get(s.tooth_type, 0.0) + occ
        counts[s.tooth_type] = counts.get(s.tooth_type, 0) + 1
    on_prep = sum(sums.values()) / len(train)
    by_type = {t: sums[t] / counts[t] for t in sums}
    return in_frame, on_prep, by_type


def place_on_prep(mean_on_prep: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """A margin-centred mean crown placed at ``anchor`` (unit coords) on the evaluation grid."""
    g = EVAL_GRID
    coords = (eval_grid_points() - anchor + 0.5) * (g - 1)
    return map_coordinates(mean_on_prep, coords.T, order=1).reshape((g, g, g))


def evaluate(model: CrownNet, train: list[Sample], held: list[Sample]) -> dict:
    rng = np.random.default_rng(0)
    in_frame, on_prep, by_type_mean = mean_crowns(train)
    rows = []
    for s in held:
        logits = predict_grid(model, s.vox)
        truth = grid_surface_points(s.grid_occ, 0.5, 20000, rng)
        placed = place_on_prep(on_prep, s.margin_offset)
        typed = place_on_prep(by_type_mean[s.tooth_type], s.margin_offset)
        rows.append(
            {
                "tooth_type": s.tooth_type,
                "model_iou": iou(logits > 0, s.grid_occ),
                "baseline_frame_iou": iou(in_frame >= 0.5, s.grid_occ),
                "baseline_prep_iou": iou(placed >= 0.5, s.grid_occ),
                "baseline_prep_type_iou": iou(typed >= 0.5, s.grid_occ),
                "model_chamfer_mm": chamfer_mm(grid_surface_points(logits, 0.0, 20000, rng), truth),
                "baseline_frame_chamfer_mm": chamfer_mm(
                    grid_surface_points(in_frame, 0.5, 20000, rng), truth
                ),
                "baseline_prep_chamfer_mm": chamfer_mm(
                    grid_surface_points(placed, 0.5, 20000, rng), truth
                ),
                "baseline_prep_type_chamfer_mm": chamfer_mm(
                    grid_surface_points(typed, 0.5, 20000, rng), truth
                ),
            }
        )
    keys = [k for k in rows[0] if k != "tooth_type"]
    summary = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    by_type = {}
    for t in sorted({r["tooth_type"] for r in rows}):
        sel = [r for r in rows if r["tooth_type"] == t]
        by_type[t] = {"cases": len(sel)} | {
            k: float(np.nanmean([r[k] for r in sel]))
            for k in ("model_iou", "baseline_prep_iou", "baseline_prep_type_iou")
        }
    return {"summary": summary, "by_tooth_type": by_type, "cases": rows}


def check_sampler(seed: int = 0) -> float:
    """Plain-op trilinear sampler vs grid_sample(align_corners=True), max abs difference."""
    g = torch.Generator().manual_seed(seed)
    vol = torch.randn(2, 5, 12, 9, 7, generator=g)
    p = torch.rand(2, 4000, 3, generator=g) * 2.0 - 1.0
    inside = (trilinear_sample(vol, p) - reference_sample(vol, p)).abs().max()
    zeros_pad = F.grid_sample(vol, p[:, :, None, None], align_corners=True)[:, :, :, 0, 0]
    default = (trilinear_sample(vol, p) - zeros_pad).abs().max()
    return float(max(inside, default))


def export_onnx(model: CrownNet, path: Path, sample: Sample) -> dict:
    """Export with the plain-op sampler, dynamic N; compare onnxruntime with torch."""
    import onnx
    import onnxruntime as ort

    model.eval()
    model.use_reference_sampler = False
    x = torch.from_numpy(sample.vox.astype(np.float32))[None]
    p = torch.from_numpy(to_ifnet(sample.points[:5000]))[None]
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(
        model,
        (x, p),
        str(tmp),
        input_names=["x", "p"],
        output_names=["out"],
        dynamic_axes={"p": {1: "n"}, "out": {1: "n"}},
        opset_version=17,
        dynamo=False,
    )
    graph = onnx.load(str(tmp))
    onnx.checker.check_model(graph)
    ops = sorted({n.op_type for n in graph.graph.node})
    if "GridSample" in ops:
        raise RuntimeError("exported graph contains GridSample")
    os.replace(tmp, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model(x, p).numpy()
        model.use_reference_sampler = True
        ref_gs = model(x, p).numpy()
        model.use_reference_sampler = False
    got = sess.run(["out"], {"x": x.numpy(), "p": p.numpy()})[0]
    p2 = torch.from_numpy(to_ifnet(sample.points[:777]))[None]
    got2 = sess.run(["out"], {"x": x.numpy(), "p": p2.numpy()})[0]
    with torch.no_grad():
        ref2 = model(x, p2).numpy()
    return {
        "ops": ops,
        "onnx_vs_torch_max_abs": float(max(np.abs(got - ref).max(), np.abs(got2 - ref2).max())),
        "plain_vs_grid_sample_model_max_abs": float(np.abs(ref - ref_gs).max()),
        "bytes": path.stat().st_size,
    }


def write_manifest(path: Path, resolution: int, coarse: int) -> None:
    manifest = {
        "kind": "crown",
        "name": "Demo crown model (synthetic training data)",
        "version": "1",
        "onnx": "crown_demo.onnx",
        "inputs": {"voxels": "x", "points": "p"},
        "output": "out",
        "output_kind": "logits",
        "voxel_resolution": RESOLUTION,
        "voxelization": VOXEL_MODE,
        "frame": {"mode": "fixed", "size_mm": SIZE_MM, "center": "bbox"},
        "point_convention": "ifnet",
        "generation": {
            "resolution": resolution,
            "coarse_resolution": coarse,
            "threshold": 0.5,
            "batch_points": 100000,
        },
        "smoothing": {"method": "taubin", "iterations": 10},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--train-cases", type=int, default=400)
    ap.add_argument("--heldout-cases", type=int, default=50)
    ap.add_argument("--points-per-case", type=int, default=20000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--points", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--channels", type=str, default="8,16,32,32", help="conv stage widths")
    ap.add_argument("--hidden", type=int, default=128, help="decoder MLP width")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-only", action="store_true", help="only build the cached cases")
    ap.add_argument(
        "--eval-only",
        action="store_true",
        help="re-evaluate the last trained weights (work/crown_demo.pt) and update the metrics",
    )
    ap.add_argument("--out", type=Path, default=REPO / "models")
    ap.add_argument(
        "--metrics", type=Path, default=Path(__file__).resolve().parent / "crown_metrics.json"
    )
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    times = {}
    t = time.time()
    train_s = load_samples(
        list(range(TRAIN_SEED0, TRAIN_SEED0 + args.train_cases)), args.points_per_case, "train"
    )
    held = load_samples(
        list(range(HELDOUT_SEED0, HELDOUT_SEED0 + args.heldout_cases)),
        args.points_per_case,
        "held-out",
    )
    times["data_s"] = time.time() - t
    print(f"data ready: {len(train_s)} train, {len(held)} held-out ({times['data_s']:.0f} s)")
    if args.data_only:
        return 0

    channels = tuple(int(c) for c in args.channels.split(","))
    model = CrownNet(channels=channels, convs=(1, 1, 2, 2), hidden=args.hidden)
    if args.eval_only:
        model.load_state_dict(torch.load(WORK / "crown_demo.pt"))
        model.eval()
        t = time.time()
        metrics = evaluate(model, train_s, held)
        result = json.loads(args.metrics.read_text(encoding="utf-8"))
        result["seconds"]["eval_s"] = time.time() - t
        result["evaluated_by"] = "python -m models.recipes.train_crown " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        result["heldout"] = metrics["summary"]
        result["heldout_by_tooth_type"] = metrics["by_tooth_type"]
        result["heldout_cases_detail"] = metrics["cases"]
        args.metrics.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(json.dumps({"heldout": metrics["summary"]}, indent=2))
        return 0
    t = time.time()
    losses = train(model, train_s, args.steps, args.batch, args.points, args.lr, args.seed)
    times["train_s"] = time.time() - t

    sampler_err = check_sampler()
    if sampler_err > 1e-5:
        raise RuntimeError(f"plain-op sampler differs from grid_sample by {sampler_err}")
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_path = args.out / "crown_demo.onnx"
    export = export_onnx(model, onnx_path, held[0])
    if export["onnx_vs_torch_max_abs"] > 1e-3:
        raise RuntimeError(f"ONNX differs from torch by {export['onnx_vs_torch_max_abs']}")
    write_manifest(args.out / "crown_demo.json", resolution=129, coarse=33)
    torch.save(model.state_dict(), WORK / "crown_demo.pt")

    t = time.time()
    metrics = evaluate(model, train_s, held)
    times["eval_s"] = time.time() - t
    result = {
        "command": "python -m models.recipes.train_crown "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "evaluated_by": "the same command",
        "torch": torch.__version__,
        "machine": f"{platform.machine()}, {args.threads} thread(s)",
        "data": {
            "generator": "models/recipes/synth_cases.py " + DATA_VERSION,
            "train_cases": len(train_s),
            "train_seeds": [TRAIN_SEED0, TRAIN_SEED0 + args.train_cases - 1],
            "heldout_cases": len(held),
            "heldout_seeds": [HELDOUT_SEED0, HELDOUT_SEED0 + args.heldout_cases - 1],
            "query_points_per_case": args.points_per_case,
        },
        "model": {
            "voxel_resolution": RESOLUTION,
            "voxelization": VOXEL_MODE,
            "frame_size_mm": SIZE_MM,
            "channels": list(channels),
            "hidden": args.hidden,
            "displacement": float(model.displacements.abs().max()),
            "parameters": parameter_count(model),
            "onnx_bytes": export["bytes"],
            "onnx_ops": export["ops"],
        },
        "training": {
            "steps": args.steps,
            "batch_cases": args.batch,
            "points_per_case_per_step": args.points,
            "lr": args.lr,
            "final_loss_last50": float(np.mean(losses[-50:])),
        },
        "parity": {
            "sampler_vs_grid_sample_max_abs": sampler_err,
            "onnx_vs_torch_max_abs": export["onnx_vs_torch_max_abs"],
            "model_plain_vs_grid_sample_max_abs": export["plain_vs_grid_sample_model_max_abs"],
        },
        "seconds": times,
        "eval_grid": EVAL_GRID,
        "heldout": metrics["summary"],
        "heldout_by_tooth_type": metrics["by_tooth_type"],
        "heldout_cases_detail": metrics["cases"],
    }
    args.metrics.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    s = metrics["summary"]
    print(json.dumps({"seconds": times, "heldout": s}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
