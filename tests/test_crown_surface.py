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


def test_dilate_and_cell_corners_match_plain_versions() -> None:
    rng = np.random.default_rng(0)
    cells = rng.uniform(size=(9, 10, 11)) > 0.93
    assert (surface._dilate(cells) == binary_dilation(cells, np.ones((3, 3, 3), bool))).all()
    ref = np.zeros((10, 11, 12), bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                ref[dx : dx + 9, dy : dy + 10, dz : dz + 11] |= cells
    assert (surface._cells_to_points(cells) == ref).all()


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
