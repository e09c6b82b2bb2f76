"""How the model runs over a prepared image and how its scores are resized, as mmseg tests.

- :func:`resize_scores`: a score plane resized bilinearly with half-pixel centres
  (``align_corners=False``, the same as ``cv2.INTER_LINEAR``), with corners aligned
  (``align_corners=True``: output pixel i samples input ``i * (n_in - 1) / (n_out - 1)``), or
  nearest as PyTorch picks it.
- :func:`slide_scores`: mmseg's ``slide_inference``: windows of ``crop_size`` every ``stride``
  (the last window of a row or column moved back to end at the border), each window's scores
  resized to the window, summed and divided by how many windows cover each pixel.
- :func:`flip_average`: the scores of the image and of its horizontal mirror (mirrored back)
  turned into class probabilities and averaged, as mmseg's test-time flip does.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from app.core.manifest import SegInference

RunFn = Callable[[np.ndarray], np.ndarray]
"""A prepared (1, 3, h, w) tensor -> the model's raw output for it."""


def _aligned_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = np.arange(n_out) * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    lo = np.minimum(np.floor(pos).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def resize_aligned(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float (h, w) plane to ``size`` with corners aligned."""
    lo, hi, w = _aligned_taps(plane.shape[0], size[0])
    rows = plane[lo] * (1 - w)[:, None] + plane[hi] * w[:, None]
    lo, hi, w = _aligned_taps(plane.shape[1], size[1])
    return np.ascontiguousarray(rows[:, lo] * (1 - w) + rows[:, hi] * w, dtype=np.float32)


def resize_nearest(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PyTorch's ``nearest``: output pixel i takes input ``floor(i * n_in / n_out)`` (OpenCV's
    INTER_NEAREST rounds differently on some rows)."""
    rows = np.minimum((np.arange(size[0]) * (plane.shape[0] / size[0])).astype(np.int64),
                      plane.shape[0] - 1)  # fmt: skip
    cols = np.minimum((np.arange(size[1]) * (plane.shape[1] / size[1])).astype(np.int64),
                      plane.shape[1] - 1)  # fmt: skip
    return np.ascontiguousarray(plane[rows[:, None], cols[None, :]])


def resize_scores(plane: np.ndarray, size: tuple[int, int], how: SegInference) -> np.ndarray:
    """One float32 score plane resized to ``size`` (h, w) the way the manifest says."""
    if plane.shape[:2] == tuple(size):
        return plane
    if how.interpolation == "nearest":
        return resize_nearest(plane, size)
    if how.align_corners:
        return resize_aligned(plane, size)
    return cv2.resize(plane, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def windows(size: tuple[int, int], crop: tuple[int, int], stride: tuple[int, int]):
    """The (y1, y2, x1, x2) windows mmseg's slide inference visits on an (H, W) input."""
    (H, W), (hc, wc), (hs, ws) = size, crop, stride
    rows = max(H - hc + hs - 1, 0) // hs + 1
    cols = max(W - wc + ws - 1, 0) // ws + 1
    for r in range(rows):
        for c in range(cols):
            y2, x2 = min(r * hs + hc, H), min(c * ws + wc, W)
            yield max(y2 - hc, 0), y2, max(x2 - wc, 0), x2


def slide_scores(tensor: np.ndarray, how: SegInference, run: RunFn) -> np.ndarray:
    """(1, C, H, W) float32 scores of a prepared tensor by overlapping windows, averaged."""
    H, W = tensor.shape[2:]
    total = None
    count = np.zeros((H, W), np.float32)
    for y1, y2, x1, x2 in windows((H, W), how.crop_size, how.stride):
        out = np.asarray(run(np.ascontiguousarray(tensor[:, :, y1:y2, x1:x2])))
        scores = out[0] if out.ndim == 4 else out
        if total is None:
            total = np.zeros((len(scores), H, W), np.float32)
        for c, plane in enumerate(scores):
            total[c, y1:y2, x1:x2] += resize_scores(
                plane.astype(np.float32), (y2 - y1, x2 - x1), how
            )
        count[y1:y2, x1:x2] += 1
    return (total / count)[None]


def _probabilities(planes: list[np.ndarray], output_kind: str) -> np.ndarray:
    p = np.stack(planes)
    if output_kind == "probabilities":
        return p
    p = np.exp(p - p.max(axis=0, keepdims=True))
    return p / p.sum(axis=0, keepdims=True)


def flip_average(
    planes: list[np.ndarray], mirrored: list[np.ndarray], output_kind: str
) -> list[np.ndarray]:
    """Average class probabilities of the image's score planes and the mirrored image's planes
    (already at the source size; mirrored back here)."""
    back = [np.ascontiguousarray(p[:, ::-1]) for p in mirrored]
    mean = (_probabilities(planes, output_kind) + _probabilities(back, output_kind)) / 2
    return list(mean.astype(np.float32))
