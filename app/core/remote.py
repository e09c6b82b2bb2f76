"""Running models on a Triton Inference Server instead of this workstation.

A :class:`RemotePool` hands out :class:`RemoteSession` objects with the same
``run(outputs, feeds)`` contract as a local :class:`app.core.runtime.ModelSession`, so the crown
and segmentation pipelines run unchanged. Each model file maps to a server model named by the
manifest's ``server`` block (default: the manifest id and its version); a one-graph crown model
that the app splits (see :mod:`app.core.crown.decoder_plan`) maps to two server models,
``<name>_encoder`` and ``<name>_decoder``, written by ``crownscan serve-repo``.

At connect time the server's metadata (inputs, outputs, data types, shapes) is checked against
the model file the manifest names: a server that serves something else is refused rather than
fed. Every failure names the server and the model; with ``fallback`` the local provider takes
over, and the session's provider says so.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from app.core.errors import CrownscanError, ModelError, PipelineError
from app.core.runtime import ModelSession, RuntimeConfig, SessionPool, create_session

ENV_VAR = "CROWNSCAN_SERVER"
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
SCHEMES = {"grpc": ("grpc", False), "grpcs": ("grpc", True),
           "http": ("http", False), "https": ("http", True)}  # fmt: skip
TRITON_TYPES = {1: "FP32", 10: "FP16", 11: "FP64", 7: "INT64", 6: "INT32", 3: "INT8",
                2: "UINT8", 9: "BOOL"}  # fmt: skip
"""ONNX element type -> Triton data type."""
ITEM_BYTES = {"FP32": 4, "FP16": 2, "FP64": 8, "INT64": 8, "INT32": 4, "INT8": 1, "UINT8": 1,
              "BOOL": 1}  # fmt: skip
ONNX_TYPES = {"FP32": "tensor(float)", "FP16": "tensor(float16)", "FP64": "tensor(double)",
              "INT64": "tensor(int64)", "INT32": "tensor(int32)", "INT8": "tensor(int8)",
              "UINT8": "tensor(uint8)", "BOOL": "tensor(bool)"}  # fmt: skip


@dataclass(frozen=True)
class ServerConfig:
    """A Triton server to run models on: ``protocol`` ``grpc`` or ``http``, ``address``
    ``host:port``, TLS, the seconds a request may take, and whether a failure falls back to
    this workstation's own provider."""

    protocol: str
    address: str
    ssl: bool = False
    timeout_s: float = 60.0
    fallback: bool = False

    @property
    def url(self) -> str:
        return f"{self.protocol}{'s' if self.ssl else ''}://{self.address}"


def parse_server(text: str, *, timeout_s: float = 60.0, fallback: bool = False) -> ServerConfig:
    """``grpc://host:8001`` (the default scheme), ``http://host:8000``, ``grpcs://`` or
    ``https://`` for TLS; ValueError saying what is wrong otherwise."""
    text = text.strip()
    parts = urlsplit(text if "://" in text else f"grpc://{text}")
    if parts.scheme not in SCHEMES:
        raise ValueError(f"server {text!r}: scheme must be one of {', '.join(SCHEMES)}")
    if not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"server {text!r}: give it as grpc://HOST:PORT")
    protocol, ssl = SCHEMES[parts.scheme]
    try:
        port = parts.port or DEFAULT_PORTS[protocol]
    except ValueError as exc:
        raise ValueError(f"server {text!r}: {exc}") from exc
    if timeout_s <= 0:
        raise ValueError(f"server timeout must be positive, got {timeout_s}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return ServerConfig(protocol, f"{host}:{port}", ssl, float(timeout_s), bool(fallback))


def server_from_env(*, timeout_s: float = 60.0, fallback: bool = False) -> ServerConfig | None:
    """The server named by ``CROWNSCAN_SERVER``, if set."""
    text = os.environ.get(ENV_VAR, "").strip()
    return parse_server(text, timeout_s=timeout_s, fallback=fallback) if text else None


def server_model(model: Any) -> tuple[str, str]:
    """(name, version) of a manifest's model on the server: its ``server`` block, else the
    manifest id and, when it is a whole number, the manifest version."""
    if model.server is not None:
        return model.server.name, model.server.version
    return model.id, model.version if str(model.version).isdigit() else ""


def server_files(model: Any) -> dict[Path, str]:
    """Each model file the app runs for ``model`` -> its server model name: the manifest's
    file(s), and the encoder and decoder the app splits a one-graph crown model into."""
    name, _ = server_model(model)
    if model.kind == "crown" and model.onnx is None:
        return {model.encoder_onnx: f"{name}_encoder", model.decoder_onnx: f"{name}_decoder"}
    found = {model.onnx: name}
    if model.kind == "crown" and model.generation.fast_decoder:
        from app.core.crown.decoder_plan import plan_decoder

        inputs = model.inputs
        plan = plan_decoder(model.onnx, inputs["voxels"], inputs["points"], model.voxel_resolution)
        if plan.split:
            found |= {plan.encoder: f"{name}_encoder", plan.decoder: f"{name}_decoder"}
    return found


@dataclass(frozen=True)
class _Arg:
    """One input or output as ONNX Runtime's ``NodeArg`` shows it (dynamic dims as None)."""

    name: str
    type: str
    shape: list


@dataclass
class _Signature:
    inputs: list[_Arg]
    outputs: list[_Arg]

    def get_inputs(self) -> list[_Arg]:
        return self.inputs

    def get_outputs(self) -> list[_Arg]:
        return self.outputs


@dataclass
class Traffic:
    """Requests made and bytes of tensors sent and received (payload, not protocol)."""

    requests: int = 0
    sent: int = 0
    received: int = 0
    largest_request: int = 0


class _Link:
    """One server's clients (one per thread: a tritonclient client is not thread-safe)."""

    def __init__(self, server: ServerConfig) -> None:
        self.server = server
        self._local = threading.local()

    def module(self) -> Any:
        try:
            if self.server.protocol == "grpc":
                import tritonclient.grpc as mod
            else:
                import tritonclient.http as mod
        except ImportError as exc:
            raise PipelineError(
                None,
                f"Triton {self.server.address}: the Triton client is not installed "
                f"(pip install tritonclient[grpc,http]): {exc}",
            ) from exc
        return mod

    def client(self) -> Any:
        found = getattr(self._local, "client", None)
        if found is None:
            mod = self.module()
            s = self.server
            if s.protocol == "grpc":
                found = mod.InferenceServerClient(s.address, ssl=s.ssl)
            else:
                found = mod.InferenceServerClient(
                    s.address, ssl=s.ssl, connection_timeout=s.timeout_s,
                    network_timeout=s.timeout_s,
                )  # fmt: skip
            self._local.client = found
        return found

    def call(self, where: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """A client call whose failures become errors naming the server and ``where``."""
        if self.server.protocol == "grpc":
            kwargs["client_timeout"] = self.server.timeout_s
            if method.startswith("get_model_"):
                kwargs["as_json"] = True
        try:
            return getattr(self.client(), method)(*args, **kwargs)
        except CrownscanError:
            raise
        except Exception as exc:  # tritonclient, grpc, gevent and socket errors alike
            raise self.error(where, exc) from exc

    def error(self, where: str, exc: BaseException) -> CrownscanError:
        status = exc.status() if callable(getattr(exc, "status", None)) else None
        text = (exc.message() if callable(getattr(exc, "message", None)) else str(exc)) or ""
        text = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
        low = f"{status} {text}".lower()
        head = f"Triton {self.server.address}, {where}"
        if "deadline" in low or "timed out" in low or "timeout" in low:
            return PipelineError(None, f"{head}: no answer within {self.server.timeout_s:g} s")
        if any(w in low for w in ("unknown model", "not found", "not ready", "no available")):
            return ModelError(None, f"{head}: not loaded on the server ({text})")
        if isinstance(exc, ConnectionError) or "unavailable" in low or "connect" in low:
            return PipelineError(None, f"{head}: server not reachable ({text})")
        return PipelineError(None, f"{head}: request failed ({text})")


def _where(name: str, version: str) -> str:
    return f"model '{name}'" + (f" version {version}" if version else "")


def _ints(shape: Sequence) -> list[int]:
    return [int(d) for d in shape]


@dataclass(frozen=True)
class FileTensor:
    """An input or output of a model file: Triton data type, dims (None where dynamic)."""

    name: str
    dtype: str
    dims: list
    is_input: bool

    @property
    def nbytes(self) -> int:
        """Bytes at the static dims (a dynamic dim counts as 1)."""
        return ITEM_BYTES.get(self.dtype, 4) * int(np.prod([d or 1 for d in self.dims]))


def file_tensors(path: Path) -> list[FileTensor]:
    """The inputs (initialisers left out) and outputs of an ONNX file, in graph order."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initialised = {t.name for t in graph.initializer}
    found = []
    for item, is_input in [*((i, True) for i in graph.input), *((o, False) for o in graph.output)]:
        if item.name in initialised:
            continue
        t = item.type.tensor_type
        dtype = TRITON_TYPES.get(t.elem_type, f"ONNX type {t.elem_type}")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        found.append(FileTensor(item.name, dtype, dims, is_input))
    return found


def check_signature(path: Path, meta: dict, where: str) -> None:
    """Refuse a server model whose inputs, outputs, data types or shapes differ from the
    model file's; the error names the first difference."""
    want = {t.name: (t.dtype, t.dims) for t in file_tensors(path)}
    got = {t["name"]: (t["datatype"], _ints(t["shape"]))
           for t in [*meta.get("inputs", []), *meta.get("outputs", [])]}  # fmt: skip
    missing = [n for n in want if n not in got]
    extra = [n for n in got if n not in want]
    problem = ""
    if missing:
        problem = f"has no tensor '{missing[0]}'"
    elif extra:
        problem = f"has an extra tensor '{extra[0]}'"
    for name, (dtype, dims) in want.items():
        if problem or name not in got:
            break
        sdtype, sdims = got[name]
        if sdtype != dtype:
            problem = f"'{name}' is {sdtype} on the server, {dtype} in the file"
        elif len(sdims) != len(dims) or any(
            s >= 0 and d is not None and s != d for s, d in zip(sdims, dims, strict=True)
        ):
            shown = ["?" if d is None else d for d in dims]
            problem = f"'{name}' has shape {sdims} on the server, {shown} in the file"
    if problem:
        raise ModelError(
            None, f"{where}: does not match {path.name} that the manifest names: {problem}"
        )


def _device(config: dict) -> str:
    kinds = {str(g.get("kind", "")) for g in config.get("instance_group", [])}
    return "GPU" if "KIND_GPU" in kinds else "CPU"


@dataclass
class RemoteSession(ModelSession):
    """A model on a Triton server with a local session's contract; ``traffic`` counts what
    went over the network."""

    link: _Link | None = None
    name: str = ""
    version: str = ""
    traffic: Traffic = field(default_factory=Traffic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def where(self) -> str:
        return _where(self.name, self.version)

    def run(self, outputs: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Send ``feeds`` as binary tensors and return the named outputs; a failure is an
        error naming the server and the model."""
        from tritonclient.utils import np_to_triton_dtype

        link = self.link
        mod = link.module()
        names = list(outputs) if outputs else self.output_names
        inputs, sent = [], 0
        for name, value in feeds.items():
            arr = np.ascontiguousarray(value)
            item = mod.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
            item.set_data_from_numpy(arr)
            inputs.append(item)
            sent += arr.nbytes
        wanted = [mod.InferRequestedOutput(n) for n in names]
        result = link.call(self.where, "infer", self.name, inputs, model_version=self.version,
                           outputs=wanted)  # fmt: skip
        values = [result.as_numpy(n) for n in names]
        with self._lock:
            self.traffic.requests += 1
            self.traffic.sent += sent
            self.traffic.received += sum(v.nbytes for v in values)
            self.traffic.largest_request = max(self.traffic.largest_request, sent)
        return values


def connect(server: ServerConfig, path: Path, name: str, version: str) -> RemoteSession:
    """Check the server holds ``name`` (``version``) ready with ``path``'s signature."""
    link = _Link(server)
    where = _where(name, version)
    meta = _metadata(link, name, version, where)
    check_signature(path, meta, f"Triton {server.address}, {where}")
    config = link.call(where, "get_model_config", name, version)
    config = config.get("config", config)
    signature = _Signature(
        *[[_Arg(t["name"], ONNX_TYPES.get(t["datatype"], t["datatype"]),
                [None if d < 0 else d for d in _ints(t["shape"])]) for t in meta[key]]
          for key in ("inputs", "outputs")]
    )  # fmt: skip
    label = f"Triton: {server.address} ({_device(config)})"
    return RemoteSession(path, signature, [server.url], [label], [], link, name, version)


def _metadata(link: _Link, name: str, version: str, where: str) -> dict:
    """The model's metadata; a missing version is reported with the versions there are."""
    try:
        return link.call(where, "get_model_metadata", name, version)
    except ModelError:
        if not version:
            raise
        try:
            there = link.call(_where(name, ""), "get_model_metadata", name, "")
        except CrownscanError:
            raise ModelError(
                None, f"Triton {link.server.address}, {where}: not loaded on the server"
            ) from None
        raise ModelError(
            None,
            f"Triton {link.server.address}, {where}: version mismatch, the server has version "
            f"{', '.join(there.get('versions', [])) or 'none'}; update the server's model "
            "repository (crownscan serve-repo) or the manifest's server.version",
        ) from None


class RemotePool(SessionPool):
    """Sessions on a Triton server, one per model file, shared by all threads.

    :meth:`bind` maps a manifest's files to server models (a split crown model to its encoder
    and decoder); a file not bound is looked up among the manifests beside it. With
    ``server.fallback`` a model the server cannot run is loaded locally instead, and its
    provider and notes say so.
    """

    def __init__(self, server: ServerConfig, config: RuntimeConfig | None = None) -> None:
        super().__init__(config)
        self.server = server
        self._targets: dict[Path, tuple[str, str]] = {}

    def bind(self, model: Any) -> None:
        _, version = server_model(model)
        with self._lock:
            for path, target in server_files(model).items():
                self._targets[Path(path).resolve()] = (target, version)

    def plan_for(self, model: Any) -> Any:
        """Run a one-graph crown model whole on the server when its features outweigh the
        voxels: the backend keeps nothing between requests, so the split sends the features
        with every decoder batch, the whole graph the voxels."""
        if model.kind != "crown" or model.onnx is None or not model.generation.fast_decoder:
            return None
        from app.core.crown.decoder_plan import DecoderPlan, decoder_cost, plan_decoder

        pname = model.inputs["points"]
        plan = plan_decoder(model.onnx, model.inputs["voxels"], pname, model.voxel_resolution)
        if not plan.split:
            return None
        features = sum(t.nbytes for t in file_tensors(plan.encoder) if not t.is_input)
        voxels = 4 * model.voxel_resolution**3
        if features <= voxels:
            return None
        reason = (f"on Triton the voxels ({voxels / 2**20:.2f} MB) go with each batch rather "
                  f"than the split's features ({features / 2**20:.2f} MB)")  # fmt: skip
        return DecoderPlan("one graph", reason, bytes_per_point=decoder_cost(model.onnx, pname))

    def _target(self, path: Path) -> tuple[str, str]:
        with self._lock:
            found = self._targets.get(path)
        if found is None:
            from app.core.manifest import load_manifest

            for manifest in sorted(path.parent.glob("*.json")):
                try:
                    spec = load_manifest(manifest)
                except ModelError:
                    continue
                if path in spec.onnx_files:
                    self.bind(spec)
            with self._lock:
                found = self._targets.get(path)
        if found is None:
            raise ModelError(path, f"no manifest names this file: no model on Triton "
                             f"{self.server.address} to run it")  # fmt: skip
        return found

    def _create(self, path: Path) -> ModelSession:
        try:
            return connect(self.server, path, *self._target(path))
        except CrownscanError as exc:
            if not self.server.fallback:
                raise
            local = create_session(path, self.config)
            local.notes.insert(0, f"Triton {self.server.address} not used: {exc.message}")
            local.providers = [f"{p} (local: Triton {self.server.address} failed)"
                               for p in local.providers]  # fmt: skip
            return local

    def traffic(self) -> dict[str, Traffic]:
        """What each server model has sent and received so far, by server model name."""
        return {s.name: s.traffic for s in self.loaded() if isinstance(s, RemoteSession)}


def make_pool(config: RuntimeConfig, server: ServerConfig | None) -> SessionPool:
    """A local pool, or a pool on ``server`` when one is given."""
    return SessionPool(config) if server is None else RemotePool(server, config)
