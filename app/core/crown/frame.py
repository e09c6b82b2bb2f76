"""The map between scan millimetres and the model's unit cube [-0.5, 0.5]^3."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.core.manifest import Frame


@dataclass(frozen=True)
class FrameTransform:
    """``unit = (mm - center) * scale``; ``scale`` is unit-cube lengths per millimetre."""

    center: np.ndarray
    scale: float

    def to_unit(self, points_mm: np.ndarray) -> np.ndarray:
        return (np.asarray(points_mm, dtype=np.float64) - self.center) * self.scale

    def to_mm(self, points_unit: np.ndarray) -> np.ndarray:
        return np.asarray(points_unit, dtype=np.float64) / self.scale + self.center

    @property
    def size_mm(self) -> float:
        """Edge length of the unit cube in millimetres."""
        return 1.0 / self.scale


def bbox_center(vertices_mm: np.ndarray) -> np.ndarray:
    v = np.asarray(vertices_mm, dtype=np.float64).reshape(-1, 3)
    return (v.min(axis=0) + v.max(axis=0)) / 2.0


def make_frame(
    vertices_mm: np.ndarray, frame: Frame, center: Sequence[float] | None = None
) -> FrameTransform:
    """Build the frame a manifest asks for.

    ``fixed``: a cube of ``frame.size_mm``; ``bbox``: IF-Net's normalisation (scale by one over
    the longest bounding-box side). The centre is ``center`` when given, else ``frame.center``
    when it is a point, else the bounding-box centre.
    """
    v = np.asarray(vertices_mm, dtype=np.float64).reshape(-1, 3)
    if v.size == 0 or not np.isfinite(v).all():
        raise ValueError("frame needs at least one finite vertex")
    if center is not None:
        c = np.asarray(center, dtype=np.float64).reshape(3)
    elif frame.center != "bbox":
        c = np.asarray(frame.center, dtype=np.float64).reshape(3)
    else:
        c = bbox_center(v)
    if not np.isfinite(c).all():
        raise ValueError(f"frame centre must be finite, got {c.tolist()}")
    if frame.mode == "fixed":
        scale = 1.0 / float(frame.size_mm)
    else:
        longest = float((v.max(axis=0) - v.min(axis=0)).max())
        if longest <= 0:
            raise ValueError("bbox frame needs a mesh with a non-zero extent")
        scale = 1.0 / longest
    return FrameTransform(center=c, scale=scale)
