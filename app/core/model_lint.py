"""Model lint: does the ONNX graph match what its manifest says about it?

A model fed or sampled differently from how it was trained still runs and gives small, wrong
results. The lint reads the graph (no session, no weights needed) and compares it with the
manifest: input names, ranks and static sizes, the output and its kind, every ``GridSample``'s
``align_corners``, ``padding_mode`` and ``mode`` against the manifest's ``sampling``, and
``Resize`` nodes whose output size was frozen at export in a model fed images of any size.
Each finding is one warning naming the file and the node.

The findings are kept on disk per model (its files' hashes), since reading a graph means
importing ``onnx``: over a second, holding the interpreter, in the middle of a run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from app.core.errors import CrownscanError
from app.core.fileio import atomic_write_bytes, file_sha256
from app.core.manifest import CrownModel, ModelSpec, SegmentationModel
from app.core.paths import cache_folder

_FLOAT_TYPES = {1, 10, 11, 16}  # float, float16, double, bfloat16
_MODES = {"linear": "bilinear", "bilinear": "bilinear", "cubic": "bicubic", "bicubic": "bicubic",
          "nearest": "nearest"}  # fmt: skip
_cache: dict[tuple, list[str]] = {}
LINT_VERSION = 1  # bump when a check changes: the findings kept on disk are then made anew


def _load(path: Path):
    import onnx

    return onnx.load(str(path), load_external_data=False)


def _attrs(node) -> dict:
    from onnx import helper

    out = {}
    for a in node.attribute:
        value = helper.get_attribute_value(a)
        out[a.name] = value.decode() if isinstance(value, bytes) else value
    return out


def _node_name(node, index: int) -> str:
    return f"{node.op_type} node '{node.name}'" if node.name else f"{node.op_type} node #{index}"


class _Graph:
    """Inputs, outputs and nodes of one ONNX file, with warnings naming it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        model = _load(path)
        g = model.graph
        inits = {i.name for i in g.initializer}
        self.inputs = {i.name: i for i in g.input if i.name not in inits}
        self.outputs = {o.name: o for o in g.output}
        self.nodes = list(g.node)
        self.constants = inits | {o for n in g.node if n.op_type == "Constant" for o in n.output}
        self.warnings: list[str] = []

    def warn(self, what: str) -> None:
        self.warnings.append(f"{self.path.name}: {what}")

    def dims(self, name: str) -> list[int | None]:
        value = self.inputs.get(name) or self.outputs.get(name)
        dims = value.type.tensor_type.shape.dim
        return [d.dim_value if d.HasField("dim_value") else None for d in dims]

    def elem_type(self, name: str) -> int:
        return (self.inputs.get(name) or self.outputs[name]).type.tensor_type.elem_type

    def need_input(self, name: str, role: str) -> bool:
        if name in self.inputs:
            return True
        self.warn(f"has no input '{name}' ({role}); inputs: {', '.join(self.inputs) or 'none'}")
        return False

    def need_output(self, name: str) -> bool:
        if name in self.outputs:
            return True
        self.warn(f"has no output '{name}'; outputs: {', '.join(self.outputs)}")
        return False


def _grid_samples(graph: _Graph, spec: CrownModel) -> None:
    want = spec.sampling
    for i, node in enumerate(graph.nodes):
        if node.op_type != "GridSample":
            continue
        a = _attrs(node)
        where = _node_name(node, i)
        align = bool(a.get("align_corners", 0))
        if align != want.align_corners:
            graph.warn(
                f"{where} samples with align_corners={int(align)}; the manifest declares "
                f"sampling.align_corners {str(want.align_corners).lower()}"
            )
        padding = a.get("padding_mode", "zeros")
        if padding != want.padding_mode:
            graph.warn(
                f"{where} pads with '{padding}'; the manifest declares sampling.padding_mode "
                f"'{want.padding_mode}'"
            )
        mode = _MODES.get(a.get("mode", "bilinear"), a.get("mode"))
        if mode != want.mode:
            graph.warn(f"{where} interpolates '{mode}'; the manifest declares '{want.mode}'")


def _crown(spec: CrownModel) -> list[str]:
    graphs = [_Graph(p) for p in spec.onnx_files]
    first, last = graphs[0], graphs[-1]
    r = spec.voxel_resolution
    if first.need_input(spec.inputs["voxels"], "voxels"):
        dims = first.dims(spec.inputs["voxels"])
        if len(dims) not in (4, 5):
            first.warn(f"input '{spec.inputs['voxels']}' has rank {len(dims)}; 4 or 5 is needed")
        elif any(d not in (None, r) for d in dims[-3:]):
            first.warn(
                f"input '{spec.inputs['voxels']}' is {dims}; the manifest's voxel_resolution is {r}"
            )
    if last.need_input(spec.inputs["points"], "points"):
        dims = last.dims(spec.inputs["points"])
        if len(dims) != 3 or dims[-1] not in (None, 3):
            last.warn(f"input '{spec.inputs['points']}' is {dims}; (1, N, 3) is needed")
    if last.need_output(spec.output) and last.elem_type(spec.output) not in _FLOAT_TYPES:
        last.warn(f"output '{spec.output}' is not floating point; '{spec.output_kind}' needs it")
    for graph in graphs:
        _grid_samples(graph, spec)
    return [w for g in graphs for w in g.warnings]


def _segmentation(spec: SegmentationModel) -> list[str]:
    graph = _Graph(spec.onnx)
    if graph.need_input(spec.input, "image"):
        dims = graph.dims(spec.input)
        if len(dims) != 4 or dims[1] not in (None, 3):
            graph.warn(f"input '{spec.input}' is {dims}; (1, 3, H, W) is needed")
        else:
            fixed = spec.inference.crop_size if spec.inference.mode == "slide" else spec.input_size
            if any(
                d is not None and (fixed is None or d != f)
                for d, f in zip(dims[2:], fixed or (None, None), strict=True)
            ):
                graph.warn(
                    f"input '{spec.input}' is fixed at {dims[2:]}; the manifest feeds "
                    + ("any size" if fixed is None else f"{list(fixed)}")
                )
    if graph.need_output(spec.output):
        is_float = graph.elem_type(spec.output) in _FLOAT_TYPES
        if is_float != (spec.output_kind != "labels"):
            kind = "floating point" if is_float else "integer"
            graph.warn(f"output '{spec.output}' is {kind}; output_kind is '{spec.output_kind}'")
    if spec.input_size is None or spec.resize == "keep_ratio":
        for i, node in enumerate(graph.nodes):
            sizes = node.input[3] if node.op_type == "Resize" and len(node.input) > 3 else ""
            if sizes and sizes in graph.constants:
                graph.warn(
                    f"{_node_name(node, i)} resizes to a size fixed at export while the model "
                    "is fed images of any size (export with scale factors; docs/lab-models.md)"
                )
    return graph.warnings


def lint_model(spec: ModelSpec) -> list[str]:
    """Warnings where the ONNX graph does not match ``spec``; empty when it does.

    Results are kept per spec and file modification times in the process, and per spec and
    file contents in the user cache folder.
    """
    key = (repr(spec), tuple(f.stat().st_mtime_ns for f in spec.onnx_files if f.is_file()))
    if key not in _cache:
        _cache[key] = _stored_lint(spec)
    return list(_cache[key])


def _stored_lint(spec: ModelSpec) -> list[str]:
    """The findings kept on disk for this spec and these files, made (and kept) if missing."""
    digest = hashlib.sha256(f"{LINT_VERSION}\n{spec!r}".encode())
    for f in spec.onnx_files:
        digest.update((file_sha256(f) if f.is_file() else "missing").encode())
    path: Path | None = None
    try:
        path = cache_folder("model-lint") / f"{digest.hexdigest()[:32]}.json"
        stored = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(stored, list) and all(isinstance(w, str) for w in stored):
            return stored
    except (OSError, ValueError):
        pass
    warnings = _crown(spec) if isinstance(spec, CrownModel) else _segmentation(spec)
    if path is not None:
        try:
            atomic_write_bytes(path, json.dumps(warnings).encode("utf-8"))
        except CrownscanError:  # a read-only cache folder: made again next time
            pass
    return warnings
