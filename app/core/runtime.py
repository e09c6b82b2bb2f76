"""One shared ONNX Runtime session per model file, with explicit provider choice and fallback.

ONNX Runtime silently drops a provider it cannot load and runs on the CPU. The pool asks for the
preferred chain, reads back what the session really uses, and reports it: a technician must be
able to see whether a run took 10 s on TensorRT or 120 s on the CPU, and why.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.core.errors import ModelError, PipelineError
from app.core.gpu_libs import missing_gpu_library, preload_gpu_libraries
from app.core.paths import user_cache_dir

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
SHORT_NAMES = {v: k for k, v in PROVIDER_NAMES.items()}
DEFAULT_PREFERENCE = ("tensorrt", "cuda", "cpu")


def available_providers() -> list[str]:
    """Short names of the providers this ONNX Runtime build offers."""
    import onnxruntime as ort

    return [SHORT_NAMES[p] for p in ort.get_available_providers() if p in SHORT_NAMES]


@dataclass(frozen=True)
class RuntimeConfig:
    """Provider preference (short names, best first), CPU threads (0 = ONNX Runtime's default),
    and where TensorRT keeps its engine cache."""

    preference: tuple[str, ...] = DEFAULT_PREFERENCE
    intra_op_threads: int = 0
    trt_fp16: bool = True
    cache_dir: Path = field(default_factory=lambda: user_cache_dir() / "tensorrt")

    def __post_init__(self) -> None:
        unknown = [p for p in self.preference if p not in PROVIDER_NAMES]
        if unknown or not self.preference:
            raise ValueError(f"provider preference must use {sorted(PROVIDER_NAMES)}: {unknown}")


@dataclass
class ModelSession:
    """A created session plus the providers it really runs on and what was asked for."""

    path: Path
    session: Any
    requested: list[str]
    providers: list[str]
    notes: list[str]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def run(self, outputs: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Run the session; ONNX Runtime failures become :class:`PipelineError` naming the file."""
        try:
            return self.session.run(list(outputs) if outputs else None, feeds)
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise PipelineError(self.path, f"inference failed: {exc}") from exc


def _provider_entry(name: str, config: RuntimeConfig) -> tuple[str, dict[str, Any]]:
    full = PROVIDER_NAMES[name]
    if name == "tensorrt":
        return full, {
            "trt_fp16_enable": config.trt_fp16,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(config.cache_dir),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(config.cache_dir),
        }
    return full, {}


def create_session(path: Path, config: RuntimeConfig) -> ModelSession:
    """Create one session with the configured chain; never silently retry elsewhere."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelError(path, "model file does not exist")
    available = set(available_providers())
    requested = list(config.preference)
    chain = [p for p in requested if p in available]
    notes = [f"{p}: not in this ONNX Runtime build" for p in requested if p not in available]
    if "cpu" not in chain:
        chain.append("cpu")
    if "tensorrt" in chain:
        config.cache_dir.mkdir(parents=True, exist_ok=True)
    if "tensorrt" in chain or "cuda" in chain:
        preload_gpu_libraries()

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(0, int(config.intra_op_threads))
    options.log_severity_level = 3
    session = None
    while session is None:
        try:
            session = _quiet_session(
                ort, path, options, [_provider_entry(p, config) for p in chain]
            )
        except Exception as exc:
            if chain[0] == "cpu":
                raise ModelError(path, f"cannot load model: {_first_line(exc)}") from exc
            why = missing_gpu_library(chain[0]) or _first_line(exc)
            notes.append(f"{chain[0]}: could not be initialised: {why}")
            chain = chain[1:]
    providers = [SHORT_NAMES.get(p, p) for p in session.get_providers()]
    for p in chain:
        if p not in providers:
            why = missing_gpu_library(p) or "drivers or libraries missing"
            notes.append(f"{p}: could not be initialised: {why}")
    return ModelSession(path, session, requested, providers, notes)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    line = text[-1] if text else type(exc).__name__
    line = re.sub(r"^\S+\.(?:cc|cpp|h):\d+\s+(?:[^()]*\([^()]*\)\s+)?", "", line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _quiet_session(ort: Any, path: Path, options: Any, providers: list) -> Any:
    """Create a session with ONNX Runtime's own retry-on-CPU disabled and its provider-loading
    chatter muted: the caller records why a provider was dropped."""
    ort.set_default_logger_severity(4)
    try:
        return ort.InferenceSession(
            str(path), sess_options=options, providers=providers, enable_fallback=0
        )
    finally:
        ort.set_default_logger_severity(2)


class SessionPool:
    """Lazily created sessions, one per model file per process, shared by all threads.

    ``InferenceSession.run`` is thread-safe, so workers share a session rather than each
    loading the model again.
    """

    def __init__(self, config: RuntimeConfig | None = None) -> None:
        self.config = config or RuntimeConfig()
        self._lock = threading.Lock()
        self._sessions: dict[Path, ModelSession] = {}
        self._creating: dict[Path, threading.Lock] = {}

    def get(self, path: str | Path) -> ModelSession:
        key = Path(path).resolve()
        with self._lock:
            found = self._sessions.get(key)
            if found is not None:
                return found
            creating = self._creating.setdefault(key, threading.Lock())
        with creating:
            with self._lock:
                found = self._sessions.get(key)
            if found is not None:
                return found
            made = self._create(key)
            with self._lock:
                self._sessions[key] = made
            return made

    def _create(self, path: Path) -> ModelSession:
        """Make the session for one model file (a remote pool serves it from a server)."""
        return create_session(path, self.config)

    def bind(self, model: Any) -> None:
        """Learn which files a manifest runs before they are asked for; nothing to learn
        locally (see :class:`app.core.remote.RemotePool`)."""

    def plan_for(self, model: Any) -> Any:
        """The crown decoder plan this pool prefers for ``model``; None: the manifest's."""
        return None

    def loaded(self) -> list[ModelSession]:
        with self._lock:
            return list(self._sessions.values())

    def providers_for(self, paths: Sequence[Path]) -> list[str]:
        """The distinct providers in use across the given models' sessions, best first."""
        seen: list[str] = []
        for p in paths:
            for name in self.get(p).providers:
                if name not in seen:
                    seen.append(name)
        return seen

    def clear(self) -> None:
        """Drop all sessions (after a settings change); the next ``get`` creates them anew."""
        with self._lock:
            self._sessions.clear()
            self._creating.clear()
