"""Rewriting the decoder's samplers as gathers of contiguous rows from per-case layouts.

ONNX Runtime's CPU ``GridSample`` reads a feature volume channel by channel: each point costs
C reads a whole channel plane apart, and the corner weights are recomputed per channel (about
90% of an IF-Net decoder batch). Laid out channels-last with a one-voxel zero border, each
corner of a point is one contiguous row of C floats. The encoder gains that layout as an extra
output (computed once per case); in the decoder each ``GridSample`` becomes corner indices and
weights per point (ONNX Runtime's own arithmetic for the coordinates, so results agree to
rounding), one ``Gather`` of the 8 corner rows, a weighted sum (``MatMul`` of the (1, 8)
weights with the (8, C) rows) and a transpose back to ``GridSample``'s (1, C, D', H', W').

A plain-op sampler (as a TensorRT-bound export writes it) gathers from the volume flattened
to (1, C, D*H*W) along the last axis, with ``Gather`` or with ``GatherElements`` over an index
expanded across the channels; that becomes a gather of rows of the transposed (D*H*W, C)
volume, transposed back.

Only 5-D ``GridSample`` with ``mode=linear`` and ``padding_mode=zeros`` on a feature of static
shape (1, C, D, H, W), and gathers along the last axis of a feature of static shape, are
rewritten; anything else is left as it is and listed in :class:`RewriteResult`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.core.crown.graph_split import SplitGraph, value_infos

LAYOUT_SUFFIX = "__cl"
ROWS_SUFFIX = "__rows"


@dataclass
class RewriteResult:
    """How many ``GridSample`` nodes became gathers, and why others were left alone."""

    rewritten: int
    skipped: list[str]


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _why_not(node: onnx.NodeProto, split: SplitGraph) -> str | None:
    a = _attrs(node)
    mode = a.get("mode", b"bilinear")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    padding = a.get("padding_mode", b"zeros")
    padding = padding.decode() if isinstance(padding, bytes) else padding
    if mode not in ("linear", "bilinear"):
        return f"mode {mode}"
    if padding != "zeros":
        return f"padding_mode {padding}"
    volume = node.input[0]
    if volume not in split.features:
        return "its volume is computed per batch"
    shape = split.shapes.get(volume)
    if shape is None or len(shape) != 5 or shape[0] != 1:
        return f"volume shape {shape} is not static (1, C, D, H, W)"
    return None


class _Nodes:
    """Appends nodes and constants under a unique prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, value, dtype=np.float32) -> str:
        self._n += 1
        name = f"{self.prefix}c{self._n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        self._n += 1
        out = out or f"{self.prefix}{op_type.lower()}{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def _layout_nodes(b: _Nodes, volume: str, shape: tuple[int, ...]) -> str:
    """(1, C, D, H, W) -> ((D+2)(H+2)(W+2), C): channels-last with a zero border."""
    _, c, d, h, w = shape
    cdhw = b.op("Reshape", [volume, b.const([c, d, h, w], np.int64)])
    last = b.op("Transpose", [cdhw], perm=[1, 2, 3, 0])
    padded = b.op("Pad", [last, b.const([1, 1, 1, 0, 1, 1, 1, 0], np.int64)])
    return b.op("Reshape", [padded, b.const([-1, c], np.int64)], volume + LAYOUT_SUFFIX)


def _gather_nodes(
    b: _Nodes, rows: str, grid: str, shape: tuple[int, ...], align: bool, out: str
) -> None:
    """The trilinear sample of the laid-out volume ``rows`` at ``grid`` into ``out``."""
    _, c, d, h, w = shape
    size = np.array([w, h, d], np.float32)  # grid columns are (x, y, z) = (W, H, D)
    g = b.op("Reshape", [grid, b.const([-1, 3], np.int64)])
    if align:
        x = b.op("Mul", [b.op("Mul", [b.op("Add", [g, b.const(1.0)]), b.const(0.5)]),
                         b.const(size - 1)])  # fmt: skip
    else:
        x = b.op("Mul", [b.op("Sub", [b.op("Mul", [b.op("Add", [g, b.const(1.0)]),
                                                   b.const(size)]), b.const(1.0)]),
                         b.const(0.5)])  # fmt: skip
    x = b.op("Max", [b.op("Min", [x, b.const(size)]), b.const(-1.0)])
    lo = b.op("Min", [b.op("Floor", [x]), b.const(size - 1)])
    upper = b.op("Sub", [x, lo])  # weight of the upper corner, per axis
    lower = b.op("Sub", [b.op("Add", [lo, b.const(1.0)]), x])
    strides = np.array([[1], [w + 2], [(w + 2) * (h + 2)]], np.int64)
    base = b.op("Cast", [b.op("Add", [lo, b.const(1.0)])], to=TensorProto.INT64)
    base = b.op("MatMul", [base, b.const(strides, np.int64)])  # (M, 1) flat index of corner 0
    corners = [(k >> 2) * strides[2, 0] + ((k >> 1) & 1) * strides[1, 0] + (k & 1) for k in
               range(8)]  # fmt: skip
    index = b.op("Add", [base, b.const(corners, np.int64)])  # (M, 8), corner k = 4 dz + 2 dy + dx
    values = b.op("Gather", [rows, index], axis=0)  # (M, 8, C)

    both = b.op("Concat", [lower, upper], axis=1)  # (M, 6): lower x y z, upper x y z
    factors = []
    for axis, bit in ((0, 0), (1, 1), (2, 2)):
        cols = [axis + 3 * ((k >> bit) & 1) for k in range(8)]
        factors.append(b.op("Gather", [both, b.const(cols, np.int64)], axis=1))
    weights = b.op("Mul", [b.op("Mul", [factors[2], factors[1]]), factors[0]])
    weights = b.op("Unsqueeze", [weights, b.const([1], np.int64)])  # (M, 1, 8)
    summed = b.op("MatMul", [weights, values])  # (M, 1, C)
    lead = b.op("Slice", [b.op("Shape", [grid]), b.const([0], np.int64), b.const([4], np.int64)])
    target = b.op("Concat", [lead, b.const([c], np.int64)], axis=0)
    cl = b.op("Reshape", [summed, target])
    b.op("Transpose", [cl], out, perm=[0, 4, 1, 2, 3])


def _rows_nodes(b: _Nodes, data: str, shape: tuple[int, ...]) -> str:
    """(*lead, K) -> (K, prod(lead)): the last axis first, so a gather along it reads rows."""
    rank = len(shape)
    first = b.op("Transpose", [data], perm=[rank - 1, *range(rank - 1)])
    return b.op("Reshape", [first, b.const([shape[-1], -1], np.int64)], data + ROWS_SUFFIX)


def _row_gather_nodes(b: _Nodes, rows: str, index: str, rank: int, lead: tuple, out: str) -> None:
    """``Gather(data, index, axis=-1)`` as a row gather: (*index, L) -> (*lead, *index)."""
    g = b.op("Gather", [rows, index], axis=0)
    moved = b.op("Transpose", [g], perm=[rank, *range(rank)])
    target = b.op("Concat", [b.const(list(lead), np.int64), b.op("Shape", [index])], axis=0)
    b.op("Reshape", [moved, target], out)


@dataclass
class _RowIndex:
    """The per-point index of a last-axis gather: a tensor of known rank, or the unexpanded
    (1, ..., 1, n) index of a ``GatherElements`` that is the same for every channel."""

    index: str
    rank: int
    expanded_from: str | None = None


def _row_index(
    node: onnx.NodeProto, split: SplitGraph, infos: dict, producers: dict
) -> _RowIndex | str:
    """How ``node`` gathers along the last axis of a feature, or why it cannot be rewritten."""
    data = node.input[0]
    shape = split.shapes.get(data)
    if shape is None or len(shape) < 2:
        return f"data shape {shape} is not static"
    axis = _attrs(node).get("axis", 0)
    if axis % len(shape) != len(shape) - 1:
        return "not along the last axis"
    index = node.input[1]
    if node.op_type == "Gather":
        rank = static_rank(infos.get(index))
        return _RowIndex(index, rank) if rank else "index rank unknown"
    expand = producers.get(index)
    if expand is None or expand.op_type != "Expand":
        return "index is not expanded over the channels"
    source = expand.input[0]
    dims = _dims(infos.get(source))
    if dims is None or len(dims) != len(shape) or any(d != 1 for d in dims[:-1]):
        return "index differs between channels"
    out = _dims(infos.get(node.output[0]))  # unknown when the export computes the shape
    if out is not None and (
        len(out) != len(shape)
        or any(o not in (None, d) for o, d in zip(out[:-1], shape[:-1], strict=True))
    ):
        return "index does not cover every channel"
    return _RowIndex(f"{source}__flat", 1, source)


def _dims(info) -> list | None:
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None
            for d in info.type.tensor_type.shape.dim]  # fmt: skip


def static_rank(info) -> int | None:
    dims = _dims(info)
    return len(dims) if dims else None


def _elem_type(graph: onnx.GraphProto, name: str) -> int:
    for item in graph.input:
        if item.name == name:
            return item.type.tensor_type.elem_type
    return TensorProto.FLOAT


def _live_nodes(nodes: list[onnx.NodeProto], outputs: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` without those no graph output depends on, in order. A rewritten
    ``GatherElements`` leaves its channel-expanded index unread; ONNX Runtime would still
    compute it (a fifth of a plain-op sampler's batch) and the memory estimate count it."""
    needed = set(outputs)
    live = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(node.input)
    return live[::-1]


def rewrite_samplers(split: SplitGraph) -> RewriteResult:
    """Rewrite the decoder's samplers in place (see module docstring): ``GridSample`` on a
    feature volume becomes a channels-last trilinear gather; ``Gather`` or channel-expanded
    ``GatherElements`` along the last axis of a feature (a plain-op sampler reading a
    flattened volume) becomes a gather of contiguous rows."""
    dec = split.decoder.graph
    enc = split.encoder.graph
    infos = value_infos(split.decoder)
    producers = {o: n for n in dec.node for o in n.output}
    skipped: list[str] = []
    new_nodes: list[onnx.NodeProto] = []
    layouts: dict[str, tuple[str, tuple[int, ...]]] = {}  # name -> (source feature, shape)
    lay = _Nodes("crownscan_layout_")
    rewritten = 0
    for node in dec.node:
        where = node.name or node.output[0]
        b = _Nodes(f"crownscan_gather{rewritten}_")
        if node.op_type == "GridSample":
            why = _why_not(node, split)
            if why is not None:
                skipped.append(f"{node.op_type} {where}: {why}")
                new_nodes.append(node)
                continue
            volume = node.input[0]
            _, c, d, h, w = shape = split.shapes[volume]
            name = volume + LAYOUT_SUFFIX
            if name not in layouts:
                _layout_nodes(lay, volume, shape)
                layouts[name] = (volume, ((d + 2) * (h + 2) * (w + 2), c))
            align = bool(_attrs(node).get("align_corners", 0))
            _gather_nodes(b, name, node.input[1], shape, align, node.output[0])
        elif node.op_type in ("Gather", "GatherElements") and node.input[0] in split.features:
            found = _row_index(node, split, infos, producers)
            if isinstance(found, str):
                skipped.append(f"{node.op_type} {where}: {found}")
                new_nodes.append(node)
                continue
            data = node.input[0]
            shape = split.shapes[data]
            name = data + ROWS_SUFFIX
            if name not in layouts:
                _rows_nodes(lay, data, shape)
                layouts[name] = (data, (shape[-1], int(np.prod(shape[:-1]))))
            if found.expanded_from is not None:
                b.op("Reshape", [found.expanded_from, b.const([-1], np.int64)], found.index)
            _row_gather_nodes(b, name, found.index, found.rank, shape[:-1], node.output[0])
        else:
            new_nodes.append(node)
            continue
        new_nodes.extend(b.nodes)
        dec.initializer.extend(b.inits)
        rewritten += 1
    if not rewritten:
        return RewriteResult(0, skipped)

    del dec.node[:]
    dec.node.extend(_live_nodes(new_nodes, {o.name for o in dec.output}))
    enc.node.extend(lay.nodes)
    enc.initializer.extend(lay.inits)
    points = [i for i in dec.input if i.name == split.points]
    for name, (source, shape) in layouts.items():
        info = helper.make_tensor_value_info(name, _elem_type(dec, source), list(shape))
        enc.output.append(info)
        split.features.append(name)
        split.shapes[name] = shape
    still_read = {x for n in dec.node for x in n.input}
    for name in [f for f in split.features if f not in still_read]:
        split.features.remove(name)
        split.shapes.pop(name, None)
    by_name = {i.name: i for i in [*enc.output, *dec.input]}
    kept_enc = [by_name[f] for f in split.features if f != split.voxels]
    kept_dec = [by_name[f] for f in split.features]
    del enc.output[:]
    enc.output.extend(kept_enc)
    del dec.input[:]
    dec.input.extend([*kept_dec, *points])
    return RewriteResult(rewritten, skipped)
