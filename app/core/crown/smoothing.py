"""Mesh smoothing after marching cubes (the handover's C++ port skipped it: stair-stepped crowns).

``laplacian`` uses trimesh's volume-preserving Laplacian filter; ``taubin`` alternates a
shrinking and an inflating step, so the volume stays close without a constraint.
"""

from __future__ import annotations

import numpy as np

TAUBIN_LAMBDA = 0.5
TAUBIN_NU = 0.53
LAPLACIAN_LAMBDA = 0.5


def smooth(vertices: np.ndarray, faces: np.ndarray, method: str, iterations: int) -> np.ndarray:
    """Smoothed copy of ``vertices`` (same topology). ``none`` or 0 iterations: unchanged."""
    if method not in ("none", "laplacian", "taubin"):
        raise ValueError(f"unknown smoothing method {method!r}")
    if method == "none" or iterations <= 0 or len(faces) == 0:
        return np.array(vertices, dtype=np.float64, copy=True)
    import trimesh
    import trimesh.smoothing

    mesh = trimesh.Trimesh(np.array(vertices, dtype=np.float64), faces, process=False)
    if method == "laplacian":
        trimesh.smoothing.filter_laplacian(
            mesh, lamb=LAPLACIAN_LAMBDA, iterations=iterations, volume_constraint=True
        )
    else:
        trimesh.smoothing.filter_taubin(
            mesh, lamb=TAUBIN_LAMBDA, nu=TAUBIN_NU, iterations=iterations
        )
    return np.asarray(mesh.vertices, dtype=np.float64)
