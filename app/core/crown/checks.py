"""Plausibility checks on every crown, so a wrong frame or a confused model is never silent.

A crown far too big, cut by the frame, in several pieces, or floating above the preparation
is reported with what the technician should check (the frame's centre or orientation, or the
model). The thresholds come from the manifest's ``checks`` block; the defaults accept molars,
premolars and incisors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from app.core.crown.frame import AXES, FrameTransform
from app.core.manifest import Checks, Frame

AXIS_NAMES = ("mesio-distal", "bucco-lingual", "occlusal")
BASE_BAND_MM = 1.0
"""The crown's base: its vertices within this height of its lowest point along the occlusal."""


@dataclass
class CheckResult:
    """What the checks measured, and a warning for each one that failed."""

    components_before: int
    components_after: int
    removed_volume_mm3: float
    watertight: bool
    volume_mm3: float
    extents_mm: tuple[float, float, float]
    clipped_faces: list[str]
    base_gap_mm: float | None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "components_before": self.components_before,
            "components_after": self.components_after,
            "removed_volume_mm3": round(self.removed_volume_mm3, 3),
            "watertight": self.watertight,
            "volume_mm3": round(self.volume_mm3, 3),
            "extents_mm": {
                n: round(e, 3) for n, e in zip(AXIS_NAMES, self.extents_mm, strict=True)
            },
            "clipped_faces": list(self.clipped_faces),
            "base_gap_mm": None if self.base_gap_mm is None else round(self.base_gap_mm, 3),
            "warnings": list(self.warnings),
        }


def model_axis_index(frame: Frame) -> tuple[int, int, int]:
    """Unit-cube axis indices of the (mesio-distal, bucco-lingual, occlusal) directions."""
    m = int(np.flatnonzero(AXES[frame.mesial])[0])
    o = int(np.flatnonzero(AXES[frame.occlusal])[0])
    return m, 3 - m - o, o


def clipped_faces(values: np.ndarray, level: float, frame: Frame) -> list[str]:
    """Which faces of the frame's cube the crown touches: any grid value above ``level`` on
    that face means the crown went on beyond it and was cut off there."""
    inside = values > level
    occlusal, mesial = np.array(AXES[frame.occlusal]), np.array(AXES[frame.mesial])
    names: list[str] = []
    for axis in range(3):
        for end, sign in ((0, -1), (-1, 1)):
            if not np.take(inside, end, axis=axis).any():
                continue
            outward = np.zeros(3, dtype=int)
            outward[axis] = sign
            if (outward == occlusal).all():
                label = "occlusal (top)"
            elif (outward == -occlusal).all():
                label = "cervical (bottom)"
            elif abs(int(outward @ mesial)) == 1:
                label = "mesial or distal"
            else:
                label = "buccal or lingual"
            if label not in names:
                names.append(label)
    return names


def base_gap(
    crown_mm: np.ndarray, scan_mm: np.ndarray, transform: FrameTransform, frame: Frame
) -> float | None:
    """Median distance (mm) from the crown's base vertices to the nearest scan vertex: a crown
    made for the preparation sits on it. None for an empty crown or scan."""
    if len(crown_mm) == 0 or len(scan_mm) == 0:
        return None
    occlusal = transform.direction_to_mm(np.asarray(AXES[frame.occlusal], dtype=np.float64))
    height = crown_mm @ occlusal
    base = crown_mm[height <= height.min() + BASE_BAND_MM]
    dist, _ = cKDTree(scan_mm).query(base, k=1)
    return float(np.median(dist))


def check_crown(
    crown_mm: np.ndarray,
    volume_mm3: float,
    watertight: bool,
    transform: FrameTransform,
    frame: Frame,
    limits: Checks,
    *,
    components: tuple[int, int],
    removed_volume_mm3: float,
    clipped: list[str],
    gap_mm: float | None,
) -> CheckResult:
    """Measure the crown in its case frame and compare with ``limits``."""
    unit = transform.to_unit(crown_mm) / transform.scale
    span = unit.max(axis=0) - unit.min(axis=0) if len(unit) else np.zeros(3)
    extents = tuple(float(span[i]) for i in model_axis_index(frame))
    result = CheckResult(
        components_before=components[0],
        components_after=components[1],
        removed_volume_mm3=removed_volume_mm3,
        watertight=watertight,
        volume_mm3=volume_mm3,
        extents_mm=extents,  # type: ignore[arg-type]
        clipped_faces=clipped,
        base_gap_mm=gap_mm,
    )
    w = result.warnings
    frame_hint = "check the frame centre is on the preparation and the occlusal direction"
    if removed_volume_mm3 > limits.max_removed_share * max(volume_mm3, 1e-9):
        w.append(
            f"the model returned {components[0]} separate parts; {components[0] - components[1]}"
            f" removed ({removed_volume_mm3:.0f} mm³ against {volume_mm3:.0f} mm³ kept): "
            f"{frame_hint}"
        )
    if not watertight:
        w.append("the crown is not closed (not watertight): check it before export")
    for name, value, lo, hi in zip(
        AXIS_NAMES, extents, limits.extent_min_mm, limits.extent_max_mm, strict=True
    ):
        if not lo <= value <= hi:
            w.append(
                f"the crown measures {value:.1f} mm {name} (expected {lo:g}–{hi:g} mm): "
                f"{frame_hint}, or whether the model suits this tooth"
            )
    if not limits.volume_min_mm3 <= volume_mm3 <= limits.volume_max_mm3:
        w.append(
            f"the crown's volume is {volume_mm3:.0f} mm³ (expected {limits.volume_min_mm3:g}–"
            f"{limits.volume_max_mm3:g} mm³): {frame_hint}"
        )
    if clipped:
        w.append(
            f"the crown is cut by the frame's {', '.join(clipped)} face"
            f"{'s' if len(clipped) > 1 else ''}: move the frame centre that way or check the "
            "orientation"
        )
    if gap_mm is not None and gap_mm > limits.max_base_gap_mm:
        w.append(
            f"the crown's base is {gap_mm:.1f} mm from the scan (at most "
            f"{limits.max_base_gap_mm:g} mm expected): it does not sit on the preparation; "
            f"{frame_hint}"
        )
    return result
