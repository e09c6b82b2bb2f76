"""Running a crown model: the voxel grid in once, query points in batches, one value per point.

A model comes as one graph (voxels + points -> output) or in two parts (an encoder run once on
the voxels, a decoder run per batch on its features + points); a one-graph model is split into
two parts when it can be. Points are fed in the model's convention: ``ifnet`` = grid_sample
order and scale, ``2 * (z, y, x)``; ``unit`` = as is.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.core.crown.decoder_memory import batch_for_budget
from app.core.crown.decoder_plan import DecoderPlan, decoder_cost, plan_decoder
from app.core.errors import ModelError, PipelineError
from app.core.manifest import CrownModel
from app.core.report import CancelToken
from app.core.runtime import ModelSession, SessionPool


def to_model_points(points_unit: np.ndarray, convention: str) -> np.ndarray:
    """Unit-cube points (N, 3) as the model wants them, float32 (N, 3)."""
    p = np.asarray(points_unit, dtype=np.float32).reshape(-1, 3)
    if convention == "ifnet":
        return np.ascontiguousarray(2.0 * p[:, ::-1])
    if convention == "unit":
        return np.ascontiguousarray(p)
    raise ValueError(f"unknown point convention {convention!r}")


def decision_level(threshold: float, output_kind: str) -> float:
    """The raw-output value that corresponds to occupancy probability ``threshold``.

    For logits the threshold applies to the sigmoid, so the level is ``log(t / (1 - t))``.
    """
    if output_kind == "probability":
        return float(threshold)
    if threshold <= 0.0:
        return -math.inf
    if threshold >= 1.0:
        return math.inf
    return math.log(threshold / (1.0 - threshold))


def decision_margin(threshold: float, margin_logits: float, output_kind: str) -> float:
    """``margin_logits`` around the decision level in the model's raw output units: as is for
    logits; for probabilities the narrower side of the window
    ``sigmoid(logit(threshold) -+ margin_logits)`` around ``threshold``."""
    if output_kind != "probability":
        return float(margin_logits)
    if not 0.0 < threshold < 1.0:
        return 0.0
    level = math.log(threshold / (1.0 - threshold))
    below = threshold - 1.0 / (1.0 + math.exp(-(level - margin_logits)))
    above = 1.0 / (1.0 + math.exp(-(level + margin_logits))) - threshold
    return float(min(below, above))


def _require_inputs(session: ModelSession, names: list[str], what: str) -> None:
    missing = [n for n in names if n not in session.input_names]
    if missing:
        raise ModelError(
            session.path,
            f"{what} has no input named {missing[0]!r} (inputs: {', '.join(session.input_names)})",
        )


def _require_outputs(session: ModelSession, names: list[str], what: str) -> None:
    missing = [n for n in names if n not in session.output_names]
    if missing:
        raise ModelError(
            session.path,
            f"{what} has no output named {missing[0]!r} "
            f"(outputs: {', '.join(session.output_names)})",
        )


def _int8_plan(plan: DecoderPlan, decoder: Path) -> DecoderPlan:
    """``plan`` with its decoder (or its one graph) replaced by the int8 copy, or with the
    reason there is none."""
    from app.core.crown.int8_decoder import int8_copy  # imports onnx: only where int8 is asked

    made = int8_copy(decoder)
    if isinstance(made, str):
        reason = "; ".join(r for r in (plan.reason, f"int8 not used: {made}") if r)
        return dataclasses.replace(plan, reason=reason)
    return dataclasses.replace(plan, path=f"{plan.path}+int8", int8=made)


def _input_shape(session: ModelSession, name: str) -> list:
    for item in session.session.get_inputs():
        if item.name == name:
            return list(item.shape)
    return []


def _voxel_feed(session: ModelSession, name: str, voxels: np.ndarray) -> np.ndarray:
    """The voxel grid as (1, R, R, R), or (1, 1, R, R, R) for a model that declares a channel
    axis; a static grid size that differs from the manifest's is a model error."""
    shape = _input_shape(session, name)
    feed = np.ascontiguousarray(voxels, dtype=np.float32)[None]
    if len(shape) == 5:
        feed = feed[None]
    static = [d for d in shape[-3:] if isinstance(d, int)]
    if static and any(d != voxels.shape[0] for d in static):
        raise ModelError(
            session.path,
            f"input '{name}' takes a {'x'.join(str(d) for d in shape[-3:])} voxel grid but the "
            f"manifest's voxel_resolution is {voxels.shape[0]}",
        )
    return feed


class CrownEvaluator:
    """Evaluates a crown model at unit-cube points for one voxel grid.

    The encoder runs once in the constructor: a two-part model's own, or the encoder split
    off a one-graph model (see :mod:`app.core.crown.decoder_plan`; ``plan`` says how the model
    runs and why). :meth:`evaluate` splits points into batches of ``batch_points`` (the
    manifest's count, lowered to fit the decoder memory budget), checks ``cancel`` between
    batches, and counts the points and batches it ran. ``decode_ms`` / ``encode_ms`` hold the
    time spent in the model. ``plan`` (one-graph models) replaces the plan the manifest would
    give, for benchmarks and tests.
    """

    def __init__(
        self,
        model: CrownModel,
        pool: SessionPool,
        voxels: np.ndarray,
        *,
        cancel: CancelToken | None = None,
        on_batch: Callable[[int], None] | None = None,
        plan: DecoderPlan | None = None,
    ) -> None:
        self.model = model
        self.cancel = cancel
        self.on_batch = on_batch
        self.points = 0
        self.batches = 0
        self.encode_ms = 0.0
        self.decode_ms = 0.0
        self.encoded = False
        self.nonfinite = 0
        vname, pname = model.inputs["voxels"], model.inputs["points"]
        gen = model.generation
        self._static: dict[str, np.ndarray]
        if model.onnx is not None:
            self.plan = self._one_graph_plan(pool) if plan is None else plan
            if gen.decoder_int8:
                self.plan = _int8_plan(self.plan, self.plan.decoder or model.onnx)
            if self.plan.split:
                encoder = pool.get(self.plan.encoder)
                self.session = pool.get(self.plan.int8 or self.plan.decoder)
                self._encode(encoder, self.plan.features, voxels)
                self.session_paths = [self.plan.encoder, self.session.path]
            else:
                self.session = pool.get(self.plan.int8 or model.onnx)
                _require_inputs(self.session, [vname, pname], "model")
                _require_outputs(self.session, [model.output], "model")
                self._static = {vname: _voxel_feed(self.session, vname, voxels)}
                self.session_paths = [self.session.path]
        else:
            encoder = pool.get(model.encoder_onnx)
            self.plan = DecoderPlan("two parts", bytes_per_point=decoder_cost(
                model.decoder_onnx, pname))  # fmt: skip
            if gen.decoder_int8:
                self.plan = _int8_plan(self.plan, model.decoder_onnx)
            self.session = pool.get(self.plan.int8 or model.decoder_onnx)
            _require_inputs(encoder, [vname], "encoder")
            _require_outputs(encoder, list(model.features), "encoder")
            _require_inputs(self.session, [*model.features, pname], "decoder")
            _require_outputs(self.session, [model.output], "decoder")
            self._encode(encoder, list(model.features), voxels)
            self.session_paths = [model.encoder_onnx, self.session.path]
        self.batch_points = batch_for_budget(
            self.plan.bytes_per_point, gen.decoder_memory_mb * 2**20, gen.batch_points
        )

    def _one_graph_plan(self, pool: SessionPool) -> DecoderPlan:
        model = self.model
        vname, pname = model.inputs["voxels"], model.inputs["points"]
        if not model.generation.fast_decoder:
            return DecoderPlan("one graph", "fast_decoder is false in the manifest",
                               bytes_per_point=decoder_cost(model.onnx, pname))  # fmt: skip
        plan = plan_decoder(model.onnx, vname, pname, model.voxel_resolution)
        if plan.split:
            try:
                pool.get(plan.encoder)
                pool.get(plan.decoder)
            except ModelError as exc:
                return DecoderPlan("one graph", f"split parts do not load: {exc.message}",
                                   bytes_per_point=decoder_cost(model.onnx, pname))  # fmt: skip
        return plan

    def _encode(self, encoder: ModelSession, features: list[str], voxels: np.ndarray) -> None:
        """Run the encoder once; features it does not make (the voxels themselves) are fed."""
        vname = self.model.inputs["voxels"]
        feed = _voxel_feed(encoder, vname, voxels)
        made = [f for f in features if f != vname]
        t0 = time.perf_counter()
        feats = encoder.run(made, {vname: feed})
        self.encode_ms = (time.perf_counter() - t0) * 1000.0
        for name, value in zip(made, feats, strict=True):
            value = np.asarray(value)
            if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
                bad = int(value.size - np.count_nonzero(np.isfinite(value)))
                raise PipelineError(
                    self.model_file,
                    f"the model's encoder returned {bad:,} non-finite values (NaN or infinity) "
                    f"of {value.size:,} in '{name}'; no crown was written",
                )
        self._static = dict(zip(made, feats, strict=True))
        if vname in features:
            self._static[vname] = feed
        self.encoded = True

    @property
    def model_file(self) -> Path:
        """The model file a user knows (not a split part in the cache)."""
        return self.model.onnx or self.model.decoder_onnx  # type: ignore[return-value]

    def check_finite(self) -> None:
        """Raise :class:`PipelineError` naming the model file when any value evaluated so far
        was NaN or infinite: such a grid would give a truncated, open crown."""
        if self.nonfinite:
            raise PipelineError(
                self.model_file,
                f"the model returned {self.nonfinite:,} non-finite values (NaN or infinity) of "
                f"{self.points:,} points evaluated; no crown was written",
            )

    def evaluate(self, points_unit: np.ndarray) -> np.ndarray:
        """Raw model output (logit or probability) at each point, float32 (N,); non-finite
        values are counted in ``nonfinite`` (see :meth:`check_finite`)."""
        pts = to_model_points(points_unit, self.model.point_convention)
        n = len(pts)
        out = np.empty(n, dtype=np.float32)
        step = self.batch_points
        name = self.model.inputs["points"]
        flat_points = len(_input_shape(self.session, name)) == 2
        for start in range(0, n, step):
            if self.cancel is not None:
                self.cancel.check()
            batch = pts[start : start + step]
            t0 = time.perf_counter()
            feed = batch if flat_points else batch[None]
            got = self.session.run([self.model.output], {**self._static, name: feed})[0]
            self.decode_ms += (time.perf_counter() - t0) * 1000.0
            got = np.asarray(got, dtype=np.float32).reshape(-1)
            if got.size != len(batch):
                raise PipelineError(
                    self.session.path,
                    f"output '{self.model.output}' has {got.size} values for {len(batch)} points "
                    "(expected one per point)",
                )
            out[start : start + len(batch)] = got
            self.nonfinite += len(batch) - int(np.count_nonzero(np.isfinite(got)))
            self.points += len(batch)
            self.batches += 1
            if self.on_batch is not None:
                self.on_batch(len(batch))
        return out
