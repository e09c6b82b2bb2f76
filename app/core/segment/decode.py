"""Model output to a label image at the source size, for every output contract.

Contracts (``output_kind`` in the manifest):

- ``logits`` / ``probabilities``: ``(1, C, h, w)`` (or ``(C, h, w)``), C = number of classes.
  As mmseg does: scores resized bilinearly (half-pixel centres, like ``align_corners=False``,
  unless the manifest's ``inference`` asks for aligned corners or nearest) to the input size
  when the model's output is smaller, the padding cropped off, the scores resized to the
  source size, then argmax over C (ties go to the lower class).
- ``labels``: ``(h, w)``, ``(1, h, w)`` or ``(1, 1, h, w)``, any integer or float type (floats are
  rounded); the same geometry steps with nearest-neighbour resizing.

An output that does not fit the manifest (class count, shape, label values) is a
:class:`ModelError` naming the model file. :func:`decode` avoids whole-array argmax and float64
temporaries; :func:`decode_reference` is the plain numpy version it is tested against.
"""

from __future__ import annotations

import cv2
import numpy as np

from app.core.errors import ModelError, PipelineError
from app.core.manifest import SegmentationModel
from app.core.segment.passes import resize_scores
from app.core.segment.preprocess import Prepared


def _scores_chw(output: np.ndarray, model: SegmentationModel) -> np.ndarray:
    n = len(model.classes)
    a = np.asarray(output)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ModelError(model.onnx, f"output batch size is {a.shape[0]}, expected 1")
        a = a[0]
    if a.ndim != 3:
        raise ModelError(
            model.onnx,
            f"output '{model.output}' has shape {list(np.shape(output))}; output_kind "
            f"'{model.output_kind}' needs (1, C, H, W)",
        )
    if a.shape[0] != n:
        raise ModelError(
            model.onnx,
            f"output '{model.output}' has {a.shape[0]} channels but the manifest lists {n} classes",
        )
    if not np.issubdtype(a.dtype, np.floating):
        raise ModelError(
            model.onnx, f"output_kind '{model.output_kind}' needs float scores, got {a.dtype}"
        )
    return a


def _labels_hw(output: np.ndarray, model: SegmentationModel) -> np.ndarray:
    a = np.asarray(output)
    shape = list(a.shape)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ModelError(
            model.onnx,
            f"output '{model.output}' has shape {shape}; output_kind 'labels' needs "
            "(H, W), (1, H, W) or (1, 1, H, W)",
        )
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise _non_finite(a, model)
        a = np.rint(a)
    elif a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.integer):
        raise ModelError(model.onnx, f"labels output has unsupported type {a.dtype}")
    n = len(model.classes)
    lo, hi = (a.min(), a.max()) if a.size else (0, 0)
    if lo < 0 or hi >= n:
        bad = lo if lo < 0 else hi
        raise ModelError(
            model.onnx,
            f"model output label {int(bad)}, but the manifest lists {n} classes (0..{n - 1})",
        )
    return a.astype(np.uint8)


def _resize(a: np.ndarray, size: tuple[int, int], interp: int) -> np.ndarray:
    if a.shape[:2] == size:
        return a
    return cv2.resize(a, (size[1], size[0]), interpolation=interp)


def _argmax_into_uint8(scores: list[np.ndarray]) -> np.ndarray:
    """Argmax over a list of (h, w) float32 planes, first maximum wins (as ``np.argmax``).

    Branch-free: ``labels += (c - labels) * (score_c > best)`` in wrapping uint8 arithmetic,
    which is exact and avoids boolean-mask assignment (slow on ragged class boundaries).
    """
    best = scores[0].copy()
    labels = np.zeros(best.shape, np.uint8)
    mask = np.empty(best.shape, np.bool_)
    step = np.empty(best.shape, np.uint8)
    for c in range(1, len(scores)):
        np.greater(scores[c], best, out=mask)
        np.subtract(np.uint8(c), labels, out=step)
        np.multiply(step, mask, out=step)
        np.add(labels, step, out=labels)
        np.maximum(best, scores[c], out=best)
    return labels


def _all_finite(a: np.ndarray) -> bool:
    """True when ``a`` holds no NaN or inf; the full check runs only if the sum is not finite."""
    return bool(np.isfinite(a.sum())) or bool(np.isfinite(a).all())


def _non_finite(a: np.ndarray, model: SegmentationModel) -> PipelineError:
    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
    return PipelineError(
        model.onnx,
        f"the model returned {bad:,} non-finite values (NaN or infinity) of {a.size:,} in "
        f"output '{model.output}'; no mask was written",
    )


def source_scores(
    output: np.ndarray, prepared: Prepared, model: SegmentationModel
) -> list[np.ndarray]:
    """The score planes of a logits/probabilities output at ``prepared.source_size``: resized
    to the input, padding cropped, resized to the source (the manifest's ``inference``)."""
    H, W = prepared.input_size
    vh, vw = prepared.valid
    how = model.inference
    scores = _scores_chw(output, model)
    if not _all_finite(scores):
        raise _non_finite(scores, model)
    planes = []
    for plane in scores:
        p = plane if plane.dtype == np.float32 else plane.astype(np.float32)
        p = resize_scores(p, (H, W), how)[:vh, :vw]
        planes.append(resize_scores(np.ascontiguousarray(p), prepared.source_size, how))
    return planes


def labels_from_scores(planes: list[np.ndarray]) -> np.ndarray:
    """Class ids (uint8) of the best score per pixel, ties to the lower class."""
    if len(planes) == 1:
        return np.zeros(planes[0].shape, np.uint8)
    return _argmax_into_uint8(planes)


def decode(output: np.ndarray, prepared: Prepared, model: SegmentationModel) -> np.ndarray:
    """Turn the raw model output into ``uint8 (h, w)`` class ids at ``prepared.source_size``."""
    if model.output_kind == "labels":
        H, W = prepared.input_size
        vh, vw = prepared.valid
        lab = _labels_hw(output, model)
        lab = _resize(lab, (H, W), cv2.INTER_NEAREST)[:vh, :vw]
        return np.ascontiguousarray(_resize(lab, prepared.source_size, cv2.INTER_NEAREST))
    return labels_from_scores(source_scores(output, prepared, model))


def decode_reference(
    output: np.ndarray, prepared: Prepared, model: SegmentationModel
) -> np.ndarray:
    """Plain version of :func:`decode`: resize all score planes, then ``np.argmax``."""
    H, W = prepared.input_size
    vh, vw = prepared.valid
    sh, sw = prepared.source_size
    if model.output_kind == "labels":
        lab = _labels_hw(output, model)
        lab = cv2.resize(lab, (W, H), interpolation=cv2.INTER_NEAREST)[:vh, :vw]
        return cv2.resize(np.ascontiguousarray(lab), (sw, sh), interpolation=cv2.INTER_NEAREST)
    how = model.inference
    scores = _scores_chw(output, model).astype(np.float32)
    up = np.stack([resize_scores(p, (H, W), how) for p in scores])
    up = np.ascontiguousarray(up[:, :vh, :vw])
    full = np.stack([resize_scores(p, (sh, sw), how) for p in up])
    return np.argmax(full, axis=0).astype(np.uint8)
