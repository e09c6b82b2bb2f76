"""How many points per decoder batch fit a memory budget.

The decoder's intermediate tensors grow with the number of points in a batch (IF-Net: about
30 kB per point, 5 GB at 100k points), so the batch size is chosen from a budget rather than
a fixed count. The bytes per point come from shape inference at two point counts: each
tensor's size is linear in the count, and a walk over the nodes in graph order (each tensor
alive from its producer to its last reader) gives the peak of the live per-point bytes.

That walk counts the tensors only. Measured growth of the process during one decoder batch was
1.3x (gather sampler) to 3.7x (plain-op sampler) the estimate: ONNX Runtime's CPU arena rounds
allocations up and keeps them, and kernels make temporaries of their own. The batch is therefore
sized for :data:`RSS_PER_TENSOR_BYTE` times the estimate, the largest ratio measured, rounded up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # onnx takes over a second to import (ml_dtypes), holding the interpreter:
    import onnx  # a run that only sizes its batch (batch_for_budget) must not pay for it

MIN_BATCH = 256
RSS_PER_TENSOR_BYTE = 4.0
UNKNOWN_BYTES_PER_POINT = 48 * 1024
_PROBE = (1024, 2048)


def _with_points(model: onnx.ModelProto, points: str, count: int) -> onnx.ModelProto:
    m = type(model).FromString(model.SerializeToString())
    for item in m.graph.input:
        if item.name == points:
            for dim in item.type.tensor_type.shape.dim:
                if not dim.HasField("dim_value"):
                    dim.Clear()
                    dim.dim_value = count
    return m


def _static_sizes(infos, sizes: dict[str, int | None]) -> None:
    from onnx import helper

    for info in infos:
        t = info.type.tensor_type
        if not t.HasField("shape") or not all(d.HasField("dim_value") for d in t.shape.dim):
            sizes.setdefault(info.name, None)
            continue
        n = 1
        for d in t.shape.dim:
            n *= d.dim_value
        sizes[info.name] = n * helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize


def _sizes(model: onnx.ModelProto, points: str, count: int) -> dict[str, int | None]:
    """Bytes of every tensor with ``count`` points: ONNX shape inference, then ONNX Runtime's
    symbolic inference (which needs ``sympy``) for what that leaves unknown (shapes computed
    from ``Shape`` chains, as exporters write for ``Expand``)."""
    import onnx

    m = _with_points(model, points, count)
    sizes: dict[str, int | None] = {}
    try:
        g = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True).graph
        _static_sizes([*g.input, *g.output, *g.value_info], sizes)
    except Exception:  # inference errors come in several types
        pass
    outputs = [o for n in m.graph.node for o in n.output if o]
    if all(sizes.get(o) is not None for o in outputs):
        return sizes
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        g = SymbolicShapeInference.infer_shapes(m, auto_merge=True).graph
    except Exception:  # the symbolic inference raises several types too
        return sizes
    known = {k: v for k, v in sizes.items() if v is not None}
    _static_sizes([*g.input, *g.output, *g.value_info], sizes)
    sizes.update(known)
    return sizes


def bytes_per_point(model: onnx.ModelProto, points: str) -> float | None:
    """Peak bytes of the tensors alive at once, per query point; None when a shape that
    depends on the points cannot be inferred."""
    a, b = (_sizes(model, points, n) for n in _PROBE)
    if not a or not b:
        return None
    slope: dict[str, float] = {}
    for node in model.graph.node:
        for out in node.output:
            if not out:
                continue
            sa, sb = a.get(out), b.get(out)
            if sa is None or sb is None:
                return None
            slope[out] = (sb - sa) / (_PROBE[1] - _PROBE[0])
    last_read = {x: i for i, n in enumerate(model.graph.node) for x in n.input}
    outputs = {o.name for o in model.graph.output}
    live = {points: (b.get(points) or 0) / _PROBE[1]}
    peak = sum(live.values())
    for i, node in enumerate(model.graph.node):
        live.update({o: slope[o] for o in node.output if o})
        peak = max(peak, sum(live.values()))
        for x in set(node.input):
            if last_read.get(x) == i and x not in outputs:
                live.pop(x, None)
    return peak


def batch_for_budget(per_point: float | None, budget_bytes: int, cap: int) -> int:
    """Points per batch: as many as the budget holds (``per_point`` estimated tensor bytes,
    each costing :data:`RSS_PER_TENSOR_BYTE` of process memory), at most ``cap`` (the
    manifest's ``batch_points``), at least :data:`MIN_BATCH`. An unknown cost counts as
    :data:`UNKNOWN_BYTES_PER_POINT` (the largest estimate seen, IF-Net's gather decoder) rather
    than trusting ``cap``: 100k points of the demo model took 9 GB."""
    if per_point is None or per_point <= 0:
        per_point = UNKNOWN_BYTES_PER_POINT
    return max(MIN_BATCH, min(cap, int(budget_bytes // (per_point * RSS_PER_TENSOR_BYTE))))
