"""Distances from a crown to the scan around it: proximal contacts and occlusal clearance.

A case's scan holds the preparation, its neighbours and often the antagonist in one mesh. The
crown's inner surface sits on the preparation, so a plain "distance to the scan" would read
as contact everywhere underneath. The scan is therefore split in the case frame (centre,
mesial and occlusal axes, in scan mm):

- **antagonist**: connected parts of the scan whose centroid lies beyond the crown's occlusal
  top (the other jaw is a separate piece of a merged scan);
- **neighbours**: the rest, restricted to triangles beyond the crown's mesial and distal ends
  less ``inset_mm`` (so a slight overlap still counts) and above its base plus ``base_mm``
  (the preparation and the gingiva under the crown are left out). A separate part of the
  scan that lies within the crown's ends (plus ``prep_slack_mm``) along the arch is the
  preparation (teeth segmented apart) and is left out whole.

Distances are signed by the facing triangle's normal: negative where the crown point lies
behind the neighbour's or antagonist's surface (an overlap). Distances beyond ``max_mm`` are
not resolved and read as ``inf``. Qt-free; scipy is loaded on first use (the settings read
the limits at start-up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.core.arrays import sorted_unique

NO_BAND = -1


@dataclass(frozen=True)
class DistanceLimits:
    """The technician's limits, in mm: a proximal contact is a distance in
    ``[0, contact_max_mm]``; occlusal clearance should be at least ``clearance_min_mm``."""

    contact_max_mm: float = 0.1
    clearance_min_mm: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 < self.contact_max_mm < 5.0 and 0.0 < self.clearance_min_mm < 5.0):
            raise ValueError(f"distance limits must lie in (0, 5) mm, got {self}")


@dataclass(frozen=True)
class Band:
    """One colour band of the map: distances in ``[low, high)`` mm, its legend text and RGB."""

    low: float
    high: float
    label: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class CrownDistances:
    """Signed distances (mm, ``inf`` beyond the cut-off) from each crown vertex to the
    neighbours (``proximal``) and to the antagonist (``occlusal``)."""

    proximal: np.ndarray
    occlusal: np.ndarray


def _triangles(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    return np.asarray(vertices, dtype=np.float64)[np.asarray(faces, dtype=np.int64).reshape(-1, 3)]


def _face_normals(tri: np.ndarray) -> np.ndarray:
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, length, out=np.zeros_like(n), where=length > 0)


def _closest_on_triangles(points: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """The closest point of triangle ``tri[i]`` to ``points[i]`` (pairwise)."""
    from trimesh.triangles import closest_point

    return closest_point(tri, points)


def _signed(points: np.ndarray, tri: np.ndarray, normals: np.ndarray) -> np.ndarray:
    q = _closest_on_triangles(points, tri)
    d = np.linalg.norm(points - q, axis=1)
    behind = np.einsum("ij,ij->i", points - q, normals) < 0.0
    return np.where(behind, -d, d)


def signed_distances_reference(
    points: np.ndarray, vertices: np.ndarray, faces: np.ndarray
) -> np.ndarray:
    """Every point against every triangle: the plain reference :func:`signed_distances` is
    tested against (small meshes only)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    tri = _triangles(vertices, faces)
    out = np.full(len(points), np.inf)
    if len(tri) == 0:
        return out
    normals = _face_normals(tri)
    for i, p in enumerate(points):
        s = _signed(np.repeat(p[None], len(tri), axis=0), tri, normals)
        out[i] = s[np.argmin(np.abs(s))]
    return out


def signed_distances(
    points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, max_mm: float
) -> np.ndarray:
    """Signed distance from each point to the nearest triangle, exact within ``max_mm``.

    Candidates come from a KD-tree on triangle centroids: the nearest scan vertex bounds the
    distance from above, and a triangle can only be nearer when its centroid lies within that
    bound plus its circumradius (about the centroid), so no nearer triangle is missed. The
    sign is that of the nearest triangle's normal side; points with no triangle within
    ``max_mm`` get ``inf``.
    """
    from scipy.spatial import cKDTree

    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    tri = _triangles(vertices, faces)
    out = np.full(len(points), np.inf)
    if len(tri) == 0 or len(points) == 0:
        return out
    centroids = tri.mean(axis=1)
    radius = np.linalg.norm(tri - centroids[:, None], axis=2).max(axis=1)
    tree = cKDTree(centroids)
    lower, _ = tree.query(points)
    todo = np.flatnonzero(lower - radius.max() <= max_mm)
    if len(todo) == 0:
        return out
    used = np.asarray(vertices, dtype=np.float64)[sorted_unique(np.asarray(faces))]
    bound = np.minimum(cKDTree(used).query(points[todo])[0], max_mm)
    pairs = tree.query_ball_point(points[todo], bound + radius.max())
    counts = np.fromiter((len(p) for p in pairs), dtype=np.int64, count=len(todo))
    pi = np.repeat(todo, counts)
    ti = np.fromiter((t for p in pairs for t in p), dtype=np.int64, count=int(counts.sum()))
    keep = (
        np.linalg.norm(points[pi] - centroids[ti], axis=1) <= np.repeat(bound, counts) + radius[ti]
    )
    pi, ti = pi[keep], ti[keep]
    s = _signed(points[pi], tri[ti], _face_normals(tri)[ti])
    order = np.lexsort((np.abs(s), pi))
    first = order[np.r_[True, pi[order][1:] != pi[order][:-1]]]
    near = np.abs(s[first]) <= max_mm
    out[pi[first][near]] = s[first][near]
    return out


def split_scan(
    crown_vertices: np.ndarray,
    scan_vertices: np.ndarray,
    scan_faces: np.ndarray,
    mesial: np.ndarray,
    occlusal: np.ndarray,
    inset_mm: float = 0.5,
    base_mm: float = 1.0,
    prep_slack_mm: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(neighbour faces, antagonist faces) of the scan, as indices into ``scan_faces``.

    See the module notes for the rule. ``mesial`` and ``occlusal`` are the case frame's axes.
    """
    from app.core.crown.components import split_parts

    faces = np.asarray(scan_faces, dtype=np.int64).reshape(-1, 3)
    m = np.asarray(mesial, dtype=np.float64) / np.linalg.norm(mesial)
    o = np.asarray(occlusal, dtype=np.float64) / np.linalg.norm(occlusal)
    crown = np.asarray(crown_vertices, dtype=np.float64)
    top = float((crown @ o).max())
    lo, hi = float((crown @ m).min()), float((crown @ m).max())
    along_v = np.asarray(scan_vertices, dtype=np.float64) @ m
    antagonist = np.zeros(len(faces), dtype=bool)
    preparation = np.zeros(len(faces), dtype=bool)
    for part in split_parts(scan_vertices, faces):
        span = along_v[faces[part.faces]]
        if float(part.centroid @ o) > top:
            antagonist[part.faces] = True
        elif span.min() > lo - prep_slack_mm and span.max() < hi + prep_slack_mm:
            preparation[part.faces] = True
    centroids = _triangles(scan_vertices, faces).mean(axis=1)
    along, up = centroids @ m, centroids @ o
    beyond_ends = (along < lo + inset_mm) | (along > hi - inset_mm)
    above_base = up > float((crown @ o).min()) + base_mm
    neighbours = ~antagonist & ~preparation & beyond_ends & above_base
    return np.flatnonzero(neighbours), np.flatnonzero(antagonist)


def crown_distances(
    crown_vertices: np.ndarray,
    scan_vertices: np.ndarray,
    scan_faces: np.ndarray,
    mesial: np.ndarray,
    occlusal: np.ndarray,
    max_mm: float = 3.0,
) -> CrownDistances:
    """Signed distances from every crown vertex to the neighbours and to the antagonist."""
    faces = np.asarray(scan_faces, dtype=np.int64).reshape(-1, 3)
    near, opposite = split_scan(crown_vertices, scan_vertices, faces, mesial, occlusal)
    return CrownDistances(
        proximal=signed_distances(crown_vertices, scan_vertices, faces[near], max_mm),
        occlusal=signed_distances(crown_vertices, scan_vertices, faces[opposite], max_mm),
    )


def proximal_bands(limits: DistanceLimits) -> list[Band]:
    """Legend of the proximal map: overlap, contact within the limit, open up to 1 mm more."""
    c = limits.contact_max_mm
    return [
        Band(-np.inf, 0.0, "overlap (< 0 mm)", (220, 40, 40)),
        Band(0.0, c, f"contact (0–{c:g} mm)", (60, 190, 70)),
        Band(c, c + 1.0, f"open ({c:g}–{c + 1.0:g} mm)", (70, 140, 230)),
    ]


def occlusal_bands(limits: DistanceLimits) -> list[Band]:
    """Legend of the occlusal map: overlap, less than the clearance, enough clearance (shown
    up to 2 mm more)."""
    k = limits.clearance_min_mm
    return [
        Band(-np.inf, 0.0, "overlap (< 0 mm)", (220, 40, 40)),
        Band(0.0, k, f"too close (0–{k:g} mm)", (245, 160, 40)),
        Band(k, k + 2.0, f"clearance ({k:g}–{k + 2.0:g} mm)", (60, 190, 70)),
    ]


def band_index(values: np.ndarray, bands: list[Band]) -> np.ndarray:
    """The band each distance falls in (``NO_BAND`` beyond the last band or unresolved)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.full(values.shape, NO_BAND, dtype=np.int64)
    for i, b in enumerate(bands):
        out[(values >= b.low) & (values < b.high)] = i
    return out


def band_colors(values: np.ndarray, bands: list[Band], base: tuple[int, int, int]) -> np.ndarray:
    """(N, 3) uint8 colours of the map: each band's colour, ``base`` outside every band."""
    table = np.array([b.color for b in bands] + [base], dtype=np.uint8)  # NO_BAND: the last
    return table[band_index(values, bands)]
