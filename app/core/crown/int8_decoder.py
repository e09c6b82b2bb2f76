"""An int8 copy of a crown decoder: ONNX Runtime dynamic quantization of its dense layers.

IF-Net's MLP is written as 1x1 ``Conv`` over (1, F, N) features; ONNX Runtime's dynamic
``ConvInteger`` is slower on the CPU than the float ``Conv`` it replaces, so each such layer is
first rewritten as ``Transpose -> MatMul -> Add -> Transpose`` (exact: the same products and
sums) and the ``MatMul`` weights are then quantized to int8 per tensor, activations to uint8
per batch (``DynamicQuantizeMatMul``). Weights of existing ``MatMul`` nodes whose second input
is a float constant of rank 2 are quantized as well. Only the decoder is touched; the output
differs from the float decoder by the quantization error, so this path is offered as an
option (``generation.decoder_int8``) and never chosen silently.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

INT8_VERSION = 1


def _conv_as_matmul(
    node: onnx.NodeProto, weights: dict[str, np.ndarray], model: onnx.ModelProto
) -> list[onnx.NodeProto] | None:
    """``Conv`` with a (O, I, 1) constant kernel, no padding, stride, dilation or groups, as
    a MatMul over channels-last rows; None when ``node`` is not such a layer."""
    if node.op_type != "Conv" or node.input[1] not in weights:
        return None
    w = weights[node.input[1]]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    strided = any(v != 1 for k in ("strides", "dilations") for v in attrs.get(k, []))
    if w.ndim != 3 or w.shape[2] != 1 or strided or any(attrs.get("pads", [])):
        return None
    if attrs.get("group", 1) != 1:
        return None
    out = node.output[0]
    name = f"{out}__int8"
    model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w[:, :, 0].T),
                                                           f"{name}_w"))  # fmt: skip
    nodes = [
        helper.make_node("Transpose", [node.input[0]], [f"{name}_rows"], perm=[0, 2, 1]),
        helper.make_node(
            "MatMul", [f"{name}_rows", f"{name}_w"], [f"{name}_mm"], name=f"{name}_mm"
        ),
    ]
    last = f"{name}_mm"
    if len(node.input) > 2 and node.input[2]:
        nodes.append(helper.make_node("Add", [last, node.input[2]], [f"{name}_bias"]))
        last = f"{name}_bias"
    nodes.append(helper.make_node("Transpose", [last], [out], perm=[0, 2, 1]))
    return nodes


def dense_layers_as_matmul(model: onnx.ModelProto) -> list[str]:
    """Rewrite 1x1 ``Conv`` layers as MatMuls in place (see module docstring); returns the
    names of the MatMul nodes with a constant float (K, M) weight, the ones to quantize."""
    g = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in g.initializer
               if t.data_type == TensorProto.FLOAT}  # fmt: skip
    nodes: list[onnx.NodeProto] = []
    for i, node in enumerate(g.node):
        if not node.name:
            node.name = f"crownscan_node{i}"
        nodes.extend(_conv_as_matmul(node, weights, model) or [node])
    del g.node[:]
    g.node.extend(nodes)
    used = {x for n in g.node for x in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    weights = {t.name: t for t in g.initializer if t.data_type == TensorProto.FLOAT}
    return [n.name for n in g.node if n.op_type == "MatMul" and n.input[1] in weights
            and len(weights[n.input[1]].dims) == 2]  # fmt: skip


def quantize_decoder(source: Path, target: Path) -> int:
    """Write the int8 copy of decoder ``source`` to ``target``; returns the layers quantized
    (0: nothing to quantize, ``target`` not written)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    names = dense_layers_as_matmul(model)
    if not names:
        return 0
    staged = target.with_name(f"{target.stem}.float.onnx")
    onnx.save(model, str(staged))
    logging.disable(logging.WARNING)  # the quantizer logs advice on the root logger
    try:
        quantize_dynamic(staged, target, nodes_to_quantize=names, op_types_to_quantize=["MatMul"],
                         weight_type=QuantType.QInt8)  # fmt: skip
    finally:
        logging.disable(logging.NOTSET)
        staged.unlink(missing_ok=True)
    return len(names)


def int8_copy(source: Path) -> Path | str:
    """The int8 copy of decoder (or one-graph model) ``source``, made once and kept in the
    user cache keyed by the file's hash; a string saying why when there is none."""
    from app.core.fileio import file_sha256
    from app.core.paths import cache_folder

    try:
        folder = cache_folder("crown-int8", f"{file_sha256(Path(source))[:24]}v{INT8_VERSION}")
    except OSError as exc:
        return f"cache folder not writable: {exc}"
    target = folder / "decoder.int8.onnx"
    if target.is_file():
        return target
    staged = folder / f"decoder.{os.getpid()}.{threading.get_ident()}.tmp.onnx"
    try:
        if not quantize_decoder(Path(source), staged):
            return "no dense layer to quantize"
        os.replace(staged, target)
    except Exception as exc:  # the quantizer raises several types; the float path still runs
        return f"quantization failed: {type(exc).__name__} {str(exc)[:200]}"
    finally:
        staged.unlink(missing_ok=True)
    return target
