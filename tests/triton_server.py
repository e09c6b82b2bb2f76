"""A real Triton Inference Server for tests and benchmarks, started from PyTriton.

The server is PyTriton's Triton binary (the ``server`` extra); each model of a repository that
``crownscan serve-repo`` wrote is served under its name and version by a Python function that
runs the repository's own ``model.onnx`` with ONNX Runtime on the CPU. Only the protocol
(gRPC/HTTP, metadata, binary tensors) is Triton's; the arithmetic is the local provider's.
"""

from __future__ import annotations

import os
import socket
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def use_interpreter_libpython() -> None:
    """Point the Python backend's stub at this interpreter's ``libpython``.

    The stub links ``libpython3.X.so`` by name; a system copy of another patch release
    beside this interpreter's standard library fails at model load.
    """
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir = sysconfig.get_config_var("LIBDIR")
        paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        if libdir and libdir not in paths:
            os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def _onnx_function(path: Path) -> tuple[Callable, list, list]:
    import onnxruntime as ort
    from pytriton.model_config import Tensor

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    kinds = {"tensor(float)": np.float32, "tensor(int64)": np.int64}

    def tensors(args) -> list:
        return [Tensor(name=a.name, dtype=kinds[a.type],
                       shape=tuple(d if isinstance(d, int) else -1 for d in a.shape))
                for a in args]  # fmt: skip

    names = [o.name for o in session.get_outputs()]

    def infer(requests):
        return [dict(zip(names, session.run(names, dict(r.items())), strict=True))
                for r in requests]  # fmt: skip

    return infer, tensors(session.get_inputs()), tensors(session.get_outputs())


@dataclass
class RunningServer:
    """A running PyTriton server: its gRPC and HTTP addresses and seconds it took to start."""

    triton: object
    grpc: str
    http: str
    start_s: float = 0.0

    def stop(self) -> None:
        self.triton.stop()


def serve_repository(
    repo: Path, workspace: Path, extra: dict[str, Callable[[], tuple]] | None = None
) -> RunningServer:
    """Serve every ``repo/<name>/<version>/model.onnx`` (and ``extra`` models: name ->
    factory of (function, inputs, outputs), version 1) on free local ports."""
    from pytriton.model_config import ModelConfig
    from pytriton.triton import Triton, TritonConfig

    use_interpreter_libpython()
    grpc, http, metrics = free_port(), free_port(), free_port()
    config = TritonConfig(
        grpc_port=grpc, http_port=http, metrics_port=metrics, exit_timeout_secs=5,
        log_file=workspace / "triton.log",
    )  # fmt: skip
    triton = Triton(config=config, workspace=workspace / "pytriton")
    for folder in sorted(p for p in repo.iterdir() if p.is_dir()):
        for version in sorted(v for v in folder.iterdir() if v.is_dir()):
            infer, inputs, outputs = _onnx_function(version / "model.onnx")
            triton.bind(model_name=folder.name, infer_func=infer, inputs=inputs,
                        outputs=outputs, model_version=int(version.name),
                        config=ModelConfig(batching=False))  # fmt: skip
    for name, factory in (extra or {}).items():
        infer, inputs, outputs = factory()
        triton.bind(model_name=name, infer_func=infer, inputs=inputs, outputs=outputs,
                    config=ModelConfig(batching=False))  # fmt: skip
    t0 = time.perf_counter()
    triton.run()
    return RunningServer(triton, f"localhost:{grpc}", f"localhost:{http}", time.perf_counter() - t0)


def slow(factory: Callable[[], tuple], seconds: float) -> Callable[[], tuple]:
    """A model that answers like ``factory``'s after ``seconds`` (for timeouts)."""

    def make() -> tuple:
        infer, inputs, outputs = factory()

        def late(requests):
            time.sleep(seconds)
            return infer(requests)

        return late, inputs, outputs

    return make


def onnx_model(path: Path) -> Callable[[], tuple]:
    return lambda: _onnx_function(path)
