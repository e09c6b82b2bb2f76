"""Recipe for the benchmark crown model: IF-Net ShapeNet128Vox, random weights, ONE graph.

The architecture and cost of the network a lab exports (Chibane et al., IF-Net,
``ShapeNet128Vox``), built with ``onnx.helper`` and numpy from a seed, so it needs no PyTorch
and is the same on every machine:

- encoder: 3x3x3 convs (padding 1, ReLU) 1->16 | 16->32, 32->32 | 32->64, 64->64 |
  64->128, 128->128 | 128->128, 128->128 with max-pooling (2) between the stages; the input
  and the last activation of each stage are the feature volumes, at 128^3 (1 and 16 channels),
  64^3 (32), 32^3 (64), 16^3 (128) and 8^3 (128); the BatchNorms are left out (they fold into
  the convs);
- decoder: every volume sampled (``GridSample``, trilinear, align_corners=True, zero padding)
  at the point and its 6 copies displaced by +-0.0722 along each axis, features concatenated as
  channel * 7 + k (2583 of them), then 1x1 convs 2583 -> 256 -> 256 -> 256 -> 1 with ReLUs.

Inputs ``x`` (1, 128, 128, 128) voxels and ``p`` (1, N, 3) points in the IF-Net convention
(grid_sample order (z, y, x) scaled to [-1, 1]); output ``out`` (1, N) logits. The weights are
random except for one path through the MLP that carries the input occupancy sampled at the
point itself, so ``out ~= K * (occupancy - 0.5)`` plus a small term from all other features:
the surface lies where the input's does, while every layer still runs at full cost.

``sampler="plain"`` writes the sampling with plain ops (Floor, Gather along the flattened
volume, ...) instead of ``GridSample``, as an export bound for TensorRT does.

It lives in the app (not only under ``benchmarks/``) so ``crownscan bench crown`` can build it
from an installed copy; ``benchmarks/models/ifnet128.py`` is the command-line entry:

    python -m benchmarks.models.ifnet128 [FOLDER]   # build (or find) it, print the manifest path
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from app.core.onnx_build import GraphBuilder as _Graph
from app.core.paths import cache_folder

RECIPE_VERSION = 1
OPSET = 20
RESOLUTION = 128
DISPLACEMENT = 0.0722
K = 10.0
STAGES = ((1, (16,)), (16, (32, 32)), (32, (64, 64)), (64, (128, 128)), (128, (128, 128)))
HIDDEN = 256


def displacements() -> np.ndarray:
    """The 7 offsets (grid_sample units): the point itself, then -/+ along each grid axis."""
    d = [np.zeros(3)]
    for axis in range(3):
        for sign in (-1.0, 1.0):
            v = np.zeros(3)
            v[axis] = sign * DISPLACEMENT
            d.append(v)
    return np.asarray(d, np.float32)


def _native_sample(b: _Graph, volume: str, grid: str, shape: tuple[int, ...]) -> str:
    return b.op("GridSample", [volume, grid], "feat", mode="linear", padding_mode="zeros",
                align_corners=1)  # fmt: skip


def _plain_sample(b: _Graph, volume: str, grid: str, shape: tuple[int, ...]) -> str:
    """Trilinear sampling (align_corners, zero padding) of (1, C, D, H, W) at grid
    (1, 1, 7, N, 3) -> (1, C, 1, 7, N), gathering from the volume flattened to (1, C, D*H*W)."""
    _, c, d, h, w = shape
    flat = b.op("Reshape", [volume, b.const([1, c, d * h * w], np.int64)], "flat")
    pts = b.op("Reshape", [grid, b.const([-1, 3], np.int64)])
    top = b.const([w - 1, h - 1, d - 1])
    idx = b.op("Mul", [b.op("Mul", [b.op("Add", [pts, b.const(1.0)]), b.const(0.5)]), top])
    base = b.op("Floor", [idx])
    frac = b.op("Sub", [idx, base])
    zero = b.const(0.0)
    strides = b.const([1, w, h * w], np.int64)
    total = None
    for corner in range(8):
        offset = np.array([corner & 1, (corner >> 1) & 1, (corner >> 2) & 1], np.float32)
        cc = b.op("Add", [base, b.const(offset)])
        valid = b.op("And", [b.op("GreaterOrEqual", [cc, zero]), b.op("LessOrEqual", [cc, top])])
        weight = b.op("Where", [b.const(offset.astype(bool), np.bool_), frac,
                                b.op("Sub", [b.const(1.0), frac])])  # fmt: skip
        weight = b.op("Where", [valid, weight, b.op("Mul", [weight, zero])])
        weight = b.op("ReduceProd", [weight, b.const([1], np.int64)], keepdims=0)
        clipped = b.op("Cast", [b.op("Max", [b.op("Min", [cc, top]), zero])], to=TensorProto.INT64)
        flat_idx = b.op("ReduceSum", [b.op("Mul", [clipped, strides]), b.const([1], np.int64)],
                        keepdims=0)  # fmt: skip
        value = b.op("Gather", [flat, flat_idx], axis=2)
        term = b.op("Mul", [value, weight])
        total = term if total is None else b.op("Add", [total, term])
    return b.op("Reshape", [total, b.const([1, c, 1, 7, -1], np.int64)], "feat")


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def build(
    sampler: str = "native",
    seed: int = 0,
    *,
    resolution: int = RESOLUTION,
    stages: tuple = STAGES,
    hidden: int = HIDDEN,
) -> onnx.ModelProto:
    """The benchmark model (see module docstring); same weights for both samplers.

    ``resolution``, ``stages`` ((in channels, (out channels per conv, ...)), ...) and
    ``hidden`` make smaller models of the same structure for tests.
    """
    if sampler not in ("native", "plain"):
        raise ValueError(f"sampler must be 'native' or 'plain', got {sampler!r}")
    sample = _native_sample if sampler == "native" else _plain_sample
    rng = np.random.default_rng(seed)
    b = _Graph()
    r = resolution
    volumes = [(b.op("Unsqueeze", ["x", b.const([1], np.int64)], "vol"), (1, 1, r, r, r))]
    net, size = volumes[0][0], r
    for i, (cin, couts) in enumerate(stages):
        if i > 0:
            net = b.op("MaxPool", [net], "pool", kernel_shape=[2, 2, 2], strides=[2, 2, 2])
            size //= 2
        for cout in couts:
            wgt = b.const(_he(rng, (cout, cin, 3, 3, 3), cin * 27), hint="conv_w")
            bias = b.const(rng.normal(0, 0.01, cout), hint="conv_b")
            net = b.op("Relu", [b.op("Conv", [net, wgt, bias], pads=[1] * 6)])
            cin = cout
        volumes.append((net, (1, cin, size, size, size)))

    shifted = b.op("Add", [b.op("Reshape", ["p", b.const([1, 1, 1, -1, 3], np.int64)]),
                           b.const(displacements().reshape(1, 1, 7, 1, 3))])  # fmt: skip
    feats = [sample(b, vol, shifted, shape) for vol, shape in volumes]
    joined = b.op("Concat", feats, axis=1)
    features = 7 * sum(shape[1] for _, shape in volumes)
    net = b.op("Reshape", [joined, b.const([1, features, -1], np.int64)], "features")

    sizes = [features, hidden, hidden, hidden]
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        wgt = _he(rng, (fan_out, fan_in), fan_in) * 0.5
        bias = rng.normal(0, 0.01, fan_out).astype(np.float32)
        wgt[0], bias[0] = 0.0, 0.0
        wgt[0, 0] = 1.0  # unit 0 carries feature 0: the occupancy at the point itself, >= 0
        wgt[1:, 0] = 0.0
        net = b.op("Conv", [net, b.const(wgt[..., None]), b.const(bias)])
        net = b.op("Relu", [net])
    w_out = rng.normal(0, 0.01, (1, hidden)).astype(np.float32)
    w_out[0, 0] = K
    logits = b.op("Conv", [net, b.const(w_out[..., None]), b.const([-K / 2])])
    b.nodes.append(helper.make_node("Reshape", [logits, b.const([1, -1], np.int64)], ["out"]))

    graph = helper.make_graph(
        b.nodes,
        f"ifnet_shapenet128vox_{sampler}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, r, r, r]),
         helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, "N", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "N"])],
        b.inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    model.producer_name = f"crownscan benchmarks/models/ifnet128.py v{RECIPE_VERSION}"
    onnx.checker.check_model(model)
    return model


def manifest(onnx_name: str, sampler: str) -> dict:
    """The crown manifest for a built model (solid voxels, fixed 20 mm frame)."""
    return {
        "kind": "crown",
        "name": f"IF-Net ShapeNet128Vox benchmark ({sampler} sampler, random weights)",
        "version": str(RECIPE_VERSION),
        "onnx": onnx_name,
        "inputs": {"voxels": "x", "points": "p"},
        "output": "out",
        "output_kind": "logits",
        "voxel_resolution": RESOLUTION,
        "voxelization": "solid",
        "frame": {"mode": "fixed", "size_mm": 20.0, "center": "bbox"},
        "point_convention": "ifnet",
        "generation": {"resolution": 129, "coarse_resolution": 33, "threshold": 0.5,
                       "batch_points": 100000},
        "smoothing": {"method": "taubin", "iterations": 10},
    }  # fmt: skip


def ensure(folder: Path | None = None, sampler: str = "native", seed: int = 0) -> Path:
    """Build the model and its manifest into ``folder`` (default: the user cache) unless they
    are already there; returns the manifest path."""
    folder = cache_folder("benchmark-models") if folder is None else Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"ifnet128_{sampler}_s{seed}_v{RECIPE_VERSION}"
    onnx_path, manifest_path = folder / f"{stem}.onnx", folder / f"{stem}.json"
    if not onnx_path.is_file():
        tmp = onnx_path.with_suffix(f".{os.getpid()}.tmp")
        onnx.save(build(sampler, seed), str(tmp))
        os.replace(tmp, onnx_path)
    manifest_path.write_text(json.dumps(manifest(onnx_path.name, sampler), indent=2), "utf-8")
    return manifest_path


def digest(path: Path) -> str:
    """Short sha256 of a built model, to tell builds apart in benchmark output."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
