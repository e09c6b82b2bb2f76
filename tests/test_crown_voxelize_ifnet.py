"""IF-Net's voxelization (cell placement, triangle–cube surface, two-way z rays): the fast
version against the plain re-implementation, cell for cell, on a closed mesh and open scans."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from app.core.crown.frame import make_frame
from app.core.crown.meshio import load_mesh
from app.core.crown.voxel_overlap import overlap_cells, overlap_cells_reference
from app.core.crown.voxelize import Grid, grid_axis, voxelize, voxelize_reference
from app.core.manifest import Frame

IFNET = {"placement": "cells", "surface": "cube", "inside": "ray_z_both"}


def _closed_mesh() -> trimesh.Trimesh:
    m = trimesh.creation.icosphere(subdivisions=3, radius=0.31)
    m.apply_transform(trimesh.transformations.rotation_matrix(0.3, [1, 2, 3]))
    m.apply_translation([0.031, -0.052, 0.017])
    return m


def _open_scan(n: int = 24) -> trimesh.Trimesh:
    """A wavy height field over part of the cube (a synthetic open scan: one sheet, with
    border, no volume), tilted so no face is axis-aligned."""
    u = np.linspace(-0.4, 0.37, n)
    xx, yy = np.meshgrid(u, u * 0.9 + 0.02, indexing="ij")
    zz = 0.08 * np.sin(7.0 * xx) * np.cos(5.0 * yy) - 0.03 + 0.1 * xx
    v = np.stack([xx, yy, zz], -1).reshape(-1, 3)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    f = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)]).reshape(-1, 3)
    m = trimesh.Trimesh(v, f, process=False)
    m.apply_transform(trimesh.transformations.rotation_matrix(0.2, [0.3, 1.0, 0.1]))
    return m


def _open_cap() -> trimesh.Trimesh:
    """A sphere with its lower part cut away: an open shell that z rays enter from below."""
    m = _closed_mesh()
    keep = m.triangles_center[:, 2] > -0.1
    return trimesh.Trimesh(m.vertices, m.faces[keep], process=False)


def test_cells_placement_centres_cells_of_side_one_over_r() -> None:
    g = grid_axis(8, "cells")
    np.testing.assert_allclose(g, np.array([-7, -5, -3, -1, 1, 3, 5, 7]) / 16)
    assert Grid.of(8, "cells").h == 1 / 8 and Grid.of(8, "points").h == 1 / 7
    np.testing.assert_array_equal(grid_axis(9), np.linspace(-0.5, 0.5, 9))


@pytest.mark.parametrize("mesh", [_closed_mesh(), _open_scan(), _open_cap()],
                         ids=["closed", "open_scan", "open_cap"])  # fmt: skip
@pytest.mark.parametrize("mode", ["solid", "surface"])
def test_ifnet_rules_fast_equal_plain_cell_for_cell(mesh: trimesh.Trimesh, mode: str) -> None:
    res = 24
    fast = voxelize(mesh.vertices, mesh.faces, res, mode, **IFNET)
    ref = voxelize_reference(mesh.vertices, mesh.faces, res, mode, **IFNET)
    assert fast.sum() > 100
    np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("placement", ["points", "cells"])
def test_every_combination_fast_equals_plain(placement: str) -> None:
    mesh = _open_cap()
    for surface in ("ball", "cube"):
        for inside in ("ray_x", "ray_z_both"):
            rules = {"placement": placement, "surface": surface, "inside": inside}
            fast = voxelize(mesh.vertices, mesh.faces, 20, "solid", **rules)
            ref = voxelize_reference(mesh.vertices, mesh.faces, 20, "solid", **rules)
            np.testing.assert_array_equal(fast, ref, err_msg=str(rules))


def test_cube_overlap_lies_between_the_inscribed_and_the_circumscribed_ball() -> None:
    """A cell overlapping a triangle has its centre within h*sqrt(3)/2 of it; a centre within
    h/2 always overlaps. Checked against trimesh's exact point-triangle distance."""
    res = 20
    tri = np.array([[[-0.31, -0.2, 0.05], [0.27, -0.11, 0.13], [0.02, 0.33, -0.21]]])
    grid = Grid.of(res, "cells")
    cells = overlap_cells(tri, grid)
    g = grid.axis
    p = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    closest = trimesh.triangles.closest_point(np.repeat(tri, len(p), axis=0), p)
    dist = np.linalg.norm(closest - p, axis=1).reshape((res,) * 3)
    assert cells[dist <= grid.h / 2 - 1e-12].all()
    assert not cells[dist > grid.h * np.sqrt(3) / 2 + 1e-12].any()
    assert cells.sum() > (dist <= grid.h / 2).sum()
    np.testing.assert_array_equal(cells, overlap_cells_reference(tri, grid))


def test_triangle_touching_a_cell_face_marks_both_cells() -> None:
    """Closed cubes: a triangle lying in the plane between two cell layers overlaps both."""
    grid = Grid.of(8, "cells")
    z = 0.0  # the face between cells 3 and 4
    tri = np.array([[[-0.2, -0.2, z], [0.2, -0.15, z], [0.0, 0.2, z]]])
    cells = overlap_cells(tri, grid)
    assert cells[:, :, 3].any() and (cells[:, :, 3] == cells[:, :, 4]).all()
    assert not cells[:, :, [0, 1, 2, 5, 6, 7]].any()
    np.testing.assert_array_equal(cells, overlap_cells_reference(tri, grid))


def test_two_way_rays_leave_an_open_sheet_hollow() -> None:
    """A z ray from a cell below a single sheet crosses it once upwards and never downwards:
    IF-Net's rule calls nothing inside, so the solid is the shell; a cap open at the bottom is
    not filled either."""
    for mesh in (_open_scan(), _open_cap()):
        solid = voxelize(mesh.vertices, mesh.faces, 24, "solid", **IFNET)
        shell = voxelize(mesh.vertices, mesh.faces, 24, "surface", **IFNET)
        np.testing.assert_array_equal(solid, shell)


def test_closed_sphere_solid_matches_the_ball_it_voxelizes() -> None:
    res, r, c = 32, 0.3, np.array([0.05, -0.04, 0.02])
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=r)
    mesh.apply_translation(c)
    solid = voxelize(mesh.vertices, mesh.faces, res, "solid", **IFNET)
    g = grid_axis(res, "cells")
    p = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1)
    d = np.linalg.norm(p - c, axis=-1)
    h = 1.0 / res
    assert solid[d < r - h].all()
    assert not solid[d > r + h].any()
    np.testing.assert_allclose(p[solid].mean(axis=0), c, atol=h / 4)


def test_real_scan_block_fast_equals_plain(dental_samples) -> None:
    mesh = load_mesh(dental_samples / "vbcd_1723719_pna.ply")
    frame = make_frame(mesh.vertices, Frame("bbox", 20.0, "bbox"))
    v = frame.to_unit(mesh.vertices)
    region = ((10, 18), (10, 18), (0, 32))
    fast = voxelize(v, mesh.faces, 32, "solid", **IFNET)
    ref = voxelize_reference(v, mesh.faces, 32, "solid", region, **IFNET)
    sl = tuple(slice(a, b) for a, b in region)
    assert fast[sl].any() and not fast[sl].all()
    np.testing.assert_array_equal(fast[sl], ref[sl])
