"""Triangle–cube overlap: which cells of a grid a triangle touches (IF-Net's surface cells).

A triangle and an axis-aligned cube are disjoint exactly when one of 13 axes separates them
(separating-axis theorem): the cube's three face normals, the triangle's normal, and the nine
cross products of a cube edge direction with a triangle edge. Cubes are closed, so a triangle
touching a cube face or edge overlaps it.

:func:`overlap_cells` tests every candidate (triangle, cell) pair in vectorised numpy;
:func:`overlap_cells_reference` loops over triangles and cells in plain Python with the same
arithmetic, so the two agree bit for bit.
"""

from __future__ import annotations

import numpy as np

from app.core.crown.voxelize import Grid, index_range, pairs

_UNIT = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _separating_axes(tri: np.ndarray) -> list[np.ndarray]:
    """The 13 candidate axes for each triangle, each (T, 3): cube normals, triangle normal,
    cube edge x triangle edge."""
    edges = [tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 1], tri[:, 0] - tri[:, 2]]
    axes = [np.broadcast_to(np.array(u), tri[:, 0].shape) for u in _UNIT]
    axes.append(np.cross(edges[0], edges[1]))
    axes += [np.cross(np.array(u), e) for u in _UNIT for e in edges]
    return axes


def _separated(v: tuple, axis: np.ndarray, half: float):
    """Whether ``axis`` separates the triangle ``v`` (vertices relative to the cube centre)
    from the cube of half side ``half``; works on arrays and on Python floats alike."""
    a0, a1, a2 = axis
    p = [a0 * q[0] + a1 * q[1] + a2 * q[2] for q in v]
    r = half * (abs(a0) + abs(a1) + abs(a2))
    if isinstance(p[0], np.ndarray):
        return (np.minimum(np.minimum(p[0], p[1]), p[2]) > r) | (
            np.maximum(np.maximum(p[0], p[1]), p[2]) < -r
        )
    return min(p) > r or max(p) < -r


def overlap_cells(tri: np.ndarray, grid: Grid) -> np.ndarray:
    """Bool (R, R, R) [x, y, z]: cells whose closed cube overlaps some triangle of ``tri``."""
    n = grid.size
    half = grid.h / 2
    out = np.zeros(n**3, dtype=bool)
    if len(tri) == 0:
        return out.reshape((n,) * 3)
    i0, i1 = index_range(tri.min(axis=1) - half, tri.max(axis=1) + half, grid)
    span = np.maximum(i1 - i0 + 1, 0)
    counts = span[:, 0] * span[:, 1] * span[:, 2]
    axes = _separating_axes(tri)
    g = grid.axis
    for t, local in pairs(counts):
        nyz = span[t, 1] * span[t, 2]
        ix = i0[t, 0] + local // nyz
        iy = i0[t, 1] + (local % nyz) // span[t, 2]
        iz = i0[t, 2] + local % span[t, 2]
        centre = (g[ix], g[iy], g[iz])
        v = tuple(tuple(tri[t, k, d] - centre[d] for d in range(3)) for k in range(3))
        hit = np.ones(len(t), dtype=bool)
        for axis in axes:
            a = axis[t]
            hit &= ~_separated(v, (a[:, 0], a[:, 1], a[:, 2]), half)
        out[(ix[hit] * n + iy[hit]) * n + iz[hit]] = True
    return out.reshape((n,) * 3)


def overlap_cells_reference(tri: np.ndarray, grid: Grid) -> np.ndarray:
    """Plain version of :func:`overlap_cells`: per triangle, per nearby cell, 13 scalar tests."""
    n = grid.size
    half = grid.h / 2
    g = [float(x) for x in grid.axis]
    out = np.zeros((n,) * 3, dtype=bool)
    axes = _separating_axes(tri)
    for t in range(len(tri)):
        corners = [[float(x) for x in tri[t, k]] for k in range(3)]
        near = []
        for d in range(3):
            lo = min(c[d] for c in corners) - half - grid.h
            hi = max(c[d] for c in corners) + half + grid.h
            near.append([i for i in range(n) if lo <= g[i] <= hi])
        tri_axes = [tuple(float(x) for x in axis[t]) for axis in axes]
        for i in near[0]:
            for j in near[1]:
                for k in near[2]:
                    centre = (g[i], g[j], g[k])
                    v = tuple(tuple(c[d] - centre[d] for d in range(3)) for c in corners)
                    if not any(_separated(v, a, half) for a in tri_axes):
                        out[i, j, k] = True
    return out
