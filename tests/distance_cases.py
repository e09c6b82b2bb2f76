"""A synthetic crown between two neighbours under an antagonist, with gaps known by design."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

MESIAL = np.array([1.0, 0.0, 0.0])
OCCLUSAL = np.array([0.0, 0.0, 1.0])
HALF = 4.0
"""The crown is a box 8 x 8 x 6 mm centred on the origin: its ends at x = ±4, top at z = 3."""
TOP = 3.0


@dataclass
class GapCase:
    crown: trimesh.Trimesh
    scan: trimesh.Trimesh
    distal_gap: float
    mesial_gap: float
    occlusal_gap: float


def _box(lo, hi, edge: float) -> trimesh.Trimesh:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    box = trimesh.creation.box(extents=hi - lo)
    box.apply_translation((lo + hi) / 2)
    v, f = trimesh.remesh.subdivide_to_size(box.vertices, box.faces, max_edge=edge)
    return trimesh.Trimesh(v, f, process=False)


def gap_case(
    distal_gap: float = 0.3, mesial_gap: float = 0.05, occlusal_gap: float = 1.5
) -> GapCase:
    """Crown box, a preparation stump inside it, neighbours at -x / +x and an antagonist above.

    Each gap is the distance between facing planes: the crown's -x end and the distal
    neighbour, its +x end and the mesial neighbour, its top and the antagonist (negative: the
    boxes overlap by that much).
    """
    crown = _box((-HALF, -HALF, -3.0), (HALF, HALF, TOP), 0.5)
    prep = _box((-2.0, -2.0, -7.0), (2.0, 2.0, 1.5), 1.0)
    distal = _box((-HALF - distal_gap - 6.0, -HALF, -7.0), (-HALF - distal_gap, HALF, 2.5), 1.0)
    mesial = _box((HALF + mesial_gap, -HALF, -7.0), (HALF + mesial_gap + 6.0, HALF, 2.5), 1.0)
    antagonist = _box((-6.0, -6.0, TOP + occlusal_gap), (6.0, 6.0, TOP + occlusal_gap + 4.0), 1.0)
    scan = trimesh.util.concatenate([prep, distal, mesial, antagonist])
    return GapCase(crown, scan, distal_gap, mesial_gap, occlusal_gap)


def facing(crown: trimesh.Trimesh) -> dict[str, np.ndarray]:
    """Crown vertices well inside each facing side (off the box's edges and the base)."""
    v = crown.vertices
    mid = (np.abs(v[:, 1]) < HALF - 1.0) & (v[:, 2] > -1.0) & (v[:, 2] < TOP - 1.0)
    top = (np.abs(v[:, 0]) < HALF - 1.0) & (np.abs(v[:, 1]) < HALF - 1.0)
    return {
        "distal": np.flatnonzero(mid & np.isclose(v[:, 0], -HALF)),
        "mesial": np.flatnonzero(mid & np.isclose(v[:, 0], HALF)),
        "top": np.flatnonzero(top & np.isclose(v[:, 2], TOP)),
        "base": np.flatnonzero(top & np.isclose(v[:, 2], -3.0)),
    }
