"""Point-cloud voxel input (IF-Net's ``ShapeNet300Points`` / ``ShapeNet3000Points``).

N points are sampled uniformly over the scan's surface (triangle chosen with probability
proportional to its area, then a uniform point in it), and each marks the grid cell whose
centre is nearest (``app.core.crown.voxelize`` placement; IF-Net uses ``points``). The sampling
is seeded, so a case gives the same input every run; IF-Net samples afresh each time, so its
own runs differ from each other as much as from the app's.

:func:`point_cloud_voxels` finds the nearest centre per axis by rounding;
:func:`point_cloud_voxels_reference` asks a KD-tree over all cell centres.
"""

from __future__ import annotations

import numpy as np

from app.core.crown.voxelize import Grid, Placement


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0
) -> np.ndarray:
    """``count`` points (count, 3) uniform over the mesh surface, reproducible by ``seed``."""
    tri = np.asarray(vertices, np.float64)[np.asarray(faces, np.int64)]
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if not np.isfinite(area).all() or area.sum() <= 0:
        raise ValueError("point-cloud input needs a mesh with a finite, non-zero surface area")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tri), size=int(count), p=area / area.sum())
    u, v = rng.random(int(count)), rng.random(int(count))
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    t = tri[pick]
    return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])


def point_cloud_voxels(
    points: np.ndarray, resolution: int, placement: Placement = "points"
) -> np.ndarray:
    """Bool (R, R, R) [x, y, z]: the cells nearest to each point (points outside the cube
    mark the nearest border cell, as a nearest-neighbour query does)."""
    grid = Grid.of(resolution, placement)
    idx = np.rint((np.asarray(points, np.float64) - grid.axis[0]) / grid.h).astype(np.int64)
    idx = np.clip(idx, 0, grid.size - 1)
    out = np.zeros((grid.size,) * 3, dtype=bool)
    out[idx[:, 0], idx[:, 1], idx[:, 2]] = True
    return out


def point_cloud_voxels_reference(
    points: np.ndarray, resolution: int, placement: Placement = "points"
) -> np.ndarray:
    """Plain version of :func:`point_cloud_voxels`: a KD-tree over every cell centre."""
    from scipy.spatial import cKDTree

    g = Grid.of(resolution, placement).axis
    centres = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    _, nearest = cKDTree(centres).query(np.asarray(points, np.float64))
    out = np.zeros(len(centres), dtype=bool)
    out[nearest] = True
    return out.reshape((len(g),) * 3)
