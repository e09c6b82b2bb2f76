"""Writing a Triton model repository from the app's models folder (``crownscan serve-repo``).

Every model file a workstation runs gets a server model: the manifest's file under the name and
version :func:`app.core.remote.server_model` gives, and for a one-graph crown model also the
encoder and decoder the app splits it into, so the server holds exactly the parts the
workstations ask for. Each ``config.pbtxt`` uses the ONNX Runtime backend with TensorRT as the
GPU accelerator; a model whose every input and output has a free first dimension gets dynamic
batching.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import InputError, ModelError
from app.core.manifest import ModelSpec, scan_models
from app.core.remote import TRITON_TYPES, FileTensor, file_tensors, server_files, server_model


@dataclass(frozen=True)
class RepoOptions:
    """``gpu``: instances on the GPU (else the CPU); ``tensorrt``: TensorRT accelerator with
    ``precision`` (``FP32`` keeps results as the workstation's; ``FP16`` is faster);
    ``max_batch``: the largest dynamic batch; ``trt_cache``: engine cache folder as the server
    sees it (empty: TensorRT builds its engines at every load)."""

    gpu: bool = True
    tensorrt: bool = True
    precision: str = "FP32"
    max_batch: int = 8
    trt_cache: str = ""


@dataclass(frozen=True)
class RepoModel:
    """One server model written: name, version folder, source file, batching, size in bytes."""

    name: str
    version: str
    source: Path
    batching: bool
    size: int


def _tensor_block(kind: str, items: list[FileTensor], batching: bool, path: Path) -> str:
    rows = []
    for t in items:
        if t.dtype not in TRITON_TYPES.values():
            raise ModelError(path, f"tensor '{t.name}' has a data type Triton does not serve")
        dims = [-1 if d is None else d for d in (t.dims[1:] if batching else t.dims)]
        rows.append(f'  {{ name: "{t.name}" data_type: TYPE_{t.dtype} dims: [ '
                    f"{', '.join(str(d) for d in dims)} ] }}")  # fmt: skip
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def model_config(name: str, path: Path, options: RepoOptions) -> tuple[str, bool]:
    """The ``config.pbtxt`` text for one ONNX file, and whether it batches."""
    tensors = file_tensors(path)
    inputs = [t for t in tensors if t.is_input]
    outputs = [t for t in tensors if not t.is_input]
    batching = options.max_batch > 0 and all(t.dims and t.dims[0] is None for t in tensors)
    text = (
        f'name: "{name}"\nbackend: "onnxruntime"\n'
        f"max_batch_size: {options.max_batch if batching else 0}\n"
        + _tensor_block("input", inputs, batching, path)
        + _tensor_block("output", outputs, batching, path)
        + f"instance_group [ {{ kind: {'KIND_GPU' if options.gpu else 'KIND_CPU'} count: 1 }} ]\n"
    )
    if batching:
        text += "dynamic_batching { max_queue_delay_microseconds: 500 }\n"
    if options.gpu and options.tensorrt:
        params = {"precision_mode": options.precision, "max_workspace_size_bytes": str(2**32)}
        if options.trt_cache:
            params |= {"trt_engine_cache_enable": "1", "trt_engine_cache_path": options.trt_cache}
        lines = "\n".join(f'      parameters {{ key: "{k}" value: "{v}" }}'
                          for k, v in params.items())  # fmt: skip
        text += (
            "optimization { execution_accelerators { gpu_execution_accelerator : [ {\n"
            f'      name : "tensorrt"\n{lines}\n    }} ] }} }}\n'
        )
    return text, batching


def write_repository(
    models_dir: Path, out_dir: Path, options: RepoOptions | None = None
) -> tuple[list[RepoModel], list[ModelError]]:
    """Write ``out_dir/<name>/config.pbtxt`` and ``out_dir/<name>/<version>/model.onnx`` for
    every valid manifest in ``models_dir``; return what was written and the manifests that
    were skipped, with why. ``out_dir`` must be new or empty: nothing is overwritten."""
    options = options or RepoOptions()
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(out_dir, "exists and is not an empty folder; give a new folder")
    listing = scan_models(models_dir)
    if not listing.models:
        raise ModelError(models_dir, "holds no valid manifest to serve")
    planned: dict[str, tuple[str, Path, ModelSpec]] = {}
    for spec in listing.models:
        _, version = server_model(spec)
        for path, name in server_files(spec).items():
            if name in planned and planned[name][1] != path:
                raise ModelError(spec.manifest_path, f"server model name '{name}' is also "
                                 f"used by {planned[name][2].manifest_path.name}")  # fmt: skip
            planned[name] = (version or "1", path, spec)
    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (version, path, _) in sorted(planned.items()):
        text, batching = model_config(name, path, options)
        folder = out_dir / name / version
        folder.mkdir(parents=True)
        shutil.copyfile(path, folder / "model.onnx")
        (out_dir / name / "config.pbtxt").write_text(text, encoding="utf-8")
        written.append(RepoModel(name, version, path, batching, path.stat().st_size))
    return written, listing.errors
