"""Reduced inference scale: run the model on the image scaled down, bring the scores back.

As mmseg's test pipeline does with ``Resize(keep_ratio=True)``: the uint8 image is resized
bilinearly (``cv2.INTER_LINEAR``, each side rounded as mmcv rounds it), the model runs at that
size, and the decoder resizes the scores (bilinear, half-pixel centres) back to the image the
pixels came from. The factor is set by the full frame (its long side becomes ``long_side``
pixels) and applied unchanged to an ROI crop, so the network sees the stone model at the same
scale whichever path runs.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from app.core.manifest import SegmentationModel
from app.core.segment.preprocess import Prepared, preprocess


def scale_factor(size: tuple[int, int], long_side: int | None) -> float:
    """The factor that brings ``size``'s longer side to ``long_side`` (1.0 when not smaller)."""
    if long_side is None:
        return 1.0
    return min(1.0, long_side / float(max(size)))


def resize_by(image: np.ndarray, factor: float) -> np.ndarray:
    """``image`` scaled by ``factor`` (sides rounded half up, at least 1 pixel)."""
    if factor >= 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, int(w * factor + 0.5)), max(1, int(h * factor + 0.5)))
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def scaled(image: np.ndarray, long_side: int | None) -> np.ndarray:
    """``image`` with its longer side at most ``long_side`` pixels."""
    return resize_by(image, scale_factor(image.shape[:2], long_side))


def preprocess_scaled(image_rgb: np.ndarray, model: SegmentationModel, factor: float) -> Prepared:
    """Preprocess ``image_rgb`` scaled by ``factor`` for ``model``; the result maps back to
    ``image_rgb``'s own size, so decoding resizes the scores up to it."""
    prepared = preprocess(resize_by(image_rgb, factor), model)
    return replace(prepared, source_size=(int(image_rgb.shape[0]), int(image_rgb.shape[1])))
