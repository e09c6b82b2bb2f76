"""Running one case: the crown and the segmented images, written into its output folder.

Everything is computed in memory and written only once the whole case succeeded, as one set,
so a cancelled or failed run leaves the case folder exactly as it was.

Qt-free: the window, the CLI and tests use the same functions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.crown.frame import CaseFrame
from app.core.errors import InputError
from app.core.fileio import check_not_input, clean_stale_temps, commit_set
from app.core.report import CancelToken, ProgressFn, RunReport
from app.core.workspace import Case, input_hash, utc_now


@dataclass
class ImageResult:
    """One segmented image of a case."""

    image_path: Path
    result: Any  # app.core.segment.pipeline.SegmentResult


@dataclass
class CaseResult:
    """What ``run_case`` produced: the crown, the segmented images, and the files written."""

    case: str
    crown: Any  # app.core.crown.pipeline.CrownResult
    images: list[ImageResult] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    report: RunReport = field(default_factory=RunReport)


def run_case(
    case: Case,
    crown_model: Any,
    seg_model: Any | None,
    pool: Any,
    *,
    resolution: int | None = None,
    roi: bool | None = None,
    smoothing: Any | None = None,
    case_frame: CaseFrame | None = None,
    frame_source: str = "given",
    overlay_alpha: float = 0.5,
    cancel: CancelToken | None = None,
    progress: ProgressFn | None = None,
) -> CaseResult:
    """Generate the crown and segment every image of ``case``, then write all outputs.

    Everything is computed in memory first and written only once the whole case succeeded, so
    a cancelled or failed run leaves the case folder exactly as it was. ``run.json`` records
    the hash of the inputs read; an input changed during the run fails it. Raises
    :class:`~app.core.errors.Cancelled`, :class:`InputError` naming a broken file, or
    :class:`PipelineError`. ``smoothing`` (a ``manifest.Smoothing``) overrides the model's;
    ``case_frame`` places and turns the model's frame on the preparation (else the manifest's);
    ``frame_source`` says where it came from, for ``run.json``.
    """
    from app.core.crown.meshio import load_mesh
    from app.core.crown.pipeline import generate_crown

    if case.problem or case.scan is None:
        raise InputError(case.folder, case.problem or "no scan mesh in the case folder")
    if smoothing is not None:
        crown_model = dataclasses.replace(crown_model, smoothing=smoothing)
    cancel = cancel or CancelToken()
    report = RunReport()
    n_img = len(case.images) if seg_model is not None else 0
    crown_share = 0.7 if n_img else 1.0

    def sub(start: float, span: float, prefix: str) -> ProgressFn:
        def fn(stage: str, frac: float) -> None:
            if progress is not None:
                progress(f"{prefix}: {stage}", start + span * max(0.0, min(1.0, frac)))

        return fn

    cancel.check()
    inputs_sha256 = input_hash(case)
    with report.stage("load scan"):
        scan = load_mesh(case.scan)
    cancel.check()
    crown = generate_crown(
        scan,
        crown_model,
        pool,
        resolution=resolution,
        case_frame=case_frame,
        cancel=cancel,
        progress=sub(0.0, crown_share, "crown"),
    )
    providers: list[str] = list(crown.report.providers)
    for k, v in crown.report.timings_ms.items():
        report.timings_ms[f"crown {k}"] = v
    images: list[ImageResult] = []
    if seg_model is not None:
        from app.core.segment.imageio import load_image
        from app.core.segment.pipeline import segment_image

        span = (1.0 - crown_share) / max(1, n_img)
        for i, image_path in enumerate(case.images):
            cancel.check()
            rgb = load_image(image_path)
            seg = segment_image(
                rgb,
                seg_model,
                pool,
                roi=roi,
                cancel=cancel,
                progress=sub(crown_share + i * span, span, f"image {i + 1}/{n_img}"),
            )
            images.append(ImageResult(image_path, seg))
            for p in seg.report.providers:
                if p not in providers:
                    providers.append(p)
            for k, v in seg.report.timings_ms.items():
                report.timings_ms[f"segment {k}"] = report.timings_ms.get(f"segment {k}", 0) + v
    cancel.check()
    if input_hash(case) != inputs_sha256:
        raise InputError(case.folder, "the input files changed during the run; run it again")
    if progress is not None:
        progress("writing outputs", 1.0)
    report.providers = providers
    report.info["decoder_points"] = crown.report.info.get("decoder_points")
    info = {
        "case": case.name,
        "time": utc_now(),
        "crown_model": crown_model.id,
        "crown_version": crown_model.version,
        "seg_model": seg_model.id if seg_model is not None else "",
        "seg_version": seg_model.version if seg_model is not None else "",
        "input_hash": inputs_sha256,
        "providers": providers,
        "frame": None if case_frame is None else case_frame.to_dict(),
        "timings_ms": {k: round(v, 2) for k, v in report.timings_ms.items()},
        "crown": {"vertices": int(len(crown.mesh.vertices)), "faces": int(len(crown.mesh.faces))},
        "frame_source": "default" if case_frame is None else frame_source,
        "checks": crown.report.info.get("checks"),
        "warnings": crown.warnings,
        "model_lint": [
            *crown.report.info.get("model_lint", []),
            *(images[0].result.report.info.get("model_lint", []) if images else []),
        ],
        "images": {
            i.image_path.name: {
                "roi_box": None if i.result.roi_box is None else list(i.result.roi_box),
                "class_pixels": {k: int(v) for k, v in i.result.class_pixels.items()},
            }
            for i in images
        },
    }
    written = write_case_outputs(case, crown.mesh, images, seg_model, overlay_alpha, info)
    return CaseResult(case.name, crown, images, written, providers, report)


def read_run_info(case: Case) -> dict[str, Any] | None:
    """The ``run.json`` the last successful run wrote (models, providers, ROI boxes), if any."""
    try:
        data = json.loads(case.run_info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_case_outputs(
    case: Case,
    crown_mesh: Any,
    images: Iterable[ImageResult],
    seg_model: Any | None,
    overlay_alpha: float,
    run_info: dict[str, Any],
) -> list[Path]:
    """Write crown STL, mask PNGs, overlays and ``run.json`` into ``<case>/output/`` as one set.

    Every file is encoded and written to a temp file first; only when all succeeded are they
    renamed into place, so a full disk or a refused file leaves the previous outputs whole (a
    mask always matches its overlay and ``run.json``). Temp files a killed run left there are
    removed first.
    """
    from app.core.crown.meshio import stl_bytes

    clean_stale_temps(case.output_dir)
    inputs = list(case.inputs)
    crown = stl_bytes(crown_mesh)
    items: list[tuple[Path, Callable[[Path], None]]] = [
        (case.crown_path, lambda tmp: tmp.write_bytes(crown))
    ]
    if seg_model is not None:
        from app.core.segment.imageio import label_png_writer
        from app.core.segment.overlay import overlay
        from app.core.segment.pipeline import encode_image

        for item in images:
            labels = item.result.labels
            items.append(
                (case.mask_path(item.image_path), label_png_writer(labels, seg_model.palette))
            )
            ov_path = case.overlay_path(item.image_path)
            ov = overlay(item.result.image, labels, seg_model.palette, alpha=overlay_alpha)
            data = encode_image(ov_path, ov)
            items.append((ov_path, lambda tmp, data=data: tmp.write_bytes(data)))
    info = json.dumps(run_info, indent=2).encode("utf-8")
    items.append((case.run_info_path, lambda tmp: tmp.write_bytes(info)))
    for path, _ in items:
        check_not_input(path, inputs)
    return commit_set(items)


__all__ = [
    "CaseResult",
    "ImageResult",
    "read_run_info",
    "run_case",
    "write_case_outputs",
]
