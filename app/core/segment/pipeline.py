"""Model-scan segmentation: image -> [ROI crop] -> tensor -> model -> labels -> mask + overlay.

Stages (timed in ``report.timings_ms``): ``load``, ``roi``, ``preprocess``, ``infer``,
``decode``, ``write``; cancellation is checked between them. ``report.info`` carries
``image_size`` ([height, width]), ``input_size`` (the tensor fed, [height, width]),
``precision`` and ``inference_scale`` (the speed options that ran, see :class:`Speed`),
``class_pixels`` / ``class_fraction`` (per class name), ``roi_box`` (x0, y0, x1, y1 in source
pixels, x1/y1 exclusive; null for the full frame), ``roi_fraction`` (crop area / frame area)
and ``roi_note`` (how the crop was chosen, or why the full frame was used) and ``model_lint``
(where the ONNX graph does not match the manifest, :mod:`app.core.model_lint`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from app.core.errors import InputError, ModelError, PipelineError
from app.core.fileio import check_not_input, check_output_path, commit_set
from app.core.manifest import SegmentationModel, Speed
from app.core.model_lint import lint_model
from app.core.report import CancelToken, ProgressFn, RunReport
from app.core.runtime import ModelSession, SessionPool
from app.core.segment.decode import decode, labels_from_scores, source_scores
from app.core.segment.imageio import label_png_writer, load_image
from app.core.segment.overlay import overlay
from app.core.segment.passes import flip_average, slide_scores
from app.core.segment.preprocess import Prepared, preprocess
from app.core.segment.quantize import int8_model
from app.core.segment.roi import Box, plan_roi
from app.core.segment.scale import preprocess_scaled, scale_factor


@dataclass
class SegmentResult:
    """Labels at the source size plus what the run did."""

    image: np.ndarray
    labels: np.ndarray
    roi_box: tuple[int, int, int, int] | None
    class_pixels: dict[str, int]
    report: RunReport = field(default_factory=RunReport)


def check_session(session: ModelSession, model: SegmentationModel) -> None:
    """Compare the ONNX graph's input/output with the manifest; :class:`ModelError` if apart."""
    inputs = {i.name: i for i in session.session.get_inputs()}
    if model.input not in inputs:
        raise ModelError(
            model.onnx, f"has no input '{model.input}' (it has: {', '.join(inputs) or 'none'})"
        )
    if model.output not in session.output_names:
        raise ModelError(
            model.onnx,
            f"has no output '{model.output}' (it has: {', '.join(session.output_names)})",
        )
    arg = inputs[model.input]
    if arg.type != "tensor(float)":
        raise ModelError(model.onnx, f"input '{model.input}' is {arg.type}, float32 is needed")
    shape = list(arg.shape)
    if len(shape) != 4 or (isinstance(shape[1], int) and shape[1] != 3):
        raise ModelError(
            model.onnx, f"input '{model.input}' has shape {shape}; (1, 3, H, W) needed"
        )
    fixed = [d if isinstance(d, int) else None for d in shape[2:]]
    if model.inference.mode == "slide":
        if any(
            got is not None and got != want
            for want, got in zip(model.inference.crop_size, fixed, strict=True)
        ):
            raise ModelError(
                model.manifest_path,
                f"inference.crop_size {list(model.inference.crop_size)} does not match the "
                f"model's input {shape}",
            )
    elif model.input_size is None:
        if any(d is not None for d in fixed):
            raise ModelError(
                model.manifest_path,
                f"input_size is null but the model's input is {shape}; "
                "set input_size to its [height, width]",
            )
    else:
        for want, got in zip(model.input_size, fixed, strict=True):
            if got is not None and got != want:
                raise ModelError(
                    model.manifest_path,
                    f"input_size {list(model.input_size)} does not match the model's input {shape}",
                )


def class_counts(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Pixels per class id; one ``count_nonzero`` per class for a few classes (a bincount
    first widens every uint8 label to 64 bits, ~25 ms at 1400x1600)."""
    if n_classes > 32:
        return np.bincount(labels.ravel(), minlength=n_classes)
    return np.array([np.count_nonzero(labels == c) for c in range(n_classes)], np.int64)


def _run_model(session: ModelSession, model: SegmentationModel, tensor: np.ndarray) -> np.ndarray:
    """The raw output for a prepared tensor: one pass, or mmseg's slide windows averaged."""
    if model.inference.mode == "slide":
        return slide_scores(
            tensor, model.inference, lambda t: session.run([model.output], {model.input: t})[0]
        )
    return session.run([model.output], {model.input: tensor})[0]


def _flip_labels(
    raw: np.ndarray,
    prepared: Prepared,
    crop: np.ndarray,
    session: ModelSession,
    model: SegmentationModel,
    factor: float,
) -> np.ndarray:
    """Labels from the scores of ``crop`` and of its mirror image (at the same inference
    scale ``factor``), probabilities averaged."""
    mirrored = preprocess_scaled(np.ascontiguousarray(crop[:, ::-1]), model, factor)
    raw_m = _run_model(session, model, mirrored.tensor)
    planes = flip_average(
        source_scores(raw, prepared, model),
        source_scores(raw_m, mirrored, model),
        model.output_kind,
    )
    return labels_from_scores(planes)


def _sub_progress(progress: ProgressFn | None, lo: float, hi: float) -> ProgressFn:
    def report(stage: str, fraction: float) -> None:
        if progress is not None:
            progress(stage, lo + (hi - lo) * fraction)

    return report


def _segment(
    image_rgb: np.ndarray,
    model: SegmentationModel,
    pool: SessionPool,
    report: RunReport,
    roi: bool | None,
    speed: Speed | None,
    cancel: CancelToken,
    progress: Callable[[str, float], None],
) -> SegmentResult:
    image_rgb = np.asarray(image_rgb)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3) RGB, got {image_rgb.shape}")
    speed = model.speed if speed is None else speed
    if speed.long_side is not None and (
        model.input_size is not None or model.resize == "keep_ratio"
    ):
        raise ModelError(
            model.manifest_path,
            "long_side needs a model with input_size null and no keep_ratio resize "
            "(that sets its own scale)",
        )
    if speed.precision == "int8":
        model = int8_model(model)
    pool.bind(model)
    session = pool.get(model.onnx)
    report.providers = list(session.providers)
    check_session(session, model)
    report.info["model_lint"] = lint_model(model)
    h, w = image_rgb.shape[:2]
    use_roi = model.roi.enabled if roi is None else bool(roi)
    factor = scale_factor((h, w), speed.long_side)

    def segment_small(small: np.ndarray) -> np.ndarray:
        prepared = preprocess(small, model)
        return decode(_run_model(session, model, prepared.tensor), prepared, model)

    box: Box | None = None
    with report.stage("roi"):
        if use_roi:
            box, note = plan_roi(image_rgb, model, segment_small)
        else:
            note = "roi: off; full frame segmented"
    cancel.check()
    progress("roi", 0.15)

    x0, y0, x1, y1 = box if box is not None else (0, 0, w, h)
    crop = image_rgb[y0:y1, x0:x1]
    with report.stage("preprocess"):
        prepared = preprocess_scaled(crop, model, factor)
    cancel.check()
    progress("preprocess", 0.25)
    with report.stage("infer"):
        raw = _run_model(session, model, prepared.tensor)
    cancel.check()
    progress("infer", 0.85)
    with report.stage("decode"):
        if model.inference.flip:
            crop_labels = _flip_labels(raw, prepared, crop, session, model, factor)
        else:
            crop_labels = decode(raw, prepared, model)
        if box is None:
            labels = crop_labels
        else:
            labels = np.zeros((h, w), np.uint8)
            labels[y0:y1, x0:x1] = crop_labels
        counts = class_counts(labels, len(model.classes))
    progress("decode", 1.0)

    names = [c.name for c in model.classes]
    class_pixels = {n: int(c) for n, c in zip(names, counts, strict=False)}
    total = float(h * w)
    report.info.update(
        {
            "image_size": [h, w],
            "input_size": list(prepared.input_size),
            "precision": speed.precision,
            "inference_scale": round(factor, 6),
            "class_pixels": class_pixels,
            "class_fraction": {n: round(c / total, 6) for n, c in class_pixels.items()},
            "roi_box": None if box is None else list(box),
            "roi_fraction": 1.0 if box is None else round((x1 - x0) * (y1 - y0) / total, 6),
            "roi_note": note,
        }
    )
    return SegmentResult(image_rgb, labels, box, class_pixels, report)


def segment_image(
    image_rgb: np.ndarray,
    model: SegmentationModel,
    pool: SessionPool,
    *,
    roi: bool | None = None,
    speed: Speed | None = None,
    cancel: CancelToken | None = None,
    progress: ProgressFn | None = None,
) -> SegmentResult:
    """Segment an RGB image (uint8 (H, W, 3)) with ``model``.

    ``roi``: None follows the manifest's ``roi.enabled``; True/False overrides it. With the ROI
    path, only the crop around the stone model is segmented and pasted into a background mask.
    ``speed``: None follows the manifest's ``speed``; a :class:`Speed` overrides it.
    """
    return _segment(
        image_rgb,
        model,
        pool,
        RunReport(),
        roi,
        speed,
        cancel or CancelToken(),
        _sub_progress(progress, 0.0, 1.0),
    )


OVERLAY_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _check_overlay_path(path: Path) -> None:
    if path.suffix.lower() not in OVERLAY_SUFFIXES:
        raise InputError(path, "overlay must be a .png, .jpg, .bmp or .tif file")


def encode_image(path: Path, rgb: np.ndarray) -> bytes:
    """``rgb`` encoded in the image format named by ``path``'s suffix (PNG fast-compressed)."""
    ext = path.suffix.lower()
    _check_overlay_path(path)
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if ext == ".png" else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise InputError(path, "cannot encode the overlay in this format")
    return buf.tobytes()


def run_segment(
    image_path: str | Path,
    model: SegmentationModel,
    pool: SessionPool,
    *,
    mask_path: str | Path | None = None,
    overlay_path: str | Path | None = None,
    roi: bool | None = None,
    speed: Speed | None = None,
    cancel: CancelToken | None = None,
    progress: ProgressFn | None = None,
) -> SegmentResult:
    """Load ``image_path``, segment it, and write the palette mask and/or overlay as one set
    (both or neither replaced).

    Output paths are checked against the input (and for being a folder) before any work is
    done.
    """
    image_path = Path(image_path)
    cancel = cancel or CancelToken()
    outputs = [Path(p) for p in (mask_path, overlay_path) if p is not None]
    for out in outputs:
        check_output_path(out)
        check_not_input(out, [image_path])
    if mask_path is not None and overlay_path is not None:
        check_not_input(Path(overlay_path), [Path(mask_path)])
    if mask_path is not None and Path(mask_path).suffix.lower() != ".png":
        raise InputError(mask_path, "the label mask is a palette PNG: give a .png path")
    if overlay_path is not None:
        _check_overlay_path(Path(overlay_path))
    report = RunReport()
    outer = _sub_progress(progress, 0.0, 1.0)
    with report.stage("load"):
        image = load_image(image_path)
    cancel.check()
    outer("load", 0.05)
    try:
        result = _segment(
            image, model, pool, report, roi, speed, cancel, _sub_progress(progress, 0.05, 0.9)
        )
    except PipelineError as exc:  # a failure on a server names the image as well
        if exc.path is not None:
            raise
        raise PipelineError(image_path, exc.message) from exc
    cancel.check()
    with report.stage("write"):
        items = []
        if mask_path is not None:
            items.append((Path(mask_path), label_png_writer(result.labels, model.palette)))
        if overlay_path is not None:
            data = encode_image(Path(overlay_path), overlay(image, result.labels, model.palette))
            items.append((Path(overlay_path), lambda tmp: tmp.write_bytes(data)))
        commit_set(items)
    outer("write", 1.0)
    return result
