"""One-graph crown models split into encoder and decoder, with the decoder's samplers rewritten
as gathers, and batches sized from a memory budget: every fast path against the original
graph (parity before speed), and models that cannot take it running as before."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import trimesh
from onnx import TensorProto, helper

from app.core.crown import decoder_plan
from app.core.crown.decode import CrownEvaluator
from app.core.crown.decoder_memory import (
    MIN_BATCH,
    RSS_PER_TENSOR_BYTE,
    UNKNOWN_BYTES_PER_POINT,
    batch_for_budget,
    bytes_per_point,
)
from app.core.crown.gather_sampler import rewrite_samplers
from app.core.crown.graph_split import SplitError, split_graph
from app.core.crown.meshio import Mesh
from app.core.crown.pipeline import generate_crown
from app.core.manifest import load_manifest
from app.core.runtime import RuntimeConfig, SessionPool
from benchmarks.models import ifnet128
from tests.onnx_builders import crown_manifest, identity_crown_model, save, write_manifest

# a mini IF-Net: volumes at 12^3 (1 and 3 channels), 6^3 (4) and 3^3 (5)
SMALL = {"resolution": 12, "stages": ((1, (3,)), (3, (4, 4)), (4, (5,))), "hidden": 16}
TOL = 1e-5


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _grid_points(rng: np.random.Generator, res: int) -> np.ndarray:
    """Grid-sample points: inside, on faces, edges and grid nodes of [-1, 1]^3, and outside."""
    inner = rng.uniform(-1, 1, (600, 3))
    faces = rng.uniform(-1, 1, (300, 3))
    faces[np.arange(300), rng.integers(0, 3, 300)] = rng.choice([-1.0, 1.0], 300)
    edges = rng.choice([-1.0, 1.0], (100, 3))
    edges[:, 0] = rng.uniform(-1, 1, 100)
    nodes = rng.integers(0, res, (200, 3)) / (res - 1) * 2 - 1
    outside = rng.uniform(-1.8, 1.8, (300, 3))
    just_out = rng.choice([-1.0, 1.0], (100, 3)) * (1 + rng.uniform(1e-4, 0.1, (100, 3)))
    return np.concatenate([inner, faces, edges, nodes, outside, just_out]).astype(np.float32)


def _run_split(split, voxels: np.ndarray, points: np.ndarray) -> np.ndarray:
    made = [f for f in split.features if f != split.voxels]
    feats = dict(zip(made, _session(split.encoder).run(made, {"x": voxels}), strict=True))
    if split.voxels in split.features:
        feats[split.voxels] = voxels
    return _session(split.decoder).run(None, {**feats, "p": points})[0]


@pytest.mark.parametrize("sampler", ["native", "plain"])
def test_split_and_gathers_match_the_graph(sampler: str) -> None:
    model = ifnet128.build(sampler, seed=3, **SMALL)
    rng = np.random.default_rng(1)
    voxels = rng.uniform(0, 1, (1, 12, 12, 12)).astype(np.float32)
    points = _grid_points(rng, 12)[None]
    want = _session(model).run(None, {"x": voxels, "p": points})[0]
    assert np.abs(want).max() > 1.0

    split = split_graph(model, "x", "p", (12, 12, 12))
    assert [i.name for i in split.encoder.graph.input] == ["x"]
    assert [i.name for i in split.decoder.graph.input] == [*split.features, "p"]
    assert not any("p" in n.input for n in split.encoder.graph.node)
    encoder_ops = {n.op_type for n in split.encoder.graph.node}
    assert {"Conv", "MaxPool"} <= encoder_ops
    assert "Conv" in {n.op_type for n in split.decoder.graph.node}  # the MLP stays per point
    split_got = _run_split(split, voxels, points)
    np.testing.assert_allclose(split_got, want, atol=TOL, rtol=0)

    done = rewrite_samplers(split)
    assert done.skipped == []
    assert done.rewritten == (4 if sampler == "native" else 4 * 8)
    decoder_ops = [n.op_type for n in split.decoder.graph.node]
    assert "GridSample" not in decoder_ops
    assert all(f.endswith(("__cl", "__rows")) for f in split.features)
    got = _run_split(split, voxels, points)
    print(f"{sampler}: max |gather - graph| = {np.abs(got - want).max():.2e}")
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("align", [True, False])
def test_grid_sample_gather_matches_both_corner_conventions(align: bool) -> None:
    model = identity_crown_model(align_corners=align, k=1.0)
    rng = np.random.default_rng(7)
    voxels = rng.uniform(-1, 1, (1, 9, 9, 9)).astype(np.float32)
    points = _grid_points(rng, 9)[None]
    want = _session(model).run(None, {"x": voxels, "p": points})[0]
    split = split_graph(model, "x", "p", (9, 9, 9))
    assert rewrite_samplers(split).rewritten == 1
    got = _run_split(split, voxels, points)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    far = np.abs(points[0]).max(axis=1) > 1.3
    assert far.any() and np.all(got[0, far] == -0.5)  # zero padding: k * (0 - 0.5)


def _with_extra_input() -> onnx.ModelProto:
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("ReduceSum", ["p", "axes"], ["ps"], keepdims=0),
        helper.make_node("Mul", ["ps", "s"], ["m"]),
        helper.make_node("Mul", ["m", "scale"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "extra",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "R", "R", "R"]),
         helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, "N", 3]),
         helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "N"])],
        [onnx.numpy_helper.from_array(np.array([2], np.int64), "axes")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def _direct_grid_sample(k: float = 10.0) -> onnx.ModelProto:
    """``k * (GridSample(x, p) - 0.5)`` on voxels declared (1, 1, R, R, R): nothing to split."""
    nodes = [
        helper.make_node("Reshape", ["p", "grid_shape"], ["grid"]),
        helper.make_node("GridSample", ["x", "grid"], ["s"], mode="linear", align_corners=1),
        helper.make_node("Reshape", ["s", "flat_shape"], ["v"]),
        helper.make_node("Sub", ["v", "half"], ["c"]),
        helper.make_node("Mul", ["c", "k"], ["out"]),
    ]
    consts = {"grid_shape": np.array([1, 1, 1, -1, 3], np.int64),
              "flat_shape": np.array([1, -1], np.int64),
              "half": np.array(0.5, np.float32), "k": np.array(k, np.float32)}  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "direct",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, "R", "R", "R"]),
         helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, "N", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "N"])],
        [onnx.numpy_helper.from_array(v, n) for n, v in consts.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    return model


def test_graphs_that_cannot_be_split_say_why() -> None:
    with pytest.raises(SplitError, match="another input"):
        split_graph(_with_extra_input(), "x", "p", (8, 8, 8))
    with pytest.raises(SplitError, match="declared 12 where 8"):
        split_graph(identity_crown_model(static_resolution=12), "x", "p", (8, 8, 8))
    with pytest.raises(SplitError, match="reads the voxels directly"):
        split_graph(_direct_grid_sample(), "x", "p", (8, 8, 8))


def test_bytes_per_point_follows_the_live_tensors_and_sets_the_batch() -> None:
    nodes = [
        helper.make_node("Mul", ["p", "two"], ["m"]),  # 12 B/point, alive with p: 24 B
        helper.make_node("ReduceSum", ["m", "axes"], ["out"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, "N", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "N"])],
        [onnx.numpy_helper.from_array(np.array(2.0, np.float32), "two"),
         onnx.numpy_helper.from_array(np.array([2], np.int64), "axes")],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    assert bytes_per_point(model, "p") == pytest.approx(24.0)
    assert batch_for_budget(24.0, 2400, 1_000_000) == MIN_BATCH
    assert batch_for_budget(24.0, 24 * 5000, 1_000_000) == int(5000 / RSS_PER_TENSOR_BYTE)
    assert batch_for_budget(24.0, 2**30, 70_000) == 70_000
    unknown = batch_for_budget(None, 2**30, 70_000)
    assert unknown == batch_for_budget(UNKNOWN_BYTES_PER_POINT, 2**30, 70_000) < 70_000


def _box_scan() -> Mesh:
    box = trimesh.creation.box([9.0, 6.0, 12.0])
    box.apply_translation([3.0, -2.0, 40.0])
    return Mesh(np.asarray(box.vertices, float), np.asarray(box.faces, np.int64))


def _manifest(tmp_path: Path, model: onnx.ModelProto, stem: str, voxels=20, **generation):
    save(model, tmp_path / f"{stem}.onnx")
    gen = {"resolution": 33, "threshold": 0.9, "batch_points": 50_000, **generation}
    data = crown_manifest(tmp_path, f"{stem}.onnx", voxel_resolution=voxels, generation=gen)
    return load_manifest(write_manifest(tmp_path, data, stem))


@pytest.fixture
def pool() -> SessionPool:
    return SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=2))


@pytest.mark.parametrize(
    ("sampler", "path"), [("native", "split+gather"), ("plain", "split (no sampler to rewrite)")]
)
def test_pipeline_takes_the_fast_path_and_gives_the_same_crown(tmp_path, pool, sampler, path):
    fast = _manifest(tmp_path, identity_crown_model(sampler), "fast")
    slow = _manifest(tmp_path, identity_crown_model(sampler), "slow", fast_decoder=False)
    got = generate_crown(_box_scan(), fast, pool)
    ref = generate_crown(_box_scan(), slow, pool)
    assert got.report.info["decoder_path"] == path
    assert ref.report.info["decoder_path"] == "one graph (fast_decoder is false in the manifest)"
    assert "encode" in got.report.timings_ms and "encode" not in ref.report.timings_ms
    np.testing.assert_allclose(got.mesh.vertices, ref.mesh.vertices, atol=1e-5)
    np.testing.assert_array_equal(got.mesh.faces, ref.mesh.faces)


def test_a_model_that_cannot_be_split_runs_as_one_graph(tmp_path, pool) -> None:
    spec = _manifest(tmp_path, _direct_grid_sample(), "direct")
    result = generate_crown(_box_scan(), spec, pool)
    assert result.report.info["decoder_path"] == (
        "one graph (nothing to precompute: the decoder reads the voxels directly)"
    )
    assert result.watertight


def test_split_parts_are_cached_by_model_hash(tmp_path, pool, monkeypatch) -> None:
    spec = _manifest(tmp_path, identity_crown_model(), "cached")
    voxels = np.zeros((20, 20, 20), np.float32)
    first = CrownEvaluator(spec, pool, voxels).plan
    assert first.path == "split+gather" and first.parity is not None and first.parity <= TOL
    saved = json.loads((first.encoder.parent / "plan.json").read_text())
    assert saved["path"] == "split+gather" and saved["features"] == first.features

    def refuse(*args, **kwargs):
        raise AssertionError("prepared again although cached")

    monkeypatch.setattr(decoder_plan, "_prepare", refuse)
    monkeypatch.setattr(decoder_plan, "_memo", {})
    again = CrownEvaluator(spec, pool, voxels).plan
    assert again.encoder == first.encoder and again.features == first.features

    save(identity_crown_model(k=5.0), tmp_path / "cached.onnx")  # same name, new content
    changed = CrownEvaluator(spec, pool, voxels).plan  # a new hash: prepared (and refused) anew
    assert changed.path == "one graph" and "prepared again" in changed.reason


def test_batches_shrink_to_the_memory_budget_with_the_same_values(tmp_path, pool) -> None:
    model = ifnet128.build("native", **SMALL)
    spec = _manifest(tmp_path, model, "mini", voxels=12, decoder_memory_mb=16)
    rng = np.random.default_rng(5)
    voxels = (rng.random((12, 12, 12)) < 0.5).astype(np.float32)
    budget = CrownEvaluator(spec, pool, voxels)
    per_point = budget.plan.bytes_per_point
    assert per_point is not None and per_point > 1000
    assert budget.batch_points == batch_for_budget(per_point, 16 * 2**20, 50_000)
    assert budget.batch_points < spec.generation.batch_points
    unit = rng.uniform(-0.55, 0.55, (3 * budget.batch_points + 17, 3))
    got = budget.evaluate(unit)
    assert budget.batches == 4
    plain = dataclasses.replace(
        spec, generation=dataclasses.replace(spec.generation, fast_decoder=False)
    )
    ref = CrownEvaluator(plain, pool, voxels)
    want = ref.evaluate(unit)
    assert ref.plan.path == "one graph"
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


@pytest.fixture(scope="module")
def benchmark_models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("ifnet128")
    return {s: ifnet128.ensure(folder, s) for s in ("native", "plain")}


def test_benchmark_model_fast_paths_match_the_graph_and_follow_the_input(benchmark_models):
    """The full-size IF-Net benchmark model: each fast path against its own one graph, and the
    plain-op sampler against GridSample; the logit's sign is the input's occupancy."""
    pool = SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=2))
    r = ifnet128.RESOLUTION
    g = np.arange(r) / (r - 1) - 0.5
    inside = (g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2) < 0.3**2
    voxels = inside.astype(np.float32)
    rng = np.random.default_rng(11)
    unit = _grid_points(rng, r)[:, ::-1] / 2.0  # from grid_sample order back to the unit cube
    results = {}
    for sampler, manifest in benchmark_models.items():
        spec = load_manifest(manifest)
        fast = CrownEvaluator(spec, pool, voxels)
        off = dataclasses.replace(
            spec, generation=dataclasses.replace(spec.generation, fast_decoder=False)
        )
        ref = CrownEvaluator(off, pool, voxels)
        got, want = fast.evaluate(unit), ref.evaluate(unit)
        diff = float(np.abs(got - want).max())
        print(f"{sampler}: {fast.plan.label}, max |fast - graph| {diff:.2e}, "
              f"batch {fast.batch_points} points")  # fmt: skip
        assert fast.plan.path == "split+gather" and fast.plan.reason == ""
        assert diff <= TOL
        assert fast.batch_points < spec.generation.batch_points  # the 1.5 GB budget binds
        results[sampler] = got
    np.testing.assert_allclose(results["plain"], results["native"], atol=TOL, rtol=0)
    radius = np.linalg.norm(unit, axis=1)
    in_box = np.abs(unit).max(axis=1) <= 0.5
    deep, clear = radius < 0.27, (radius > 0.33) & in_box
    assert deep.sum() > 50 and clear.sum() > 50
    assert np.all(results["native"][deep] > 4.5) and np.all(results["native"][clear] < -4.5)


def test_a_failing_analysis_falls_back_to_the_graph_and_is_not_cached(tmp_path, pool, monkeypatch):
    from app.core.crown import graph_split

    spec = _manifest(tmp_path, identity_crown_model(k=7.0), "broken")

    def boom(*args, **kwargs):
        raise RuntimeError("unexpected graph\nsecond line")

    monkeypatch.setattr(graph_split, "split_graph", boom)
    result = generate_crown(_box_scan(), spec, pool)
    assert (
        result.report.info["decoder_path"]
        == "one graph (split failed: RuntimeError unexpected graph)"
    )
    assert result.watertight
    monkeypatch.undo()
    monkeypatch.setattr(decoder_plan, "_memo", {})
    assert (
        CrownEvaluator(spec, pool, np.zeros((20, 20, 20), np.float32)).plan.path == "split+gather"
    )


def test_a_rewrite_that_changes_the_output_is_not_used(tmp_path, pool, monkeypatch) -> None:
    from app.core.crown import gather_sampler

    real = gather_sampler._gather_nodes

    def misaligned(b, rows, grid, shape, align, out):
        real(b, rows, grid, shape, not align, out)

    monkeypatch.setattr(gather_sampler, "_gather_nodes", misaligned)
    spec = _manifest(tmp_path, identity_crown_model(k=3.0), "misaligned")  # not cached yet
    plan = CrownEvaluator(spec, pool, np.zeros((20, 20, 20), np.float32)).plan
    assert plan.path == "split" and plan.parity is not None and plan.parity <= TOL
    assert plan.reason.startswith("split+gather differs from the graph by")
