"""Which models of a folder can run, and which one a run uses when none is named.

A manifest that validates is not yet a usable model: its ONNX files must load in ONNX Runtime
and have the inputs and outputs the manifest names. That is checked lazily (only for the
models a choice or a listing needs), on the CPU, and remembered by the files' sha256 in the
user cache, so a folder is checked once per model version, not once per start.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from app.core.errors import CrownscanError, ModelError
from app.core.fileio import file_sha256
from app.core.manifest import CrownModel, ModelListing, ModelSpec, scan_models
from app.core.paths import user_cache_dir

CACHE_NAME = "model-checks.json"
_lock = threading.Lock()
_memory: dict[str, str] = {}
_digests: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _lock:
        found = _digests.get(key)
    if found is not None:
        return found
    digest = file_sha256(path)
    with _lock:
        _digests[key] = digest
    return digest


def _interface(spec: ModelSpec) -> dict:
    if isinstance(spec, CrownModel):
        return {"inputs": spec.inputs, "output": spec.output, "features": list(spec.features),
                "voxels": spec.voxel_resolution}  # fmt: skip
    return {"input": spec.input, "output": spec.output, "size": spec.input_size}


def _check_key(spec: ModelSpec) -> str:
    import onnxruntime

    parts = [spec.kind, onnxruntime.__version__, json.dumps(_interface(spec), sort_keys=True)]
    parts += [_file_digest(p) for p in spec.onnx_files]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _load_problem(spec: ModelSpec) -> str | None:
    """Load the model's ONNX files on the CPU and compare them with the manifest."""
    from app.core.runtime import RuntimeConfig, create_session

    config = RuntimeConfig(preference=("cpu",), intra_op_threads=1)
    try:
        if isinstance(spec, CrownModel):
            from app.core.crown.decode import _require_inputs, _require_outputs

            names = spec.inputs
            if spec.onnx is not None:
                session = create_session(spec.onnx, config)
                _require_inputs(session, [names["voxels"], names["points"]], "model")
                _require_outputs(session, [spec.output], "model")
            else:
                encoder = create_session(spec.encoder_onnx, config)  # type: ignore[arg-type]
                decoder = create_session(spec.decoder_onnx, config)  # type: ignore[arg-type]
                made = [f for f in spec.features if f != names["voxels"]]
                _require_inputs(encoder, [names["voxels"]], "encoder")
                _require_outputs(encoder, made, "encoder")
                _require_inputs(decoder, [*spec.features, names["points"]], "decoder")
                _require_outputs(decoder, [spec.output], "decoder")
        else:
            from app.core.segment.pipeline import check_session

            check_session(create_session(spec.onnx, config), spec)
    except CrownscanError as exc:
        return str(exc)
    return None


def _read_cache() -> dict[str, str]:
    try:
        data = json.loads((user_cache_dir() / CACHE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(key: str, problem: str) -> None:
    from app.core.fileio import atomic_write_bytes

    data = _read_cache()
    data[key] = problem
    try:
        atomic_write_bytes(user_cache_dir() / CACHE_NAME, json.dumps(data).encode("utf-8"))
    except CrownscanError:
        pass  # a cache that cannot be written only costs a re-check next time


def model_problem(spec: ModelSpec) -> str | None:
    """Why ``spec`` cannot run (its ONNX files do not load or do not match the manifest), or
    None when it can. Cached by the files' content."""
    try:
        key = _check_key(spec)
    except OSError as exc:
        return f"cannot read the model file: {exc.strerror or exc}"
    with _lock:
        known = _memory.get(key)
    if known is None:
        known = _read_cache().get(key)
    if known is None:
        known = _load_problem(spec) or ""
        _write_cache(key, known)
    with _lock:
        _memory[key] = known
    return known or None


@dataclass(frozen=True)
class Skipped:
    """A manifest of the folder that cannot be used, and why."""

    manifest: Path
    kind: str | None
    reason: str


@dataclass(frozen=True)
class FolderModels:
    """Every model of a folder checked: the usable ones (file-name order) and the skipped."""

    models: list[ModelSpec]
    skipped: list[Skipped]

    def of_kind(self, kind: str) -> list[ModelSpec]:
        return [m for m in self.models if m.kind == kind]


def _manifest_kind(path: Path) -> str | None:
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return kind if kind in ("crown", "segmentation") else None


def _skipped_from_errors(listing: ModelListing) -> list[Skipped]:
    return [
        Skipped(e.path, _manifest_kind(e.path), e.message) if e.path is not None
        else Skipped(Path("?"), None, e.message)
        for e in listing.errors
    ]  # fmt: skip


def check_folder(folder: str | Path) -> FolderModels:
    """Load every manifest of ``folder`` and check every model's ONNX files."""
    listing = scan_models(folder)
    usable: list[ModelSpec] = []
    skipped = _skipped_from_errors(listing)
    for spec in listing.models:
        problem = model_problem(spec)
        if problem is None:
            usable.append(spec)
        else:
            skipped.append(Skipped(spec.manifest_path, spec.kind, problem))
    skipped.sort(key=lambda s: s.manifest.name)
    return FolderModels(usable, skipped)


def _candidates(specs: list[ModelSpec], preferred: str | None) -> list[ModelSpec]:
    """Preferred id first, then manifests marked default, then the rest by file name."""
    return sorted(specs, key=lambda m: (m.id != preferred, not m.default))


def default_id(specs: list[ModelSpec], preferred: str | None = None) -> str | None:
    """The id the default choice lands on among ``specs`` (all usable), or None."""
    ordered = _candidates(specs, preferred)
    return ordered[0].id if ordered else None


def choose_default(
    listing: ModelListing, kind: str, folder: str | Path, preferred: str | None = None
) -> ModelSpec:
    """The first usable model of ``kind`` in default order; checks stop at the first that
    loads. Raises :class:`ModelError` listing every model skipped, and why, when none can."""
    skipped = [s for s in _skipped_from_errors(listing) if s.kind in (kind, None)]
    for spec in _candidates([m for m in listing.models if m.kind == kind], preferred):
        problem = model_problem(spec)
        if problem is None:
            return spec
        skipped.append(Skipped(spec.manifest_path, kind, problem))
    what = f"no usable {kind} model in this models folder"
    if skipped:
        what += "; skipped " + "; ".join(f"{s.manifest.name} ({s.reason})" for s in skipped)
    raise ModelError(folder, what)
