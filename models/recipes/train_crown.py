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
import trimesh
from scipy.ndimage import map_coordinates
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes
from torch.nn import functional as F

from app.core.crown.frame import CaseFrame, FrameTransform, make_frame
from app.core.crown.voxelize import voxelize
from app.core.manifest import Frame
from models.recipes.crown_net import CrownNet, parameter_count, reference_sample, trilinear_sample
from models.recipes.synth_cases import Case, make_case

REPO = Path(__file__).resolve().parents[2]
WORK = Path(__file__).resolve().parent / "work"
DATA_VERSION = "v1"
MODEL_VERSION = "2"  # 1: clean synthetic contexts; 2: + scan artefacts and frame perturbations

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


# ----------------------------------------------------------------------------- augmentation
# Scan artefacts and frame perturbations, applied to the context mesh (mm) before the runtime's
# voxelizer. Each training case gets AUG_VARIANTS perturbed copies beside its clean sample
# (cached like the clean ones); the held-out set gets one perturbed copy per case.
AUG_VERSION = "a1"
AUG_VARIANTS = 2
AUG_SEED_SALT = 4242


@dataclass(frozen=True)
class Artefacts:
    """Parameters of :func:`scan_artefacts` and :func:`perturbed_frame` (mm, degrees)."""

    rot_deg: float = 10.0  # frame rotation about a random axis, angle uniform in [0, rot_deg]
    shift_mm: float = 1.5  # frame centre shift, uniform per axis in [-shift_mm, shift_mm]
    p_uneven: float = 0.6  # re-triangulate 1-3 balls (radius 2.5-6 mm): subdivide or decimate
    decimate_cell_mm: tuple[float, float] = (0.6, 1.2)  # vertex-clustering cell when decimating
    p_noise: float = 0.8  # vertex jitter along the normals
    noise_mm: tuple[float, float] = (0.01, 0.05)  # its standard deviation, drawn per case
    p_holes: float = 0.7  # 1-5 holes: faces within a ball (radius 0.4-2.0 mm) removed
    hole_radius_mm: tuple[float, float] = (0.4, 2.0)
    p_cut: float = 0.6  # 1-2 cutting planes, random normal, 5-10 mm from the frame centre
    cut_dist_mm: tuple[float, float] = (5.0, 10.0)


ARTEFACTS = Artefacts()


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A rotation about a uniformly random axis by an angle uniform in [0, max_deg] (Rodrigues)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a = np.radians(rng.uniform(0.0, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1.0 - np.cos(a)) * (k @ k)


def perturbed_case_frame(
    center: np.ndarray, rng: np.random.Generator, rot_deg: float, shift_mm: float
) -> CaseFrame:
    """The runtime's :class:`CaseFrame` at ``center`` shifted by up to ``shift_mm`` per axis, its
    occlusal (+z) and mesial (+x) directions turned by up to ``rot_deg`` about a random axis: a
    technician's imperfect frame on a scan whose canonical axes are the world axes."""
    r = random_rotation(rng, rot_deg)
    c = np.asarray(center, float) + rng.uniform(-shift_mm, shift_mm, 3)
    return CaseFrame(center=tuple(c), occlusal=tuple(r[:, 2]), mesial=tuple(r[:, 0]))


def _ball_faces(mesh_v: np.ndarray, faces: np.ndarray, c: np.ndarray, r: float) -> np.ndarray:
    cent = mesh_v[faces].mean(axis=1)
    return np.linalg.norm(cent - c, axis=1) < r


def _cluster_vertices(v: np.ndarray, f: np.ndarray, sel: np.ndarray, cell: float):
    """Decimate by vertex clustering: vertices in ``sel`` snap to the mean of their grid cell
    (``cell`` mm); faces that collapse are dropped."""
    idx = np.nonzero(sel)[0]
    if idx.size == 0:
        return v, f
    key = np.floor(v[idx] / cell).astype(np.int64)
    _, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    n = inv.max() + 1
    means = np.zeros((n, 3))
    np.add.at(means, inv, v[idx])
    means /= np.bincount(inv, minlength=n)[:, None]
    remap = np.arange(len(v))
    remap[idx] = len(v) + inv
    v2 = np.concatenate([v, means])
    f2 = remap[f]
    ok = (f2[:, 0] != f2[:, 1]) & (f2[:, 1] != f2[:, 2]) & (f2[:, 0] != f2[:, 2])
    return v2, f2[ok]


def scan_artefacts(
    vertices: np.ndarray,
    faces: np.ndarray,
    center: np.ndarray,
    rng: np.random.Generator,
    cfg: Artefacts = ARTEFACTS,
) -> tuple[np.ndarray, np.ndarray]:
    """An intraoral scan's defects on a clean context mesh (mm): uneven triangle sizes (balls
    subdivided or decimated), vertex noise along the normals, holes (faces removed in balls) and
    cuts at odd places (faces beyond random planes removed). ``center`` is where the frame sits
    (cuts keep it). Returns new (vertices, faces); unreferenced vertices are left in place (the
    voxelizer only reads faces)."""
    v = np.asarray(vertices, np.float64).copy()
    f = np.asarray(faces, np.int64).copy()
    center = np.asarray(center, float)
    if rng.random() < cfg.p_uneven:
        for _ in range(int(rng.integers(1, 4))):
            if len(f) == 0:
                break
            c = v[f[rng.integers(len(f))]].mean(0)
            r = rng.uniform(2.5, 6.0)
            inball = _ball_faces(v, f, c, r)
            if rng.random() < 0.5:
                v, f = trimesh.remesh.subdivide(v, f, face_index=np.nonzero(inball)[0])
                if rng.random() < 0.5:  # twice in the inner part: very small triangles
                    inner = _ball_faces(v, f, c, 0.6 * r)
                    v, f = trimesh.remesh.subdivide(v, f, face_index=np.nonzero(inner)[0])
            else:
                sel = np.zeros(len(v), bool)
                sel[f[inball].ravel()] = True
                v, f = _cluster_vertices(v, f, sel, rng.uniform(*cfg.decimate_cell_mm))
    if rng.random() < cfg.p_noise and len(f):
        normals = trimesh.Trimesh(v, f, process=False).vertex_normals
        v = v + normals * rng.normal(0.0, rng.uniform(*cfg.noise_mm), (len(v), 1))
    if rng.random() < cfg.p_holes:
        for _ in range(int(rng.integers(1, 6))):
            if len(f) == 0:
                break
            c = v[f[rng.integers(len(f))]].mean(0)
            f = f[~_ball_faces(v, f, c, rng.uniform(*cfg.hole_radius_mm))]
    if rng.random() < cfg.p_cut:
        for _ in range(int(rng.integers(1, 3))):
            n = rng.normal(size=3)
            n /= np.linalg.norm(n)
            d = rng.uniform(*cfg.cut_dist_mm)
            f = f[(v[f].mean(axis=1) - center) @ n < d]
    return v, f


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


def make_training_case(seed: int) -> Case:
    return make_case(seed, context_spacing=0.3, crown_spacing=0.15)


def build_sample(seed: int, n_points: int, case: Case | None = None) -> Sample:
    """Generate one case and turn it into model inputs and targets (runtime frame + voxelizer)."""
    case = case or make_training_case(seed)
    frame = make_frame(case.context.vertices, FRAME)
    rng = np.random.default_rng(seed + 12345)
    return _sample_in_frame(
        case, frame, case.context.vertices, case.context.faces, rng, n_points, True
    )


def _sample_in_frame(
    case: Case,
    frame: FrameTransform,
    vertices: np.ndarray,
    faces: np.ndarray,
    rng: np.random.Generator,
    n_points: int,
    with_grid: bool,
) -> Sample:
    """The context (``vertices``, ``faces``) voxelized in ``frame``, query points and their
    occupancy, and (``with_grid``) the evaluation grid's occupancy, all in that frame."""
    vox = voxelize(frame.to_unit(vertices), faces, RESOLUTION, VOXEL_MODE)
    pts = query_points(case, frame, rng, n_points)
    occ = case.crown_inside(frame.to_mm(pts))
    g = EVAL_GRID
    grid_occ = (
        case.crown_inside(frame.to_mm(eval_grid_points())).reshape((g,) * 3)
        if with_grid
        else np.zeros((g,) * 3, bool)
    )
    return Sample(
        vox=vox,
        points=pts.astype(np.float32),
        occ=occ,
        grid_occ=grid_occ,
        prep_offset=frame.to_unit(case.prep_center),
        tooth_type=case.tooth_type,
        margin_offset=frame.to_unit(case.margin_center),
    )


def build_perturbed_sample(
    case: Case, variant: int, n_points: int, with_grid: bool, cfg: Artefacts = ARTEFACTS
) -> Sample:
    """One perturbed copy of a case: the runtime frame turned and shifted
    (:func:`perturbed_case_frame`, built with ``make_frame(..., case=CaseFrame)``), scan
    artefacts on the context (:func:`scan_artefacts`), then the runtime voxelizer; targets and
    the margin anchor in that same frame. Deterministic from (seed, variant)."""
    rng = np.random.default_rng(np.random.SeedSequence([AUG_SEED_SALT, case.seed, variant]))
    base = make_frame(case.context.vertices, FRAME)  # the clean frame's centre (bbox)
    cf = perturbed_case_frame(base.center, rng, cfg.rot_deg, cfg.shift_mm)
    v, f = scan_artefacts(case.context.vertices, case.context.faces, base.center, rng, cfg)
    frame = make_frame(v, FRAME, case=cf)
    return _sample_in_frame(case, frame, v, f, rng, n_points, with_grid)


def _save_sample(path: Path, s: Sample, margin: bool) -> None:
    tmp = path.with_suffix(".tmp.npz")
    extra = {"margin": s.margin_offset} if margin else {}
    np.savez(
        tmp,
        vox=np.packbits(s.vox),
        points=s.points,
        occ=s.occ,
        grid=np.packbits(s.grid_occ),
        prep=s.prep_offset,
        type=s.tooth_type,
        **extra,
    )
    os.replace(tmp, path)


def _load_sample(path: Path) -> Sample:
    z = np.load(path)
    return Sample(
        vox=np.unpackbits(z["vox"])[: RESOLUTION**3].reshape((RESOLUTION,) * 3).astype(bool),
        points=z["points"],
        occ=z["occ"],
        grid_occ=np.unpackbits(z["grid"])[: EVAL_GRID**3].reshape((EVAL_GRID,) * 3).astype(bool),
        prep_offset=z["prep"],
        tooth_type=str(z["type"]),
        margin_offset=z["margin"] if "margin" in z.files else None,
    )


def _cache_paths(
    seed: int, n_points: int, variants: int, variant_grid: bool
) -> tuple[Path, list[Path]]:
    """The clean sample's cache file and its perturbed copies' files."""
    cache = WORK / f"crown_{DATA_VERSION}_r{RESOLUTION}_{VOXEL_MODE}_s{int(SIZE_MM)}"
    aug_cache = (
        WORK / f"crown_{DATA_VERSION}{AUG_VERSION}_r{RESOLUTION}_{VOXEL_MODE}_s{int(SIZE_MM)}"
    )
    cache.mkdir(parents=True, exist_ok=True)
    aug_cache.mkdir(parents=True, exist_ok=True)
    gtag = "g" if variant_grid else ""
    vpaths = [aug_cache / f"{seed}_v{k}{gtag}_{n_points}.npz" for k in range(variants)]
    return cache / f"{seed}_{n_points}.npz", vpaths


def _build_cached(job: tuple[int, int, int, bool]) -> None:
    """Build and cache one seed's missing samples (a worker of ``--jobs``)."""
    seed, n_points, variants, variant_grid = job
    path, vpaths = _cache_paths(seed, n_points, variants, variant_grid)
    if path.exists() and all(q.exists() for q in vpaths):
        return
    case = make_training_case(seed)
    if not path.exists():
        _save_sample(path, build_sample(seed, n_points, case), margin=False)
    for k, q in enumerate(vpaths):
        if not q.exists():
            _save_sample(q, build_perturbed_sample(case, k, n_points, variant_grid), margin=True)


def load_samples(
    seeds: list[int],
    n_points: int,
    label: str,
    variants: int = 0,
    variant_grid: bool = False,
    jobs: int = 1,
) -> tuple[list[Sample], list[list[Sample]]]:
    """Build (or read from the cache) one clean sample per seed, and ``variants`` perturbed
    copies (:func:`build_perturbed_sample`; with the evaluation grid when ``variant_grid``).
    The case is generated once per seed for all of them; ``jobs`` > 1 builds the missing
    seeds in that many processes first (the files are the same)."""
    if jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            todo = [(seed, n_points, variants, variant_grid) for seed in seeds]
            for i, _ in enumerate(pool.imap_unordered(_build_cached, todo)):
                if (i + 1) % 50 == 0:
                    print(f"  {label}: {i + 1}/{len(seeds)} cases built", flush=True)
    out, out_aug = [], []
    t0 = time.time()
    for i, seed in enumerate(seeds):
        _build_cached((seed, n_points, variants, variant_grid))
        path, vpaths = _cache_paths(seed, n_points, variants, variant_grid)
        s = _load_sample(path)
        # the margin centre from the case's layout (no meshing): where the baselines are placed
        layout = make_case(seed, build_meshes=False)
        frame_center = layout.prep_center - s.prep_offset * SIZE_MM
        s.margin_offset = (layout.margin_center - frame_center) / SIZE_MM
        out.append(s)
        out_aug.append([_load_sample(q) for q in vpaths])
        if (i + 1) % 50 == 0:
            print(f"  {label}: {i + 1}/{len(seeds)} cases ({time.time() - t0:.0f} s)", flush=True)
    return out, out_aug


def train(
    model: CrownNet,
    samples: list[Sample],
    steps: int,
    batch: int,
    points: int,
    lr: float,
    seed: int,
    variants: list[list[Sample]] | None = None,
    p_clean: float = 1.0,
) -> list[float]:
    """Adam with cosine decay; each step draws ``batch`` cases, for each its clean sample (with
    probability ``p_clean``, always when it has no ``variants``) or one of its perturbed copies,
    random x/y mirror flips, and ``points`` of that sample's stored query points."""
    rng = np.random.default_rng(seed)
    variants = variants or [[] for _ in samples]
    views = [[s, *v] for s, v in zip(samples, variants, strict=True)]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    warm = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, steps - warm)
        return 0.01 + 0.99 * 0.5 * (1.0 + np.cos(np.pi * t))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    vox = [[torch.from_numpy(s.vox.astype(np.float32)) for s in vs] for vs in views]
    pts = [[torch.from_numpy(s.points) for s in vs] for vs in views]
    occ = [[torch.from_numpy(s.occ.astype(np.float32)) for s in vs] for vs in views]
    model.train()
    model.use_reference_sampler = True  # grid_sample trains faster; export uses the plain ops
    losses = []
    t0 = time.time()
    for step in range(steps):
        ids = rng.choice(len(samples), batch, replace=False)
        xs, ps, ys = [], [], []
        for i in ids:
            n_aug = len(views[i]) - 1
            j = 0 if n_aug == 0 or rng.random() < p_clean else 1 + int(rng.integers(n_aug))
            pick = torch.from_numpy(rng.choice(len(pts[i][j]), points, replace=False))
            x, p = vox[i][j], pts[i][j][pick].clone()
            if rng.random() < 0.5:  # mirror x (mesial <-> distal)
                x, p[:, 0] = x.flip(0), -p[:, 0]
            if rng.random() < 0.5:  # mirror y (buccal <-> lingual)
                x, p[:, 1] = x.flip(1), -p[:, 1]
            xs.append(x)
            ps.append(2.0 * p.flip(-1))
            ys.append(occ[i][j][pick])
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


def onnx_predictor(path: Path, chunk: int = 32768):
    """Logits of an exported crown model (ONNX Runtime) on the evaluation grid, as
    :func:`predict_grid` gives them for a torch model: how an older shipped model is compared."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    p = to_ifnet(eval_grid_points())[None]

    def predict(vox: np.ndarray) -> np.ndarray:
        x = vox.astype(np.float32)[None]
        out = [
            sess.run(["out"], {"x": x, "p": p[:, i : i + chunk]})[0]
            for i in range(0, p.shape[1], chunk)
        ]
        return np.concatenate(out, 1)[0].reshape((EVAL_GRID,) * 3)

    return predict


def evaluate(
    model,
    train: list[Sample],
    held: list[Sample],
    baselines: bool = True,
    baseline_chamfer: bool = True,
) -> dict:
    """IoU and Chamfer of ``model`` (a :class:`CrownNet`, or a callable vox -> grid logits) on
    ``held``, beside the mean-crown baselines (IoU; Chamfer too when ``baseline_chamfer``).
    Surface samples use one generator per case and quantity, so models compare point for point."""
    predict = model if callable(model) and not isinstance(model, CrownNet) else None
    if baselines:
        in_frame, on_prep, by_type_mean = mean_crowns(train)
        frame_pts = None
    rows = []
    for ci, s in enumerate(held):

        def rng(k: int, ci=ci) -> np.random.Generator:
            return np.random.default_rng([0, ci, k])

        logits = predict(s.vox) if predict else predict_grid(model, s.vox)
        truth = grid_surface_points(s.grid_occ, 0.5, 20000, rng(0))
        row = {
            "tooth_type": s.tooth_type,
            "model_iou": iou(logits > 0, s.grid_occ),
            "model_chamfer_mm": chamfer_mm(grid_surface_points(logits, 0.0, 20000, rng(1)), truth),
        }
        if baselines:
            placed = place_on_prep(on_prep, s.margin_offset)
            typed = place_on_prep(by_type_mean[s.tooth_type], s.margin_offset)
            row |= {
                "baseline_frame_iou": iou(in_frame >= 0.5, s.grid_occ),
                "baseline_prep_iou": iou(placed >= 0.5, s.grid_occ),
                "baseline_prep_type_iou": iou(typed >= 0.5, s.grid_occ),
            }
            if baseline_chamfer:
                if frame_pts is None:
                    frame_pts = grid_surface_points(in_frame, 0.5, 20000, rng(2))
                row |= {
                    "baseline_frame_chamfer_mm": chamfer_mm(frame_pts, truth),
                    "baseline_prep_chamfer_mm": chamfer_mm(
                        grid_surface_points(placed, 0.5, 20000, rng(3)), truth
                    ),
                    "baseline_prep_type_chamfer_mm": chamfer_mm(
                        grid_surface_points(typed, 0.5, 20000, rng(4)), truth
                    ),
                }
        rows.append(row)
    keys = [k for k in rows[0] if k != "tooth_type"]
    summary = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    summary["model_iou_min"] = float(np.min([r["model_iou"] for r in rows]))
    summary["model_iou_median"] = float(np.median([r["model_iou"] for r in rows]))
    summary["model_chamfer_mm_max"] = float(np.nanmax([r["model_chamfer_mm"] for r in rows]))
    by_type = {}
    type_keys = [
        k for k in ("model_iou", "baseline_prep_iou", "baseline_prep_type_iou") if k in keys
    ]
    for t in sorted({r["tooth_type"] for r in rows}):
        sel = [r for r in rows if r["tooth_type"] == t]
        by_type[t] = {"cases": len(sel)} | {
            k: float(np.nanmean([r[k] for r in sel])) for k in type_keys
        }
    return {"summary": summary, "by_tooth_type": by_type, "cases": rows}


def evaluate_all(
    model,
    train_s: list[Sample],
    held: list[Sample],
    held_pert: list[Sample],
    result: dict,
    save,
    compare_onnx: Path | None = None,
) -> None:
    """Clean held-out (with all baselines), perturbed held-out (one copy per case: artefacts and
    frame perturbation; baselines by IoU only) and, with ``compare_onnx``, the same two sets for
    that older exported model; ``result`` is updated and ``save()`` called after each part."""
    parts = [("heldout", model, held, True), ("heldout_perturbed", model, held_pert, False)]
    if compare_onnx is not None:
        ref = onnx_predictor(compare_onnx)
        parts += [
            ("reference_heldout", ref, held, None),
            ("reference_heldout_perturbed", ref, held_pert, None),
        ]
        result["reference_model"] = str(compare_onnx)
    for key, m, samples, chamfer in parts:
        t = time.time()
        metrics = evaluate(
            m, train_s, samples, baselines=chamfer is not None, baseline_chamfer=bool(chamfer)
        )
        result.setdefault("seconds", {})[f"eval_{key}_s"] = time.time() - t
        result[key] = metrics["summary"]
        result[f"{key}_by_tooth_type"] = metrics["by_tooth_type"]
        result[f"{key}_cases_detail"] = metrics["cases"]
        save()
        print(key, json.dumps(metrics["summary"], indent=1), flush=True)


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
        "version": MODEL_VERSION,
        "onnx": "crown_demo.onnx",
        "inputs": {"voxels": "x", "points": "p"},
        "output": "out",
        "output_kind": "logits",
        "voxel_resolution": RESOLUTION,
        "voxelization": VOXEL_MODE,
        "frame": {
            "mode": "fixed",
            "size_mm": SIZE_MM,
            "center": "bbox",
            "occlusal": "+z",
            "mesial": "+x",
        },
        "point_convention": "ifnet",
        "generation": {
            "resolution": resolution,
            "coarse_resolution": coarse,
            "threshold": 0.5,
            "batch_points": 100000,
        },
        "smoothing": {"method": "taubin", "iterations": 10},
        "postprocess": {"keep": "largest", "min_volume_mm3": 1.0},
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
    ap.add_argument("--jobs", type=int, default=1, help="processes that build the cached cases")
    ap.add_argument(
        "--aug-variants",
        type=int,
        default=AUG_VARIANTS,
        help="perturbed copies (scan artefacts + frame) per training case; 0 trains clean only",
    )
    ap.add_argument(
        "--p-clean", type=float, default=0.4, help="share of draws that take the clean copy"
    )
    ap.add_argument("--data-only", action="store_true", help="only build the cached cases")
    ap.add_argument(
        "--eval-only",
        action="store_true",
        help="re-evaluate the last trained weights (work/crown_demo.pt) and update the metrics",
    )
    ap.add_argument(
        "--compare-onnx",
        type=Path,
        default=None,
        help="also evaluate this exported model (e.g. the shipped one, copied aside) on both sets",
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
    train_s, train_aug = load_samples(
        list(range(TRAIN_SEED0, TRAIN_SEED0 + args.train_cases)),
        args.points_per_case,
        "train",
        variants=args.aug_variants,
        jobs=args.jobs,
    )
    held, held_aug = load_samples(
        list(range(HELDOUT_SEED0, HELDOUT_SEED0 + args.heldout_cases)),
        args.points_per_case,
        "held-out",
        variants=1,
        variant_grid=True,
        jobs=args.jobs,
    )
    held_pert = [v[0] for v in held_aug]
    times["data_s"] = time.time() - t
    print(f"data ready: {len(train_s)} train, {len(held)} held-out ({times['data_s']:.0f} s)")
    if args.data_only:
        return 0

    channels = tuple(int(c) for c in args.channels.split(","))
    model = CrownNet(channels=channels, convs=(1, 1, 2, 2), hidden=args.hidden)
    weights = WORK / "crown_demo.pt" if args.out == REPO / "models" else args.out / "crown_demo.pt"
    command = "python -m models.recipes.train_crown " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )

    def save_metrics(result: dict) -> None:
        args.metrics.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.metrics.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, args.metrics)

    if args.eval_only:
        model.load_state_dict(torch.load(weights))
        model.eval()
        result = json.loads(args.metrics.read_text(encoding="utf-8"))
        result["evaluated_by"] = command
        evaluate_all(
            model, train_s, held, held_pert, result, lambda: save_metrics(result), args.compare_onnx
        )
        return 0
    t = time.time()
    losses = train(
        model,
        train_s,
        args.steps,
        args.batch,
        args.points,
        args.lr,
        args.seed,
        variants=train_aug,
        p_clean=args.p_clean,
    )
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
    torch.save(model.state_dict(), weights)

    cfg = ARTEFACTS
    result = {
        "command": command,
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
            "augmentation": {
                "version": AUG_VERSION,
                "perturbed_copies_per_train_case": args.aug_variants,
                "perturbed_copies_per_heldout_case": 1,
                "p_clean": args.p_clean,
                "seed": f"SeedSequence([{AUG_SEED_SALT}, case seed, copy])",
                "parameters": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
            },
        },
        "model": {
            "version": MODEL_VERSION,
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
    }
    save_metrics(result)
    print(json.dumps({"seconds": times, "parity": result["parity"]}, indent=2), flush=True)
    evaluate_all(
        model, train_s, held, held_pert, result, lambda: save_metrics(result), args.compare_onnx
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
