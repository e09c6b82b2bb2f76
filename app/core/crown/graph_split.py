"""Splitting a one-graph crown model into an encoder (voxels only) and a decoder (the rest).

A one-graph occupancy network (voxels + points -> values) recomputes its encoder for every
batch of points. The encoder is every node that does not depend on the points; its outputs
that the rest of the graph reads become the decoder's extra inputs, so the encoder can run
once per case. Nodes that depend on neither input (shape constants) are copied into whichever
part needs them. The voxel input is fixed to the case's grid size first, so shape inference
gives the feature volumes static shapes (the sampler rewrite needs them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx
from onnx import helper


class SplitError(ValueError):
    """The graph cannot be split; the message says why, for the run report."""


@dataclass
class SplitGraph:
    """The two parts and the tensors that pass between them.

    ``features`` are the encoder outputs the decoder takes as inputs, in order; the voxel
    input itself may be among them (a decoder that reads the voxels directly).
    ``shapes`` holds the static shapes of the features (None where a dimension is unknown).
    """

    encoder: onnx.ModelProto
    decoder: onnx.ModelProto
    features: list[str]
    voxels: str
    points: str
    shapes: dict[str, tuple[int, ...] | None] = field(default_factory=dict)


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(
        a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute
    )


def fix_input_shape(model: onnx.ModelProto, name: str, dims: tuple[int, ...]) -> None:
    """Give input ``name`` the static trailing ``dims`` (leading dims become 1), in place."""
    for item in model.graph.input:
        if item.name != name:
            continue
        shape = item.type.tensor_type.shape
        rank = len(shape.dim)
        if rank < len(dims):
            raise SplitError(f"input '{name}' has rank {rank}, fewer than {len(dims)} dims")
        wanted = [1] * (rank - len(dims)) + list(dims)
        for dim, value in zip(shape.dim, wanted, strict=True):
            if dim.HasField("dim_value") and dim.dim_value != value:
                raise SplitError(f"input '{name}' is declared {dim.dim_value} where {value} is fed")
            dim.Clear()
            dim.dim_value = value
        return
    raise SplitError(f"no input named '{name}'")


def value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """Every tensor's type and shape as ONNX shape inference (with data propagation) sees it."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference errors come in several types
        raise SplitError(f"shape inference failed: {str(exc).splitlines()[0][:200]}") from exc
    g = inferred.graph
    return {v.name: v for v in [*g.input, *g.output, *g.value_info]}


def static_shape(info: onnx.ValueInfoProto | None) -> tuple[int, ...] | None:
    """The shape of a tensor if every dimension is a known number."""
    if info is None or not info.type.tensor_type.HasField("shape"):
        return None
    dims = info.type.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    return tuple(int(d.dim_value) for d in dims)


def _closure(nodes: list[onnx.NodeProto], wanted: set[str], stop: set[str]) -> list[onnx.NodeProto]:
    """The nodes needed to compute ``wanted`` from ``stop`` (and constants), in graph order."""
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    keep: set[int] = set()
    todo = [t for t in wanted if t not in stop]
    while todo:
        t = todo.pop()
        i = producer.get(t)
        if i is None or i in keep:
            continue
        keep.add(i)
        todo.extend(x for x in nodes[i].input if x and x not in stop)
    return [n for i, n in enumerate(nodes) if i in keep]


def _part(
    source: onnx.ModelProto,
    name: str,
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    outputs: list[onnx.ValueInfoProto],
) -> onnx.ModelProto:
    used = {x for n in nodes for x in n.input}
    inits = [t for t in source.graph.initializer if t.name in used]
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=list(source.opset_import))
    model.ir_version = source.ir_version
    model.functions.extend(source.functions)
    return model


def split_graph(
    model: onnx.ModelProto, voxels: str, points: str, voxel_dims: tuple[int, ...]
) -> SplitGraph:
    """Split ``model`` into encoder (``voxels`` -> features) and decoder (features + ``points``
    -> the model's outputs); raise :class:`SplitError` saying why when it cannot be split."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    flow = [n.op_type for n in g.node if _has_subgraph(n)]
    if flow:
        raise SplitError(f"has control flow ({flow[0]})")
    initialised = {t.name for t in g.initializer}
    feeds = [i.name for i in g.input if i.name not in initialised]
    others = [n for n in feeds if n not in (voxels, points)]
    if others:
        raise SplitError(f"has another input ('{others[0]}')")
    fix_input_shape(model, voxels, voxel_dims)

    on_points: set[str] = {points}
    on_voxels: set[str] = {voxels}
    for node in g.node:
        if any(x in on_points for x in node.input):
            on_points.update(node.output)
        if any(x in on_voxels for x in node.input):
            on_voxels.update(node.output)
    outputs = [o.name for o in g.output]
    if not all(o in on_points for o in outputs):
        raise SplitError("an output does not depend on the points")
    decoder_nodes = [n for n in g.node if any(x in on_points for x in n.input)]
    features = []
    for node in decoder_nodes:
        for x in node.input:
            if x in on_voxels and x not in on_points and x not in features:
                features.append(x)
    if not features:
        raise SplitError("the output does not depend on the voxels")
    if features == [voxels]:
        raise SplitError("nothing to precompute: the decoder reads the voxels directly")

    infos = value_infos(model)
    missing = [f for f in features if f not in infos or not infos[f].type.HasField("tensor_type")]
    if missing:
        raise SplitError(f"cannot infer the type of '{missing[0]}'")
    computed = [f for f in features if f != voxels]
    encoder = _part(
        model,
        f"{g.name}_encoder",
        _closure(list(g.node), set(computed), {voxels}),
        [infos[voxels]],
        [infos[f] for f in computed],
    )
    decoder = _part(
        model,
        f"{g.name}_decoder",
        _closure(list(g.node), set(outputs), {points, *features}),
        [infos[f] for f in features] + [i for i in g.input if i.name == points],
        list(g.output),
    )
    shapes = {f: static_shape(infos[f]) for f in features}
    return SplitGraph(encoder, decoder, features, voxels, points, shapes)
