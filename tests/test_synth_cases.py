"""The synthetic crown-case generator: deterministic, plausible millimetre geometry, a closed
crown that sits on the preparation between its neighbours. No torch needed."""

from __future__ import annotations

import numpy as np
import pytest

from models.recipes.synth_cases import TOOTH_TYPES, make_case


@pytest.fixture(scope="module")
def cases():
    return {kind: make_case(11, tooth_type=kind) for kind in TOOTH_TYPES}


@pytest.fixture(scope="module")
def shaped():
    """The same seeds with a tilted, scalloped margin (seed 11 draws a 1.9 mm tilt)."""
    return {kind: make_case(11, tooth_type=kind, margin_shape=True) for kind in TOOTH_TYPES}


def _base_heights(case) -> np.ndarray:
    """Lowest crown height above the margin centre in each of 8 sectors around the axis."""
    local = (case.crown.vertices - case.margin_center) @ case.axes
    sector = ((np.arctan2(local[:, 1], local[:, 0]) + np.pi) // (np.pi / 4)).astype(int) % 8
    return np.array([local[sector == k, 2].min() for k in range(8)])


def test_same_seed_same_case_and_different_seed_differs():
    a, b, c = make_case(3), make_case(3), make_case(4)
    assert np.array_equal(a.context.vertices, b.context.vertices)
    assert np.array_equal(a.context.faces, b.context.faces)
    assert np.array_equal(a.crown.vertices, b.crown.vertices)
    assert np.array_equal(a.prep_center, b.prep_center)
    assert a.tooth_type == b.tooth_type
    assert a.context.vertices.shape != c.context.vertices.shape or not np.allclose(
        a.context.vertices, c.context.vertices
    )


def test_tooth_types_are_all_drawn():
    assert {make_case(s, build_meshes=False).tooth_type for s in range(8)} == set(TOOTH_TYPES)


@pytest.mark.parametrize("which", ["cases", "shaped"])
@pytest.mark.parametrize("kind", TOOTH_TYPES)
def test_crown_is_one_closed_outward_solid(request, which, kind):
    crown = request.getfixturevalue(which)[kind].crown
    assert crown.is_watertight
    assert crown.is_winding_consistent
    assert crown.volume > 0
    assert len(crown.split(only_watertight=False)) == 1


@pytest.mark.parametrize("kind", TOOTH_TYPES)
def test_sizes_are_plausible_millimetres(cases, kind):
    case = cases[kind]
    ext = np.sort(case.crown.extents)
    assert 5.0 < ext[-1] < 13.0, ext
    assert 4.0 < ext[0] < 12.0, ext
    assert 100.0 < case.crown.volume < 600.0
    # context is cropped to a cube around the preparation, about 21 mm wide
    assert np.all(case.context.extents <= 2 * case.crop_half + 1e-6)
    assert case.context.extents.max() > 18.0


@pytest.mark.parametrize("kind", TOOTH_TYPES)
def test_context_is_an_open_scan(cases, kind):
    assert not cases[kind].context.is_watertight


@pytest.mark.parametrize("which", ["cases", "shaped"])
@pytest.mark.parametrize("kind", TOOTH_TYPES)
def test_crown_sits_on_the_prep_between_the_neighbours(request, which, kind):
    case = request.getfixturevalue(which)[kind]
    crown, ctx = case.crown, case.context
    # the preparation centre lies inside the crown's bounding box, near its middle
    assert np.all(np.abs(case.prep_center - crown.bounds.mean(axis=0)) < 1.5)
    # the crown's inner surface touches the stump: context vertices lie within 0.3 mm of it
    from scipy.spatial import cKDTree

    d_ctx, _ = cKDTree(ctx.vertices).query(crown.vertices)
    assert np.mean(d_ctx < 0.35) > 0.25
    # it does not cut deep into the context (neighbours, antagonist): the context vertices in
    # the crown solid (exact occupancy) are a thin contact layer, within 0.15 mm of its surface
    inside = case.crown_inside(ctx.vertices)
    assert inside.mean() < 0.05
    depth, _ = cKDTree(crown.vertices).query(ctx.vertices[inside])
    assert depth.max() < 0.15
    # neighbours on both sides along the row, the antagonist above, all clear of the crown
    local = (ctx.vertices - case.prep_center) @ case.axes
    clocal = (crown.vertices - case.prep_center) @ case.axes
    x0, x1 = clocal[:, 0].min(), clocal[:, 0].max()
    z1 = clocal[:, 2].max()
    band = (local[:, 2] > clocal[:, 2].min() + 1.0) & (local[:, 2] < z1 - 1.0)
    band &= np.abs(local[:, 1]) < 2.0
    assert np.count_nonzero(band & (local[:, 0] < x0 - 0.2)) > 50
    assert np.count_nonzero(band & (local[:, 0] > x1 + 0.2)) > 50
    above = (np.abs(local[:, 0]) < 2.0) & (np.abs(local[:, 1]) < 2.0) & (local[:, 2] > z1)
    assert np.count_nonzero(above) > 20
    assert local[above, 2].min() > z1 + 0.1


def test_crop_box_centre_is_near_the_preparation(cases):
    for case in cases.values():
        centre = case.context.bounds.mean(axis=0)
        assert np.linalg.norm(centre - case.prep_center) < 3.5


def test_crown_inside_matches_the_mesh():
    from app.core.crown.voxelize import voxelize

    case = make_case(2)
    lo, hi = case.crown.bounds
    center, size = 0.5 * (lo + hi), float((hi - lo).max()) + 1.0
    res = 40
    unit = (case.crown.vertices - center) / size
    solid = voxelize(unit, case.crown.faces, res, "solid")
    shell = voxelize(unit, case.crown.faces, res, "surface")
    ax = np.linspace(-0.5, 0.5, res)
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), axis=-1).reshape(-1, 3)
    exact = case.crown_inside(grid * size + center).reshape((res,) * 3)
    clear = ~shell
    assert exact[clear].sum() > 1000
    assert np.array_equal(exact[clear], solid[clear])


def test_layout_only_case_matches_the_full_case(cases):
    full = cases["premolar"]
    layout = make_case(11, tooth_type="premolar", build_meshes=False)
    assert len(layout.context.faces) == 0 and len(layout.crown.faces) == 0
    assert np.array_equal(layout.prep_center, full.prep_center)
    assert np.array_equal(layout.margin_center, full.margin_center)
    # the margin centre lies on the prep axis, below the prep centre, at the crown's bottom
    up = full.axes[:, 2]
    assert np.dot(full.prep_center - full.margin_center, up) > 2.0
    crown_bottom = ((full.crown.vertices - full.margin_center) @ up).min()
    assert abs(crown_bottom) < 0.2


@pytest.mark.parametrize("kind", TOOTH_TYPES)
def test_shaped_margin_tilts_the_crowns_base_and_changes_nothing_else(cases, shaped, kind):
    flat, tilted = cases[kind], shaped[kind]
    for name in ("prep_center", "margin_center", "crop_center", "axes"):
        assert np.array_equal(getattr(flat, name), getattr(tilted, name)), name
    assert flat.tooth_type == tilted.tooth_type and flat.margin == tilted.margin
    assert np.ptp(_base_heights(flat)) < 0.2
    # a 1.9 mm tilt across the tooth: one side's base at least 1.5 mm above the other's
    assert np.ptp(_base_heights(tilted)) > 1.5
