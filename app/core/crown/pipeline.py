"""Crown generation: scan (mm) -> frame -> voxels -> model -> marching cubes -> smoothing -> mm.

Every stage is timed in the run report, together with the decoder points evaluated and the
providers the sessions really run on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from app.core.crown.checks import CheckResult, base_gap, check_crown, clipped_faces
from app.core.crown.components import choose_parts, split_parts, submesh
from app.core.crown.decode import CrownEvaluator, decision_level, decision_margin
from app.core.crown.frame import AXES, CaseFrame, FrameRequest, make_frame
from app.core.crown.meshio import Mesh, check_mesh_output, load_mesh, write_mesh
from app.core.crown.point_cloud import point_cloud_voxels, sample_surface
from app.core.crown.smoothing import smooth
from app.core.crown.surface import (
    evaluate_coarse_to_fine,
    evaluate_dense,
    extract_surface,
    signed_volume,
)
from app.core.crown.voxelize import voxelize
from app.core.errors import InputError, ModelError, PipelineError
from app.core.fileio import check_not_input
from app.core.manifest import CrownModel
from app.core.model_lint import lint_model
from app.core.report import CancelToken, ProgressFn, RunReport
from app.core.runtime import SessionPool

# fraction of the whole run reached at the end of each stage, for progress reporting
_PROGRESS = {"load": 0.03, "frame": 0.04, "voxelize": 0.08, "encode": 0.12, "decode": 0.88,
             "extract": 0.93, "smooth": 0.97, "write": 1.0}  # fmt: skip


@dataclass
class CrownResult:
    """The crown in the scan's millimetres, whether it is closed, and the run report."""

    mesh: Mesh
    watertight: bool
    report: RunReport
    checks: CheckResult | None = None
    output: Path | None = None
    grid: np.ndarray | None = None

    @property
    def warnings(self) -> list[str]:
        """What the plausibility checks found wrong, each saying what to check."""
        return [] if self.checks is None else list(self.checks.warnings)


def _is_watertight(mesh: Mesh) -> bool:
    import trimesh

    return bool(trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).is_watertight)


def _generate(
    scan: Mesh,
    model: CrownModel,
    pool: SessionPool,
    report: RunReport,
    resolution: int | None,
    center: Sequence[float] | None,
    case_frame: CaseFrame | None,
    cancel: CancelToken | None,
    progress: ProgressFn | None,
    keep_grid: bool = False,
) -> CrownResult:
    def tick(stage: str, fraction: float | None = None) -> None:
        if cancel is not None:
            cancel.check()
        if progress is not None:
            progress(stage, _PROGRESS[stage] if fraction is None else fraction)

    gen = model.generation
    res = int(resolution) if resolution is not None else gen.resolution
    if res < 8:
        raise ModelError(model.manifest_path, f"generation resolution must be >= 8, got {res}")
    coarse = gen.coarse_resolution
    requested = res
    if coarse is not None and coarse >= res:
        coarse = None
    elif coarse is not None:
        res = compatible_resolution(res, coarse)
    level = decision_level(gen.threshold, model.output_kind)
    if not np.isfinite(level):
        raise ModelError(
            model.manifest_path, "generation.threshold must be strictly between 0 and 1 for logits"
        )

    with report.stage("frame"):
        frame = make_frame(scan.vertices, model.frame, center, case_frame)
        vertices_unit = frame.to_unit(scan.vertices)
    tick("frame")
    with report.stage("voxelize"):
        voxels = _voxels(vertices_unit, scan.faces, model)
    tick("voxelize")

    total = res**3 if coarse is None else coarse**3 + res**3 // 8
    start, span = _PROGRESS["encode"], _PROGRESS["decode"] - _PROGRESS["encode"]
    done = [0]

    def on_batch(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress("decode", start + span * min(1.0, done[0] / total))

    with report.stage("session"):
        pool.bind(model)
        evaluator = CrownEvaluator(
            model, pool, voxels, cancel=cancel, on_batch=on_batch, plan=pool.plan_for(model)
        )
        report.providers = pool.providers_for(evaluator.session_paths)
        report.info["model_lint"] = lint_model(model)
    if evaluator.encoded:
        report.timings_ms["session"] -= evaluator.encode_ms
        report.timings_ms["encode"] = evaluator.encode_ms
    tick("encode")

    info: dict = {}
    with report.stage("grid"):
        if coarse is None:
            values = evaluate_dense(evaluator.evaluate, res)
        else:
            margin = decision_margin(gen.threshold, gen.refine_margin, model.output_kind)
            values, stats = evaluate_coarse_to_fine(
                evaluator.evaluate, res, coarse, level, margin=margin
            )
            info["coarse_levels"] = stats.levels
            info["points_per_level"] = stats.evaluated
    report.timings_ms["grid"] -= evaluator.decode_ms
    report.timings_ms["decode"] = evaluator.decode_ms
    evaluator.check_finite()
    tick("decode")

    with report.stage("extract"):
        surface = extract_surface(values, level)
    if surface is None:
        where = ", ".join(f"{c:.2f}" for c in frame.center)
        raise PipelineError(
            None,
            f"the model found no crown in the frame: all {values.size:,} grid values are below "
            f"the decision level {level:.3g} ({model.output_kind}, threshold "
            f"{gen.threshold:g}), ranging from {float(values.min()):.3g} to "
            f"{float(values.max()):.3g}; check the frame centre (--center) is on the "
            f"preparation (the frame is a {frame.size_mm:.1f} mm cube centred at {where} mm)",
        )
    verts_unit, faces = surface
    tick("extract")
    with report.stage("postprocess"):
        mm3 = frame.size_mm**3
        parts = split_parts(verts_unit, faces)
        post = model.postprocess
        kept, removed = choose_parts(
            parts, post.keep, post.min_volume_mm3 / mm3, np.zeros(3), AXES[model.frame.occlusal]
        )
        verts_unit, faces = submesh(verts_unit, faces, kept)
    with report.stage("smooth"):
        verts_unit = smooth(verts_unit, faces, model.smoothing.method, model.smoothing.iterations)
    tick("smooth")
    mesh = Mesh(vertices=frame.to_mm(verts_unit), faces=faces)
    with report.stage("checks"):
        watertight = _is_watertight(mesh)
        checks = check_crown(
            mesh.vertices,
            abs(signed_volume(mesh.vertices, mesh.faces)),
            watertight,
            frame,
            model.frame,
            model.checks,
            components=(len(parts), len(kept)),
            removed_volume_mm3=sum(p.volume for p in removed) * mm3,
            clipped=clipped_faces(values, level, model.frame),
            gap_mm=base_gap(mesh.vertices, scan.vertices, frame, model.frame),
        )
    report.info["postprocess"] = {
        "keep": post.keep,
        "removed": [
            {"volume_mm3": round(p.volume * mm3, 3),
             "centroid_mm": [round(float(c), 3) for c in frame.to_mm(p.centroid)]}
            for p in removed
        ],
    }  # fmt: skip
    report.info["checks"] = checks.as_dict()

    report.info.update(
        {
            "decoder_points": int(evaluator.points),
            "batches": int(evaluator.batches),
            "batch_points": int(evaluator.batch_points),
            "decoder_path": evaluator.plan.label,
            "resolution": res,
            "requested_resolution": requested,
            "coarse_resolution": coarse,
            "voxel_resolution": model.voxel_resolution,
            "voxels_occupied": int(voxels.sum()),
            "voxel_grid": asdict(model.voxel_grid),
            "frame_center_mm": [round(float(c), 4) for c in frame.center],
            "frame_occlusal": _rounded(frame.direction_to_mm(AXES[model.frame.occlusal])),
            "frame_mesial": _rounded(frame.direction_to_mm(AXES[model.frame.mesial])),
            "frame_size_mm": round(frame.size_mm, 4),
            "frame_source": report.info.get(
                "frame_source", "default" if case_frame is None and center is None else "given"
            ),
            **info,
        }
    )
    return CrownResult(mesh=mesh, watertight=watertight, report=report, checks=checks,
                       grid=values if keep_grid else None)  # fmt: skip


def _voxels(vertices_unit: np.ndarray, faces: np.ndarray, model: CrownModel) -> np.ndarray:
    """The model's voxel input for a scan already in the unit cube, by the manifest's rules."""
    rules, res = model.voxel_grid, model.voxel_resolution
    if model.voxelization == "point_cloud":
        try:
            points = sample_surface(vertices_unit, faces, rules.point_samples, rules.seed)
        except ValueError as exc:
            raise InputError(None, f"cannot sample the scan's surface: {exc}") from exc
        return point_cloud_voxels(points, res, rules.placement)
    return voxelize(vertices_unit, faces, res, model.voxelization, placement=rules.placement,
                    surface=rules.surface, inside=rules.inside)  # fmt: skip


def _rounded(direction: np.ndarray) -> list[float]:
    return [round(float(c), 6) for c in direction]


def compatible_resolution(resolution: int, coarse: int) -> int:
    """The smallest grid of at least ``resolution`` points per axis that coarse-to-fine can
    reach from ``coarse`` by doubling: ``(coarse - 1) * 2**k + 1``.

    An explicit resolution the coarse grid does not divide is rounded up to it (and reported)
    rather than silently falling back to a dense grid many times slower.
    """
    if (resolution - 1) % (coarse - 1) == 0:
        return resolution
    res = coarse
    while res < resolution:
        res = 2 * res - 1
    return res


def generate_crown(
    scan: Mesh,
    model: CrownModel,
    pool: SessionPool,
    *,
    resolution: int | None = None,
    center: Sequence[float] | None = None,
    case_frame: CaseFrame | None = None,
    cancel: CancelToken | None = None,
    progress: ProgressFn | None = None,
    keep_grid: bool = False,
) -> CrownResult:
    """Generate a crown for ``scan`` (mm) with ``model``; the mesh comes back in the scan's mm.

    ``resolution`` overrides the manifest's generation grid; ``case_frame`` places and turns the
    model's frame on the preparation (``center`` alone only moves it). ``keep_grid`` keeps the
    model values on the generation grid in the result (``grid``, [x, y, z]), for comparisons.
    Raises :class:`PipelineError` when the model finds no surface in the frame and
    :class:`app.core.errors.Cancelled` when ``cancel`` is set.
    """
    return _generate(
        scan, model, pool, RunReport(), resolution, center, case_frame, cancel, progress, keep_grid
    )


def run_crown(
    input_path: str | Path,
    output_path: str | Path,
    model: CrownModel,
    pool: SessionPool,
    *,
    resolution: int | None = None,
    center: Sequence[float] | None = None,
    case_frame: CaseFrame | None = None,
    frame_request: FrameRequest | None = None,
    scale: float = 1.0,
    cancel: CancelToken | None = None,
    progress: ProgressFn | None = None,
) -> CrownResult:
    """Load the scan, generate the crown, write it atomically (never over the input) as STL,
    PLY or OBJ by the output's suffix, and return the result with ``output`` set.

    ``scale`` converts the scan's coordinates to mm (1000 for metres).

    ``frame_request`` (the CLI's ``--center/--occlusal/--mesial/--pick/--auto-frame``) is
    resolved on the loaded scan and overrides ``case_frame``; a scan where no frame can be
    found is an :class:`InputError` naming it.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    check_mesh_output(output_path)
    check_not_input(output_path, [input_path])
    report = RunReport()
    with report.stage("load"):
        scan = load_mesh(input_path, scale)
    if cancel is not None:
        cancel.check()
    if progress is not None:
        progress("load", _PROGRESS["load"])
    if frame_request is not None and not frame_request.empty:
        with report.stage("locate"):
            try:
                case_frame, source = frame_request.resolve(scan.vertices, scan.faces, model.frame)
            except ValueError as exc:
                raise InputError(input_path, f"cannot place the crown frame: {exc}") from exc
        report.info["frame_source"] = source
    try:
        result = _generate(
            scan, model, pool, report, resolution, center, case_frame, cancel, progress
        )
    except PipelineError as exc:
        if exc.path is not None:
            raise
        raise PipelineError(input_path, exc.message) from exc
    with report.stage("write"):
        write_mesh(output_path, result.mesh, inputs=[input_path])
    if progress is not None:
        progress("write", _PROGRESS["write"])
    result.output = output_path
    return result
