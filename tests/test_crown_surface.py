"""Coarse-to-fine helpers against plain scipy/numpy references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import RegularGridInterpolator
from scipy.ndimage import binary_dilation

from app.core.crown import surface


@pytest.mark.parametrize("factor", [2, 3, 5])
def test_upsample_linear_is_trilinear_interpolation(factor: int) -> None:
    rng = np.random.default_rng(factor)
    v = rng.uniform(size=(5, 6, 7)).astype(np.float32)
    up = surface.upsample_linear(v, factor)
    axes = [np.arange(n) for n in v.shape]
    fine = [np.arange((n - 1) * factor + 1) / factor for n in v.shape]
    pts = np.stack(np.meshgrid(*fine, indexing="ij"), axis=-1)
    ref = RegularGridInterpolator(axes, v)(pts)
    assert up.shape == ref.shape
    np.testing.assert_allclose(up, ref, atol=1e-6)
    np.testing.assert_array_equal(up[::factor, ::factor, ::factor], v)


def test_dilate_corners_and_neighbours_match_plain_versions() -> None:
    rng = np.random.default_rng(0)
    cells = rng.uniform(size=(9, 9, 9)) > 0.93
    assert (surface._dilate(cells) == binary_dilation(cells, np.ones((3, 3, 3), bool))).all()
    flat = np.flatnonzero(cells)
    ref = np.zeros((10, 10, 10), bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                ref[dx : dx + 9, dy : dy + 9, dz : dz + 9] |= cells
    corners = np.zeros(1000, bool)
    corners[surface._cell_corners(flat, 10).reshape(-1)] = True
    assert (corners.reshape(10, 10, 10) == ref).all()
    near = np.zeros(9**3, bool)
    near[surface._neighbour_cells(flat, 9)] = True
    ring = binary_dilation(cells, np.ones((3, 3, 3), bool))
    assert not (near.reshape(cells.shape) & ~ring).any()
    assert near.reshape(cells.shape)[ring & ~cells].all()


def _shell_field(p: np.ndarray) -> np.ndarray:
    """A closed ball with a thin curved fin (0.012 thick, under a 33-grid cell) growing out of
    it, plus a separate ball: features the coarse grid only grazes."""
    r = np.linalg.norm(p - [0.05, 0.0, 0.0], axis=1)
    ball = 0.22 - r
    fin = 0.006 - np.abs(np.linalg.norm(p - [-0.1, 0.05, 0.0], axis=1) - 0.33)
    fin = np.minimum(fin, p[:, 2] + 0.1)
    other = 0.08 - np.linalg.norm(p - [-0.3, -0.3, 0.3], axis=1)
    return np.maximum(np.maximum(ball, fin), other).astype(np.float32)


@pytest.mark.parametrize(("res", "coarse"), [(129, 33), (97, 33), (65, 9)])
def test_coarse_to_fine_equals_dense_on_thin_features(res: int, coarse: int) -> None:
    dense = surface.evaluate_dense(_shell_field, res)
    fast, stats = surface.evaluate_coarse_to_fine(_shell_field, res, coarse, 0.0)
    assert stats.levels[-1] == res
    assert int(((dense > 0) != (fast > 0)).sum()) == 0
    assert sum(stats.evaluated) < 0.25 * dense.size
    evaluated = np.isclose(fast, dense, atol=1e-6, rtol=0)
    inside_band = np.abs(dense) < 0.5 / (res - 1)  # a grid point next to the surface
    assert evaluated[inside_band].all()


def test_straddling_cells_and_grid_points() -> None:
    v = np.zeros((3, 3, 3), np.float32)
    v[2, 2, 2] = 1.0
    cells = surface._straddling_cells(v, 0.5)
    assert cells.sum() == 1 and cells[1, 1, 1]
    pts = surface.grid_points(3, np.array([0, 5, 26]))
    np.testing.assert_allclose(pts, [[-0.5, -0.5, -0.5], [-0.5, 0.0, 0.5], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(
        surface._plane_points(3, 1, 2), surface.grid_points(3, np.arange(9, 18))
    )
