"""Small ONNX graphs built with onnx.helper (no PyTorch) for crown-pipeline tests.

- :func:`native_sampler_nodes`: trilinear sampling with ONNX ``GridSample`` (opset 20, 5-D).
- :func:`plain_sampler_nodes`: the same sampling from plain ops (Floor, Clip, GatherND, ...),
  as an export bound for TensorRT (which has no 5-D GridSample) writes it.
- :func:`identity_crown_model`: ``logit = k * (trilinear(voxels at p) - 0.5)``: a "model" whose
  surface is the voxelized input itself, so a pipeline run must give the scan's shape back where
  it was. Inputs ``x`` (1, R, R, R) and ``p`` (1, N, 3) in the IF-Net convention (grid_sample
  order (z, y, x) scaled to [-1, 1]), output ``out`` (1, N).
- :func:`two_part_identity_models`: the same model split into encoder and decoder graphs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from app.core.onnx_build import GraphBuilder

OPSET = 20


_Graph = GraphBuilder


def native_sampler_nodes(g: _Graph, x: str, p: str, align_corners: bool = True) -> str:
    """``GridSample`` of volume ``x`` (1, R, R, R) at grid ``p`` (1, N, 3) -> (1, N)."""
    vol = g.op("Unsqueeze", [x, g.const([1], np.int64)])
    grid = g.op("Reshape", [p, g.const([1, 1, 1, -1, 3], np.int64)])
    sampled = g.op(
        "GridSample",
        [vol, grid],
        mode="linear",
        padding_mode="zeros",
        align_corners=int(align_corners),
    )
    return g.op("Reshape", [sampled, g.const([1, -1], np.int64)])


def plain_sampler_nodes(g: _Graph, x: str, p: str) -> str:
    """Trilinear sampling with align_corners=True and zero padding from plain ops -> (1, N).

    ``p[..., 0]`` indexes the last volume axis, ``p[..., 2]`` the first (grid_sample order).
    """
    size = g.op("Cast", [g.op("Shape", [x], start=1, end=2)], to=TensorProto.FLOAT)
    top = g.op("Sub", [size, g.const([1.0])])
    idx = g.op("Mul", [g.op("Mul", [g.op("Add", [p, g.const(1.0)]), g.const(0.5)]), top])
    idx = g.op("Gather", [idx, g.const([2, 1, 0], np.int64)], axis=2)  # volume axis order
    base = g.op("Floor", [idx])
    frac = g.op("Sub", [idx, base])
    zero = g.const(0.0)
    total = None
    for corner in range(8):
        offset = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1], np.float32)
        c = g.op("Add", [base, g.const(offset)])
        valid = g.op(
            "And",
            [g.op("GreaterOrEqual", [c, zero]), g.op("LessOrEqual", [c, top])],
        )
        upper = g.const(offset.astype(bool), np.bool_)
        weight = g.op("Where", [upper, frac, g.op("Sub", [g.const(1.0), frac])])
        weight = g.op("Where", [valid, weight, g.op("Mul", [weight, zero])])
        weight = g.op("ReduceProd", [weight, g.const([2], np.int64)], keepdims=0)
        clipped = g.op("Cast", [g.op("Clip", [c, zero, top])], to=TensorProto.INT64)
        value = g.op("GatherND", [x, clipped], batch_dims=1)
        term = g.op("Mul", [value, weight])
        total = term if total is None else g.op("Add", [total, term])
    return total


def _model(g: _Graph, inputs, outputs) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, "crownscan_test", inputs, outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _io(r: int | None = None):
    dim = r if r is not None else "R"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, dim, dim, dim])
    p = helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, "N", 3])
    return x, p


def sampler_model(kind: str = "native", align_corners: bool = True) -> onnx.ModelProto:
    """x (1,R,R,R), p (1,N,3) -> ``v`` (1,N): the sampled volume (no logit)."""
    g = _Graph()
    if kind == "native":
        out = native_sampler_nodes(g, "x", "p", align_corners)
    elif kind == "plain":
        out = plain_sampler_nodes(g, "x", "p")
    else:
        raise ValueError(kind)
    g.nodes.append(helper.make_node("Identity", [out], ["v"]))
    v = helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, "N"])
    return _model(g, list(_io()), [v])


def _logit_nodes(g: _Graph, sampled: str, k: float, out: str) -> None:
    centred = g.op("Sub", [sampled, g.const(0.5)])
    g.nodes.append(helper.make_node("Mul", [centred, g.const(float(k))], [out]))


def _unit_to_ifnet(g: _Graph, p: str) -> str:
    swapped = g.op("Gather", [p, g.const([2, 1, 0], np.int64)], axis=2)
    return g.op("Mul", [swapped, g.const(2.0)])


def identity_crown_model(
    sampler: str = "native",
    *,
    k: float = 10.0,
    align_corners: bool = True,
    convention: str = "ifnet",
    output_kind: str = "logits",
    static_resolution: int | None = None,
) -> onnx.ModelProto:
    """The identity crown model (see module docstring).

    ``convention="unit"`` makes a model that takes unit-cube (x, y, z) points instead;
    ``output_kind="probability"`` returns the sampled occupancy itself;
    ``static_resolution`` fixes R in the declared input shape.
    """
    g = _Graph()
    p = "p" if convention == "ifnet" else _unit_to_ifnet(g, "p")
    if sampler == "native":
        sampled = native_sampler_nodes(g, "x", p, align_corners)
    else:
        sampled = plain_sampler_nodes(g, "x", p)
    if output_kind == "logits":
        _logit_nodes(g, sampled, k, "out")
    else:
        g.nodes.append(helper.make_node("Identity", [sampled], ["out"]))
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "N"])
    return _model(g, list(_io(static_resolution)), [out])


def two_part_identity_models(k: float = 10.0) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Encoder x -> ``feat`` (x scaled by 2) and ``feat_half`` (0.5 constant volume);
    decoder (feat, feat_half, p) -> out = k * (sample(feat) / 2 - feat_half sample)."""
    e = _Graph("e_")
    e.nodes.append(helper.make_node("Mul", ["x", e.const(2.0)], ["feat"]))
    e.nodes.append(
        helper.make_node("Add", [e.op("Mul", ["x", e.const(0.0)]), e.const(0.5)], ["feat_half"])
    )
    x, _ = _io()
    feats = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "R", "R", "R"])
        for n in ("feat", "feat_half")
    ]
    encoder = _model(e, [x], feats)

    d = _Graph("d_")
    a = native_sampler_nodes(d, "feat", "p")
    b = native_sampler_nodes(d, "feat_half", "p")
    diff = d.op("Sub", [d.op("Mul", [a, d.const(0.5)]), b])
    d.nodes.append(helper.make_node("Mul", [diff, d.const(float(k))], ["out"]))
    _, p = _io()
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "N"])
    decoder = _model(d, [*feats, p], [out])
    return encoder, decoder


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def crown_manifest(
    folder: Path,
    onnx_name: str | None = "identity.onnx",
    *,
    name: str = "identity",
    **overrides,
) -> dict:
    """A complete crown manifest dict for a test model; ``overrides`` replace top-level keys."""
    data = {
        "kind": "crown",
        "name": f"test {name}",
        "version": "1",
        "onnx": onnx_name,
        "inputs": {"voxels": "x", "points": "p"},
        "output": "out",
        "output_kind": "logits",
        "voxel_resolution": 64,
        "voxelization": "solid",
        "frame": {"mode": "fixed", "size_mm": 20.0, "center": "bbox"},
        "point_convention": "ifnet",
        "generation": {"resolution": 64, "threshold": 0.5, "batch_points": 100000},
        "smoothing": {"method": "none", "iterations": 0},
    }
    if onnx_name is None:
        del data["onnx"]
    data.update(overrides)
    return data


def write_manifest(folder: Path, data: dict, stem: str = "identity") -> Path:
    import json

    path = folder / f"{stem}.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path
