"""Connected parts of the crown surface and which of them to keep.

A model that is unsure around the crown leaves small floating pieces (a speck of occupancy in
the antagonist, a sliver along a neighbour). A crown is one closed piece, so the manifest's
``postprocess`` keeps the largest part, or the part over the preparation, and drops parts below
a volume; the run report lists every part removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from app.core.arrays import sorted_unique


@dataclass(frozen=True)
class Part:
    """One connected part: its faces (indices into the mesh's faces), volume and centroid."""

    faces: np.ndarray
    volume: float
    centroid: np.ndarray


def split_parts(vertices: np.ndarray, faces: np.ndarray) -> list[Part]:
    """The mesh's vertex-connected parts, largest volume first.

    Volumes are the signed volumes of each closed part (marching cubes on a padded grid gives
    closed parts; an open part's volume is only indicative). The centroid is the mean of the
    part's vertices.
    """
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(faces) == 0:
        return []
    n = len(vertices)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    face_label = labels[faces[:, 0]]
    tri = np.asarray(vertices, dtype=np.float64)[faces]
    per_face = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6.0
    parts = []
    for label in np.unique(face_label):
        sel = np.flatnonzero(face_label == label)
        used = sorted_unique(faces[sel])
        parts.append(
            Part(sel, float(abs(per_face[sel].sum())), np.asarray(vertices)[used].mean(axis=0))
        )
    parts.sort(key=lambda p: -p.volume)
    return parts


def choose_parts(
    parts: list[Part],
    keep: str,
    min_volume: float,
    axis_point: np.ndarray,
    axis_direction: np.ndarray,
) -> tuple[list[Part], list[Part]]:
    """(kept, removed) parts under the manifest's rule.

    ``largest``: the largest part alone. ``over_preparation``: of the parts of at least
    ``min_volume``, the one whose centroid lies closest to the preparation's axis (the line
    through ``axis_point`` along ``axis_direction``), falling back to the largest when none is
    that big. ``all``: every part of at least ``min_volume``. Volumes and points share one unit.
    """
    if not parts:
        return [], []
    big = [p for p in parts if p.volume >= min_volume]
    if keep == "largest":
        kept = [parts[0]]
    elif keep == "over_preparation":
        if big:
            d = np.asarray(axis_direction, dtype=np.float64)
            d = d / np.linalg.norm(d)

            def off_axis(p: Part) -> float:
                r = p.centroid - axis_point
                return float(np.linalg.norm(r - d * (r @ d)))

            kept = [min(big, key=off_axis)]
        else:
            kept = [parts[0]]
    elif keep == "all":
        kept = big or [parts[0]]
    else:
        raise ValueError(f"unknown postprocess keep rule {keep!r}")
    ids = {id(p) for p in kept}
    return kept, [p for p in parts if id(p) not in ids]


def submesh(
    vertices: np.ndarray, faces: np.ndarray, parts: list[Part]
) -> tuple[np.ndarray, np.ndarray]:
    """The vertices and faces of ``parts`` alone, re-indexed."""
    sel = np.concatenate([p.faces for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    f = np.asarray(faces)[np.sort(sel)]
    used = sorted_unique(f)
    remap = np.full(len(vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return np.asarray(vertices)[used], remap[f]
