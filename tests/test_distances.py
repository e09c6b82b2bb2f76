"""Distances from a crown to its neighbours and antagonist, on a case with gaps known by design."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from distance_cases import MESIAL, OCCLUSAL, facing, gap_case

from app.core.distances import (
    NO_BAND,
    DistanceLimits,
    band_index,
    crown_distances,
    occlusal_bands,
    proximal_bands,
    signed_distances,
    signed_distances_reference,
    split_scan,
)


@pytest.mark.parametrize("mesial_gap", [0.05, -0.1])
def test_known_gaps_are_measured_on_the_facing_sides(mesial_gap):
    case = gap_case(distal_gap=0.3, mesial_gap=mesial_gap, occlusal_gap=1.5)
    d = crown_distances(case.crown.vertices, case.scan.vertices, case.scan.faces, MESIAL, OCCLUSAL)
    side = facing(case.crown)
    np.testing.assert_allclose(d.proximal[side["distal"]], 0.3, atol=1e-9)
    np.testing.assert_allclose(d.proximal[side["mesial"]], mesial_gap, atol=1e-9)
    np.testing.assert_allclose(d.occlusal[side["top"]], 1.5, atol=1e-9)
    # the stump inside the crown is no neighbour: the base and the top are not "in contact"
    assert np.all(d.proximal[side["base"]] > 1.0)
    assert np.all(d.proximal[side["top"]] > 1.0)
    # the neighbours are no antagonist
    assert np.all(d.occlusal[side["mesial"]] > 2.0)


def test_bands_follow_the_limits():
    case = gap_case(distal_gap=0.3, mesial_gap=0.05, occlusal_gap=0.8)
    d = crown_distances(case.crown.vertices, case.scan.vertices, case.scan.faces, MESIAL, OCCLUSAL)
    side = facing(case.crown)
    limits = DistanceLimits(contact_max_mm=0.1, clearance_min_mm=1.0)
    prox = band_index(d.proximal, proximal_bands(limits))
    occl = band_index(d.occlusal, occlusal_bands(limits))
    assert set(prox[side["mesial"]]) == {1}  # contact
    assert set(prox[side["distal"]]) == {2}  # open
    assert set(occl[side["top"]]) == {1}  # too close: 0.8 < 1.0
    assert set(prox[side["base"]]) == {NO_BAND}
    wide = band_index(d.proximal, proximal_bands(DistanceLimits(contact_max_mm=0.5)))
    assert set(wide[side["distal"]]) == {1}  # 0.3 mm counts as contact under a 0.5 mm limit


def test_split_puts_the_other_jaw_and_the_neighbours_apart():
    case = gap_case()
    near, opposite = split_scan(
        case.crown.vertices, case.scan.vertices, case.scan.faces, MESIAL, OCCLUSAL
    )
    up = case.scan.triangles_center[:, 2]
    along = case.scan.triangles_center[:, 0]
    assert np.all(up[opposite] > 3.0) and len(opposite) > 0
    assert np.all(np.abs(along[near]) > 3.5) and len(near) > 0
    assert not set(near) & set(opposite)


def test_a_separate_part_within_the_crown_ends_is_the_preparation():
    """A segmented preparation piece reaching the crown's ends is no neighbour, even where it
    passes the crown's mesial end; a piece reaching past the ends stays a neighbour."""
    case = gap_case()
    collar = trimesh.creation.box(extents=(9.0, 0.3, 2.0))
    collar.apply_translation((0.0, -4.5, 0.0))
    scan = trimesh.util.concatenate([case.scan, collar])
    near, _ = split_scan(case.crown.vertices, scan.vertices, scan.faces, MESIAL, OCCLUSAL)
    assert not set(near) & set(range(len(case.scan.faces), len(scan.faces)))
    longer = trimesh.creation.box(extents=(14.0, 0.3, 2.0))
    longer.apply_translation((0.0, -4.5, 0.0))
    scan = trimesh.util.concatenate([case.scan, longer])
    near, _ = split_scan(case.crown.vertices, scan.vertices, scan.faces, MESIAL, OCCLUSAL)
    assert set(near) & set(range(len(case.scan.faces), len(scan.faces)))


def test_pruned_distances_match_every_triangle_checked():
    case = gap_case(mesial_gap=-0.1)
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=2.0)
    sphere.apply_translation((0.5, 0.3, 5.0))
    scan = trimesh.util.concatenate([case.scan, sphere])
    rng = np.random.default_rng(0)
    points = np.vstack(
        [case.crown.vertices[rng.choice(len(case.crown.vertices), 150)], rng.normal(0, 4, (50, 3))]
    )
    ref = signed_distances_reference(points, scan.vertices, scan.faces)
    fast = signed_distances(points, scan.vertices, scan.faces, max_mm=1e6)
    np.testing.assert_allclose(fast, ref, atol=1e-9)
    capped = signed_distances(points, scan.vertices, scan.faces, max_mm=0.5)
    within = np.abs(ref) <= 0.5
    np.testing.assert_allclose(capped[within], ref[within], atol=1e-9)
    assert np.all(np.isinf(capped[~within]))
