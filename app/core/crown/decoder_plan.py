"""How a one-graph crown model is run: split into encoder and decoder, with the decoder's
``GridSample`` nodes rewritten as gathers, or as one graph, and why.

The parts are written to the user cache, keyed by the model file's hash and everything the
preparation depends on, so the analysis runs once per model. Before a plan is used it is
checked against the original graph on the CPU (random voxels, points inside, on the edges of
and outside the box): a plan whose output differs by more than :data:`PARITY_TOL` (relative
to outputs above 1) is not used, and the report says so. Parity before speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from app.core.errors import CrownscanError
from app.core.fileio import file_sha256
from app.core.paths import cache_folder

PLAN_VERSION = 3
PARITY_TOL = 1e-4
_CHECK_POINTS = 512
_memo: dict[str | tuple, DecoderPlan | float | None] = {}  # by content hash
_memo_lock = threading.Lock()


@dataclass
class DecoderPlan:
    """What :class:`app.core.crown.decode.CrownEvaluator` runs for a one-graph model.

    ``path`` is ``"split+gather"``, ``"split"`` or ``"one graph"``; ``reason`` says why it is
    not the fastest (empty when it is). ``encoder`` / ``decoder`` are the cached parts and
    ``features`` the tensors between them (None / empty for one graph). ``bytes_per_point``
    is the decoder's estimated peak intermediate memory per point (None if unknown), and
    ``parity`` the largest (relative) difference from the original graph seen in the check.
    ``int8`` is the int8 copy that runs instead (the decoder, or the one graph), when asked
    for; the path then ends in ``+int8``.
    """

    path: str
    reason: str = ""
    encoder: Path | None = None
    decoder: Path | None = None
    features: list[str] = field(default_factory=list)
    bytes_per_point: float | None = None
    parity: float | None = None
    int8: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.path} ({self.reason})" if self.reason else self.path

    @property
    def split(self) -> bool:
        return self.encoder is not None


def _check_points(rng: np.random.Generator, n: int) -> np.ndarray:
    """Grid-sample points: inside, on the faces and edges of [-1, 1]^3, and outside it."""
    inner = rng.uniform(-1, 1, (n, 3))
    faces = rng.uniform(-1, 1, (n // 2, 3))
    faces[np.arange(n // 2), rng.integers(0, 3, n // 2)] = rng.choice([-1.0, 1.0], n // 2)
    corners = rng.choice([-1.0, 1.0], (n // 8, 3))
    outside = rng.uniform(-1.5, 1.5, (n // 2, 3))
    return np.concatenate([inner, faces, corners, outside]).astype(np.float32)


def _run_parts(
    encoder: Path, decoder: Path, features: list[str], feed: dict[str, np.ndarray], points: str
) -> np.ndarray:
    from app.core.runtime import RuntimeConfig, create_session

    cpu = RuntimeConfig(preference=("cpu",))
    enc = create_session(encoder, cpu)
    made = [f for f in features if f in enc.output_names]
    values = dict(zip(made, enc.run(made, {k: v for k, v in feed.items() if k != points}),
                      strict=True))  # fmt: skip
    values.update({k: v for k, v in feed.items() if k in features or k == points})
    return create_session(decoder, cpu).run(None, values)[0]


def _parity(
    original: Path, encoder: Path, decoder: Path, features: list[str], voxels: str,
    points: str, voxel_shape: tuple[int, ...], points_rank: int,
) -> float:  # fmt: skip
    """Largest |difference| between the parts and the original graph on random inputs,
    relative to the largest |output| when that is above 1 (float32 rounding scales with it)."""
    from app.core.runtime import RuntimeConfig, create_session

    rng = np.random.default_rng(0)
    vox = (rng.random(voxel_shape) < 0.4).astype(np.float32)
    pts = _check_points(rng, _CHECK_POINTS)
    feed = {voxels: vox, points: pts if points_rank == 2 else pts[None]}
    want = create_session(original, RuntimeConfig(preference=("cpu",))).run(None, feed)[0]
    got = _run_parts(encoder, decoder, features, feed, points)
    if got.shape != want.shape:
        return float("inf")
    diff = np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)))
    return float(diff / max(1.0, float(np.max(np.abs(want)))))


def _input_shape(model, name: str) -> list:
    for item in model.graph.input:
        if item.name == name:
            return [d.dim_value if d.HasField("dim_value") else None
                    for d in item.type.tensor_type.shape.dim]  # fmt: skip
    return []


def _prepare(
    onnx_path: Path, voxels: str, points: str, resolution: int, rewrite: bool, folder: Path
) -> DecoderPlan:
    import onnx

    from app.core.crown.decoder_memory import bytes_per_point
    from app.core.crown.gather_sampler import rewrite_samplers
    from app.core.crown.graph_split import SplitError, split_graph

    try:
        model = onnx.load(str(onnx_path))
    except Exception as exc:  # onnx raises several types for a bad file
        return DecoderPlan("one graph", f"cannot be read by onnx: {str(exc)[:200]}")
    vshape = _input_shape(model, voxels)
    pshape = _input_shape(model, points)
    if len(vshape) not in (4, 5):
        return DecoderPlan("one graph", f"voxel input '{voxels}' has rank {len(vshape)}")
    voxel_shape = (1,) * (len(vshape) - 3) + (resolution,) * 3
    one_graph_cost = bytes_per_point(model, points)
    try:
        split = split_graph(model, voxels, points, (resolution,) * 3)
    except SplitError as exc:
        return DecoderPlan("one graph", str(exc), bytes_per_point=one_graph_cost)

    attempts = []
    if rewrite:
        import copy

        fast = copy.deepcopy(split)
        done = rewrite_samplers(fast)
        if done.rewritten:
            attempts.append(("split+gather", fast, "; ".join(done.skipped)))
        elif done.skipped:
            reason = f"sampler kept: {done.skipped[0]}"
            attempts.append(("split", split, reason))
        else:
            attempts.append(("split", split, "no sampler to rewrite"))
    if not attempts or attempts[0][1] is not split:
        attempts.append(("split", split, "fast sampler turned off" if not rewrite else ""))
    why_not = []
    for path, parts, reason in attempts:
        enc, dec = folder / f"{path}.encoder.onnx", folder / f"{path}.decoder.onnx"
        onnx.save(parts.encoder, str(enc))
        onnx.save(parts.decoder, str(dec))
        try:
            diff = _parity(onnx_path, enc, dec, parts.features, voxels, points, voxel_shape,
                           len(pshape))  # fmt: skip
        except CrownscanError as exc:
            why_not.append(f"{path} check failed: {exc.message}")
            continue
        if diff > PARITY_TOL:
            why_not.append(f"{path} differs from the graph by {diff:.2g}")
            continue
        text = "; ".join([*why_not, reason] if reason else why_not)
        return DecoderPlan(path, text, enc, dec, list(parts.features),
                           bytes_per_point(parts.decoder, points), diff)  # fmt: skip
    return DecoderPlan("one graph", "; ".join(why_not), bytes_per_point=one_graph_cost)


def _save(plan: DecoderPlan, path: Path) -> None:
    data = asdict(plan)
    data["encoder"] = plan.encoder.name if plan.encoder else None
    data["decoder"] = plan.decoder.name if plan.decoder else None
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _load(path: Path) -> DecoderPlan | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        for key in ("encoder", "decoder"):
            if data[key] is not None:
                data[key] = path.parent / data[key]
                if not data[key].is_file():
                    return None
        return DecoderPlan(**data)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def plan_decoder(
    onnx_path: Path, voxels: str, points: str, resolution: int, *, rewrite: bool = True
) -> DecoderPlan:
    """The plan for a one-graph model, from the cache when this model was prepared before."""
    onnx_path = Path(onnx_path).resolve()
    params = (voxels, points, int(resolution), bool(rewrite), PLAN_VERSION)
    key = hashlib.sha256(json.dumps([file_sha256(onnx_path), *params]).encode()).hexdigest()[:24]
    with _memo_lock:
        known = _memo.get(key)
    if isinstance(known, DecoderPlan) and all(
        part is None or part.is_file() for part in (known.encoder, known.decoder)
    ):
        return known
    try:
        folder = cache_folder("crown-split", key)
    except OSError as exc:
        return DecoderPlan("one graph", f"cache folder not writable: {exc}")
    plan = _load(folder / "plan.json")
    if plan is None:
        work = folder.with_name(f"{key}.{os.getpid()}.{threading.get_ident()}")
        work.mkdir(parents=True, exist_ok=True)
        try:
            try:
                plan = _prepare(onnx_path, voxels, points, resolution, rewrite, work)
            except Exception as exc:  # the analysis must never stop a crown run
                detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
                plan = DecoderPlan("one graph", f"split failed: {type(exc).__name__} {detail}")
                with _memo_lock:  # not written to the cache: it may not happen next time
                    _memo[key] = plan
                return plan
            for item in work.iterdir():
                os.replace(item, folder / item.name)
            for attr in ("encoder", "decoder"):
                part = getattr(plan, attr)
                if part is not None:
                    setattr(plan, attr, folder / part.name)
            _save(plan, folder / "plan.json")
        except OSError as exc:
            plan = DecoderPlan("one graph", f"cache folder not writable: {exc}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    with _memo_lock:
        _memo[key] = plan
    return plan


def decoder_cost(onnx_path: Path, points: str) -> float | None:
    """Estimated peak intermediate bytes per point of a model file run as it is."""
    import onnx

    from app.core.crown.decoder_memory import bytes_per_point

    memo_key = ("cost", file_sha256(Path(onnx_path)), points)
    with _memo_lock:
        if memo_key in _memo:
            return _memo[memo_key]
    try:
        cost = bytes_per_point(onnx.load(str(onnx_path)), points)
    except Exception:  # an unreadable model fails later, where it is loaded to run
        cost = None
    with _memo_lock:
        _memo[memo_key] = cost
    return cost
