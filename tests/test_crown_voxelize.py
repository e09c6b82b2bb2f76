"""Voxelization: the fast scanline/candidate version against the direct trimesh reference."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from app.core.crown.frame import make_frame
from app.core.crown.meshio import load_mesh
from app.core.crown.voxelize import SURFACE_RADIUS, grid_axis, voxelize, voxelize_reference
from app.core.manifest import Frame


def _sphere(radius: float, center) -> trimesh.Trimesh:
    m = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    m.apply_translation(center)
    return m


def _tilted_box() -> trimesh.Trimesh:
    m = trimesh.creation.box([0.3, 0.2, 0.5])
    m.apply_transform(trimesh.transformations.rotation_matrix(0.4, [1, 2, 3]))
    m.apply_translation([0.2, 0.15, 0.1])
    return m


def _agree(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


@pytest.mark.parametrize("mode", ["solid", "surface"])
@pytest.mark.parametrize(
    "mesh",
    [_sphere(0.33, [0.031, -0.052, 0.017]), _tilted_box()],
    ids=["sphere", "tilted_box"],
)
def test_fast_matches_reference_on_closed_meshes(mesh: trimesh.Trimesh, mode: str) -> None:
    fast = voxelize(mesh.vertices, mesh.faces, 36, mode)
    ref = voxelize_reference(mesh.vertices, mesh.faces, 36, mode)
    assert fast.shape == (36, 36, 36) and fast.dtype == bool
    assert fast.sum() > 200
    assert _agree(fast, ref) >= 0.999


def test_solid_is_inside_plus_shell_and_indexed_xyz() -> None:
    """An off-centre sphere: deep points solid, far points empty, [x, y, z] order kept."""
    r, c, res = 0.3, np.array([0.12, -0.05, 0.02]), 40
    mesh = _sphere(r, c)
    solid = voxelize(mesh.vertices, mesh.faces, res, "solid")
    surface = voxelize(mesh.vertices, mesh.faces, res, "surface")
    g = grid_axis(res)
    p = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1)
    d = np.linalg.norm(p - c, axis=-1)
    h = 1.0 / (res - 1)
    assert solid[d < r - 2 * h].all()
    assert not solid[d > r + 2 * h].any()
    assert not surface[d < r - 2 * h].any()
    assert (solid | surface == solid).all()
    com = p[solid].mean(axis=0)
    np.testing.assert_allclose(com, c, atol=h / 2)


def test_geometry_outside_the_cube_is_clipped_not_an_error() -> None:
    c, r, res = np.array([0.35, 0.0, 0.0]), 0.6, 32
    mesh = _sphere(r, c)
    solid = voxelize(mesh.vertices, mesh.faces, res, "solid")
    g = grid_axis(res)
    p = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1)
    d = np.linalg.norm(p - c, axis=-1)
    h = 1.0 / (res - 1)
    assert solid[d < r - 2 * h].all()
    assert not solid[d > r + 2 * h].any()
    ref = voxelize_reference(mesh.vertices, mesh.faces, res, "solid")
    assert _agree(solid, ref) >= 0.999
    far = mesh.vertices + 5.0
    assert not voxelize(far, mesh.faces, res, "solid").any()
    huge = trimesh.creation.box([1e12, 1e12, 1e12])
    assert voxelize(huge.vertices, huge.faces, res, "solid").all()
    assert not voxelize(huge.vertices, huge.faces, res, "surface").any()
    shifted = voxelize(huge.vertices + [5e11 + 0.2, 0, 0], huge.faces, res, "solid")
    g = grid_axis(res)
    assert shifted[g > 0.2].all() and not shifted[g < 0.2 - h / 2].any()


def test_ties_on_grid_aligned_box_resolve_exactly() -> None:
    """Box faces on grid planes and triangle diagonals through grid columns: the edge-ownership
    rule counts each crossing once, so the solid equals the box exactly."""
    res = 41
    g = grid_axis(res)
    half = g[30]
    mesh = trimesh.creation.box([2 * half] * 3)
    solid = voxelize(mesh.vertices, mesh.faces, res, "solid")
    inside = np.abs(g) <= half + 1e-12
    want = inside[:, None, None] & inside[None, :, None] & inside[None, None, :]
    assert (solid == want).all()


def test_surface_rule_is_half_a_cell() -> None:
    """A single triangle: a cell is marked iff the grid point is within h/2 of it."""
    res = 24
    h = 1.0 / (res - 1)
    tri = np.array([[-0.31, -0.2, 0.05], [0.27, -0.11, 0.13], [0.02, 0.33, -0.21]])
    vox = voxelize(tri, np.array([[0, 1, 2]]), res, "surface")
    g = grid_axis(res)
    p = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
    closest = trimesh.triangles.closest_point(np.repeat(tri[None], len(p), axis=0), p)
    dist = np.linalg.norm(closest - p, axis=1).reshape((res,) * 3)
    clear = np.abs(dist - SURFACE_RADIUS * h) > 1e-9
    assert SURFACE_RADIUS == 0.5
    assert (vox[clear] == (dist <= SURFACE_RADIUS * h)[clear]).all()
    assert vox.sum() > 100


def test_surface_shell_has_no_axis_gaps() -> None:
    """Every axis-neighbour pair of grid points on opposite sides of a closed surface has one
    surface cell, so inside and outside never touch through unmarked cells."""
    mesh = _tilted_box()
    res = 33
    surface = voxelize(mesh.vertices, mesh.faces, res, "surface")
    inside = voxelize(mesh.vertices, mesh.faces, res, "solid") & ~surface
    assert inside.sum() > 50
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(0, -1), slice(1, None)
        crossing = inside[tuple(a)] != inside[tuple(b)]
        marked = surface[tuple(a)] | surface[tuple(b)]
        assert (marked[crossing]).all()


@pytest.mark.parametrize(
    ("name", "mode", "res"),
    [
        ("vbcd_1723719_pna.ply", "solid", 40),
        ("vbcd_1723719_pna.ply", "surface", 40),
        ("szu_patient10_b_u_11.stl", "solid", 32),
        ("alsheghri_Upper001C_labeled.vtp", "surface", 32),
    ],
)
def test_fast_matches_reference_on_real_scans(dental_samples, name: str, mode: str, res: int):
    mesh = load_mesh(dental_samples / name)
    frame = make_frame(mesh.vertices, Frame("bbox", 20.0, "bbox"))
    v = frame.to_unit(mesh.vertices)
    fast = voxelize(v, mesh.faces, res, mode)
    ref = voxelize_reference(v, mesh.faces, res, mode)
    assert fast.any()
    assert _agree(fast, ref) >= 0.999


def test_real_scan_at_full_resolution_matches_reference_on_a_block(dental_samples) -> None:
    mesh = load_mesh(dental_samples / "vbcd_1723719_pna.ply")
    frame = make_frame(mesh.vertices, Frame("fixed", 45.0, "bbox"))
    v = frame.to_unit(mesh.vertices)
    region = ((52, 76), (52, 76), (40, 64))
    fast = voxelize(v, mesh.faces, 128, "solid")
    ref = voxelize_reference(v, mesh.faces, 128, "solid", region=region)
    sl = tuple(slice(a, b) for a, b in region)
    assert fast[sl].any() and not fast[sl].all()
    assert _agree(fast[sl], ref[sl]) >= 0.999
