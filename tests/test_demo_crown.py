"""The shipped demo crown model, run through the real runtime pieces on held-out synthetic cases.

The main tests need no torch: cases come from the generator, the ONNX model runs through
``app.core`` (frame, voxelizer, SessionPool, decoder evaluation, the full crown pipeline).
The sampler-parity test at the end checks the recipe's PyTorch sampler, so it needs torch and
is skipped without it; ``tests/test_trilinear_parity.py`` checks the shipped model's exported
sampler without torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core.crown.decode import CrownEvaluator
from app.core.crown.frame import make_frame
from app.core.crown.meshio import Mesh
from app.core.crown.pipeline import generate_crown
from app.core.crown.voxelize import voxelize
from app.core.manifest import CrownModel, load_manifest
from app.core.runtime import RuntimeConfig, SessionPool
from models.recipes.synth_cases import TOOTH_TYPES, make_case

MODELS = Path(__file__).resolve().parents[1] / "models"
GRID = 32


def _heldout_seeds(per_type: int = 2) -> list[int]:
    """The first held-out seeds (the recipe trains on 0..399) giving ``per_type`` of each type."""
    seeds: dict[str, list[int]] = {t: [] for t in TOOTH_TYPES}
    seed = 1_000_000
    while any(len(v) < per_type for v in seeds.values()):
        kind = make_case(seed, build_meshes=False).tooth_type
        if len(seeds[kind]) < per_type:
            seeds[kind].append(seed)
        seed += 1
    return sorted(s for v in seeds.values() for s in v)


@pytest.fixture(scope="module")
def model() -> CrownModel:
    spec = load_manifest(MODELS / "crown_demo.json")
    assert isinstance(spec, CrownModel)
    return spec


@pytest.fixture(scope="module")
def pool() -> SessionPool:
    return SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=2))


@pytest.fixture(scope="module")
def cases():
    return [make_case(s, context_spacing=0.3, crown_spacing=0.15) for s in _heldout_seeds()]


def _grid(g: int) -> np.ndarray:
    ax = np.linspace(-0.5, 0.5, g)
    return np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1).reshape(-1, 3)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b)))


def test_manifest_and_file_size(model):
    assert model.onnx is not None and model.onnx.name == "crown_demo.onnx"
    assert model.onnx.stat().st_size <= 20 * 1024 * 1024
    assert model.inputs == {"voxels": "x", "points": "p"} and model.output == "out"
    assert model.point_convention == "ifnet" and model.output_kind == "logits"
    assert model.frame.mode == "fixed"
    gen = model.generation
    assert gen.coarse_resolution is not None
    assert (gen.resolution - 1) % (gen.coarse_resolution - 1) == 0


def test_graph_has_no_gridsample_and_takes_any_point_count(model, pool):
    import onnx

    ops = {n.op_type for n in onnx.load(str(model.onnx)).graph.node}
    assert "GridSample" not in ops
    session = pool.get(model.onnx)
    r = model.voxel_resolution
    x = np.zeros((1, r, r, r), np.float32)
    for n in (1, 37, 1000):
        out = session.run(["out"], {"x": x, "p": np.zeros((1, n, 3), np.float32)})[0]
        assert out.shape == (1, n)


def test_heldout_iou_beats_mean_crown_baseline(model, pool, cases):
    """Volumetric IoU on a grid in the model's frame, model vs the exact synthetic crown, with
    the mean crown (leave-one-out over these cases, two of each tooth type) placed on the
    preparation's margin centre beside it."""
    g = _grid(GRID)
    truths, preds, frames = [], [], []
    for case in cases:
        frame = make_frame(case.context.vertices, model.frame)
        vox = voxelize(
            frame.to_unit(case.context.vertices),
            case.context.faces,
            model.voxel_resolution,
            model.voxelization,
        )
        logits = CrownEvaluator(model, pool, vox).evaluate(g)
        preds.append(logits > 0)
        truths.append(case.crown_inside(frame.to_mm(g)))
        frames.append(frame)
    # margin-centred occupancy of each case's crown, same grid spacing
    size = frames[0].size_mm
    prep_grids = [c.crown_inside(c.margin_center + g * size) for c in cases]
    model_iou, base_iou = [], []
    for i, case in enumerate(cases):
        mean = np.mean([p for j, p in enumerate(prep_grids) if j != i], axis=0) >= 0.5
        # place the mean crown on this case's margin centre: look up the margin-centred grid
        offs = frames[i].to_mm(g) - case.margin_center
        idx = np.rint(offs / size * (GRID - 1) + 0.5 * (GRID - 1)).astype(int)
        ok = np.all((idx >= 0) & (idx < GRID), axis=1)
        flat = np.zeros(len(g), bool)
        lin = (idx[ok, 0] * GRID + idx[ok, 1]) * GRID + idx[ok, 2]
        flat[ok] = mean[lin]
        model_iou.append(_iou(preds[i], truths[i]))
        base_iou.append(_iou(flat, truths[i]))
    m, b = float(np.mean(model_iou)), float(np.mean(base_iou))
    print(f"held-out IoU: model {m:.3f}, mean-crown baseline {b:.3f}")
    assert m >= 0.75, (model_iou, base_iou)
    # the model removes most of the baseline's error (1 - IoU)
    assert (1 - m) < 0.5 * (1 - b), (m, b)


def test_pipeline_makes_a_closed_crown_on_the_preparation(model, pool, cases):
    """The full runtime pipeline (coarse-to-fine, marching cubes, Taubin) on one case."""
    case = cases[0]
    scan = Mesh(np.asarray(case.context.vertices, float), np.asarray(case.context.faces, np.int64))
    result = generate_crown(scan, model, pool, resolution=65)
    assert result.watertight
    v = result.mesh.vertices
    lo, hi = case.crown.bounds
    assert np.all(np.abs(v.mean(axis=0) - case.crown.vertices.mean(axis=0)) < 1.0)
    assert np.all(np.abs(v.min(axis=0) - lo) < 1.5) and np.all(np.abs(v.max(axis=0) - hi) < 1.5)
    from scipy.spatial import cKDTree

    d_pred = cKDTree(case.crown.vertices).query(v)[0]
    d_true = cKDTree(v).query(case.crown.vertices)[0]
    assert 0.5 * (d_pred.mean() + d_true.mean()) < 0.6  # mm


@pytest.mark.torch
def test_plain_op_sampler_matches_grid_sample():
    torch = pytest.importorskip("torch")
    from models.recipes.crown_net import CrownNet, reference_sample, trilinear_sample

    gen = torch.Generator().manual_seed(3)
    for shape in [(1, 1, 8, 8, 8), (2, 5, 12, 9, 7), (1, 3, 6, 6, 6)]:
        vol = torch.randn(*shape, generator=gen)
        p = torch.rand(shape[0], 3000, 3, generator=gen) * 2.0 - 1.0
        p[:, :8] = torch.tensor([-1.0, 1.0]).repeat(4)[:, None].expand(8, 3)  # exact corners
        zeros = torch.nn.functional.grid_sample(vol, p[:, :, None, None], align_corners=True)
        assert torch.allclose(trilinear_sample(vol, p), zeros[:, :, :, 0, 0], atol=1e-5)
        far = p * 1.7  # outside the cube: both clamp to the border
        assert torch.allclose(trilinear_sample(vol, far), reference_sample(vol, far), atol=1e-5)
    net = CrownNet().eval()
    x = (torch.rand(1, 16, 16, 16, generator=gen) > 0.8).float()
    q = torch.rand(1, 500, 3, generator=gen) * 2 - 1
    with torch.no_grad():
        a = net(x, q)
        net.use_reference_sampler = True
        b = net(x, q)
    assert torch.allclose(a, b, atol=1e-5)
