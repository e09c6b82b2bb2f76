"""The shipped crown model's trilinear sampler (plain ops, as its TensorRT-bound export writes
it) against native ONNX ``GridSample``, without PyTorch.

The sampler is cut out of ``models/crown_demo.onnx`` itself: from the feature volume and the
points it reads to the first value that depends on all eight corner gathers. So what is
checked is the exported graph the app runs, not a re-implementation. The reference is one
``GridSample`` node built with ``onnx.helper`` (linear, border padding, align_corners=True:
``models/recipes/crown_net.trilinear_sample``'s contract).

Also here: the two samplers of the test models (``tests/onnx_builders.py``) agree, so tests
that compare a "plain" and a "native" test model compare the app's paths, not the fixtures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.utils import Extractor

from tests.onnx_builders import sampler_model

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "crown_demo.onnx"


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def shipped_sampler() -> tuple[onnx.ModelProto, str, str, tuple[int, ...]]:
    """The first sampler of the shipped model as a model of its own.

    Returns the model, the names of its volume and points inputs, and the volume's shape.
    """
    model = onnx.shape_inference.infer_shapes(onnx.load(SHIPPED))
    nodes = model.graph.node
    producer = {out: n for n in nodes for out in n.output}
    gathers = [n for n in nodes if n.op_type == "GatherElements"]
    assert gathers, "the shipped model has no plain-op sampler (GatherElements)"
    flat = producer[gathers[0].input[0]]
    corners = {n.output[0] for n in gathers if n.input[0] == gathers[0].input[0]}
    assert flat.op_type == "Reshape" and len(corners) == 8, (flat.op_type, len(corners))
    volume = flat.input[0]
    depends: dict[str, set[str]] = {}
    out = None
    for n in nodes:
        seen = set().union(*(depends.get(i, set()) | ({i} & corners) for i in n.input))
        depends.update((o, seen) for o in n.output)
        if seen >= corners:
            out = n.output[0]
            break
    # the points: up the chain from the first Floor through its one computed input each step
    points = next(n for n in nodes if n.op_type == "Floor").input[0]
    while producer[points].op_type != "Reshape":
        computed = [i for i in producer[points].input if i in producer]
        points = next(i for i in computed if producer[i].op_type != "Constant")
    shape = [d.dim_value for d in _value_info(model, volume).type.tensor_type.shape.dim]
    return Extractor(model).extract_model([volume, points], [out]), volume, points, tuple(shape)


def _value_info(model: onnx.ModelProto, name: str) -> onnx.ValueInfoProto:
    return next(v for v in model.graph.value_info if v.name == name)


def grid_sample_reference(align_corners: bool = True) -> onnx.ModelProto:
    """vol (1, C, D, H, W), p (1, N, 3) -> (1, C, N) through one native ``GridSample``."""
    nodes = [
        helper.make_node("Reshape", ["p", "grid_shape"], ["grid"]),
        helper.make_node(
            "GridSample",
            ["vol", "grid"],
            ["s"],
            mode="linear",
            padding_mode="border",
            align_corners=int(align_corners),
        ),
        helper.make_node("Reshape", ["s", "out_shape"], ["v"]),
    ]
    consts = [
        helper.make_tensor("grid_shape", TensorProto.INT64, [5], [1, 1, 1, -1, 3]),
        helper.make_tensor("out_shape", TensorProto.INT64, [3], [1, 0, -1]),
    ]
    graph = helper.make_graph(
        nodes,
        "grid_sample_reference",
        [
            helper.make_tensor_value_info("vol", TensorProto.FLOAT, [1, "C", "D", "H", "W"]),
            helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, "N", 3]),
        ],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, "C", "N"])],
        consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    return model


def _points(rng: np.random.Generator, res: int) -> np.ndarray:
    """Inside, on the faces and edges, exactly on grid points, outside and just outside."""
    inner = rng.uniform(-1, 1, (2000, 3))
    faces = rng.uniform(-1, 1, (600, 3))
    faces[np.arange(600), rng.integers(0, 3, 600)] = rng.choice([-1.0, 1.0], 600)
    edges = rng.choice([-1.0, 1.0], (300, 3))
    edges[:, 0] = rng.uniform(-1, 1, 300)
    grid = (rng.integers(0, res, (300, 3)) / (res - 1) * 2 - 1).astype(np.float64)
    outside = rng.uniform(-1.6, 1.6, (600, 3))
    just_out = rng.choice([-1.0, 1.0], (200, 3)) * (1 + rng.uniform(1e-4, 0.05, (200, 3)))
    return np.concatenate([inner, faces, edges, grid, outside, just_out]).astype(np.float32)


@pytest.fixture(scope="module")
def shipped():
    return shipped_sampler()


def test_shipped_sampler_matches_native_gridsample(shipped) -> None:
    model, volume, points, shape = shipped
    rng = np.random.default_rng(7)
    vol = rng.uniform(-1, 1, shape).astype(np.float32)
    p = _points(rng, shape[-1])[None]
    got = _session(model).run(None, {volume: vol, points: p})[0]
    ref = _session(grid_sample_reference()).run(["v"], {"vol": vol, "p": p})[0]
    assert got.shape == ref.shape == (1, shape[1], p.shape[1])
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    # the comparison tells the conventions apart: with align_corners=False it fails
    off = _session(grid_sample_reference(align_corners=False)).run(["v"], {"vol": vol, "p": p})
    assert np.abs(off[0] - got).max() > 0.05


@pytest.mark.parametrize("res", [5, 17])
def test_test_models_plain_sampler_matches_their_native_one(res: int) -> None:
    rng = np.random.default_rng(res)
    vol = rng.uniform(0, 1, (1, res, res, res)).astype(np.float32)
    p = _points(rng, res)[None]
    native = _session(sampler_model("native")).run(["v"], {"x": vol, "p": p})[0]
    plain = _session(sampler_model("plain")).run(["v"], {"x": vol, "p": p})[0]
    np.testing.assert_allclose(plain, native, atol=1e-5, rtol=0)
    far = np.abs(p[0]).max(axis=1) > 1 + 1.0 / (res - 1) * 2
    assert far.any() and np.all(native[0, far] == 0) and np.all(plain[0, far] == 0)


def test_test_models_read_grid_points_in_ifnet_order() -> None:
    """p = 2*(z, y, x) of a grid point returns exactly vol[x, y, z] (align_corners=True)."""
    res = 9
    rng = np.random.default_rng(0)
    vol = rng.uniform(0, 1, (1, res, res, res)).astype(np.float32)
    ijk = rng.integers(0, res, (50, 3))
    unit = ijk / (res - 1) - 0.5
    p = (2 * unit[:, ::-1]).astype(np.float32)[None]
    for kind in ("native", "plain"):
        got = _session(sampler_model(kind)).run(["v"], {"x": vol, "p": p})[0][0]
        np.testing.assert_allclose(got, vol[0, ijk[:, 0], ijk[:, 1], ijk[:, 2]], atol=1e-6)
    misaligned = _session(sampler_model("native", align_corners=False))
    got = misaligned.run(["v"], {"x": vol, "p": p})[0][0]
    assert np.abs(got - vol[0, ijk[:, 0], ijk[:, 1], ijk[:, 2]]).max() > 0.05
