"""Colour overlay of a label image on its source image, for people to check a result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np


def _visible_lut(n: int, visible: Sequence[bool] | None) -> np.ndarray:
    if visible is None:
        lut = np.ones(n, bool)
        lut[0] = False
        return lut
    if len(visible) != n:
        raise ValueError(f"visible has {len(visible)} entries for {n} classes")
    return np.asarray(visible, bool)


def overlay(
    image_rgb: np.ndarray,
    labels: np.ndarray,
    palette: Sequence[tuple[int, int, int]],
    *,
    alpha: float = 0.5,
    mode: Literal["fill", "contour"] = "fill",
    visible: Sequence[bool] | None = None,
    thickness: int = 2,
) -> np.ndarray:
    """Draw the classes of ``labels`` over ``image_rgb`` (both (H, W); result uint8 (H, W, 3) RGB).

    ``fill`` blends each visible class's colour with weight ``alpha``; ``contour`` draws the
    inner edge (``thickness`` px, from a morphological erosion) of each visible class in its
    colour, blended with ``alpha`` as well (``alpha=1`` for solid lines). ``visible`` has one
    flag per class; ``None`` shows every class except class 0, the background.
    """
    image_rgb = np.asarray(image_rgb)
    labels = np.asarray(labels)
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"image must be uint8 (H, W, 3), got {image_rgb.shape} {image_rgb.dtype}")
    if labels.shape != image_rgb.shape[:2]:
        raise ValueError(f"labels {labels.shape} do not match image {image_rgb.shape[:2]}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be within 0..1, got {alpha}")
    n = len(palette)
    labels = labels.astype(np.uint8, copy=False)
    if labels.size and int(labels.max()) >= n:
        raise ValueError(f"label {int(labels.max())} has no palette colour ({n} given)")
    shown = np.zeros(256, np.uint8)
    shown[:n] = _visible_lut(n, visible)
    table = np.zeros((256, 1, 3), np.uint8)
    table[:n, 0] = np.asarray(palette, np.uint8).reshape(n, 3)
    if mode == "fill":
        draw = cv2.LUT(labels, shown)
    elif mode == "contour":
        draw = np.zeros(labels.shape, np.uint8)
        kernel = np.ones((3, 3), np.uint8)
        for c in np.flatnonzero(shown):
            inside = cv2.compare(labels, int(c), cv2.CMP_EQ)
            if not cv2.countNonZero(inside):
                continue
            eroded = cv2.erode(
                inside, kernel, iterations=max(1, thickness), borderType=cv2.BORDER_REPLICATE
            )
            cv2.bitwise_or(draw, cv2.subtract(inside, eroded), dst=draw)
    else:
        raise ValueError(f"mode must be 'fill' or 'contour', got {mode!r}")
    out = image_rgb.copy()
    if not cv2.countNonZero(draw):
        return out
    painted = cv2.LUT(cv2.merge([labels, labels, labels]), table)
    blended = cv2.addWeighted(image_rgb, 1.0 - alpha, painted, alpha, 0.0)
    cv2.copyTo(blended, draw, out)
    return out


def overlay_reference(
    image_rgb: np.ndarray,
    labels: np.ndarray,
    palette: Sequence[tuple[int, int, int]],
    *,
    alpha: float = 0.5,
    mode: Literal["fill", "contour"] = "fill",
    visible: Sequence[bool] | None = None,
    thickness: int = 2,
) -> np.ndarray:
    """Plain numpy version of :func:`overlay` (boolean masks, float blend), for tests."""
    n = len(palette)
    lut = _visible_lut(n, visible)
    colours = np.asarray(palette, np.float64).reshape(n, 3)
    if mode == "fill":
        draw = lut[labels]
    else:
        draw = np.zeros(labels.shape, bool)
        for c in np.flatnonzero(lut):
            inside = labels == c
            eroded = inside.copy()
            for _ in range(max(1, thickness)):
                p = np.pad(eroded, 1, mode="edge")
                eroded = np.logical_and.reduce(
                    [
                        p[1 + dy : p.shape[0] - 1 + dy, 1 + dx : p.shape[1] - 1 + dx]
                        for dy in (-1, 0, 1)
                        for dx in (-1, 0, 1)
                    ]
                )
            draw |= inside & ~eroded
    out = image_rgb.copy()
    blend = image_rgb[draw] * (1.0 - alpha) + colours[labels[draw]] * alpha
    out[draw] = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    return out
