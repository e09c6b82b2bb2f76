"""The crown recipe's augmentation helpers (scan artefacts and frame perturbations, model
version 2): pure numpy/trimesh on a generated case, but they live in the torch recipe module, so
the tests are skipped without torch."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from app.core.crown.frame import make_frame  # noqa: E402
from models.recipes import train_crown as tc  # noqa: E402
from models.recipes.synth_cases import make_case  # noqa: E402


@pytest.fixture(scope="module")
def case():
    return make_case(5, context_spacing=0.4, crown_spacing=0.3)


def _angle_deg(r: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))


def test_random_rotation_is_proper_and_bounded():
    rng = np.random.default_rng(0)
    angles = []
    for _ in range(200):
        r = tc.random_rotation(rng, 10.0)
        assert np.allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(r), 1.0)
        angles.append(_angle_deg(r))
    assert max(angles) <= 10.0 + 1e-9
    assert max(angles) > 8.0  # the whole range is used


def test_perturbed_frame_goes_through_the_runtime_frame(case):
    base = make_frame(case.context.vertices, tc.FRAME)
    rng = np.random.default_rng(1)
    for _ in range(50):
        cf = tc.perturbed_case_frame(base.center, rng, 10.0, 1.5)
        frame = make_frame(case.context.vertices, tc.FRAME, case=cf)
        assert np.all(np.abs(frame.center - base.center) <= 1.5 + 1e-9)
        assert _angle_deg(frame.rotation) <= 10.0 + 1e-6
        assert frame.scale == pytest.approx(1.0 / tc.SIZE_MM)
        # round trip stays exact
        p = case.context.vertices[:100]
        assert np.allclose(frame.to_mm(frame.to_unit(p)), p, atol=1e-9)


def test_scan_artefacts_are_deterministic_and_valid(case):
    base = make_frame(case.context.vertices, tc.FRAME)
    v0, f0 = case.context.vertices, case.context.faces
    a = tc.scan_artefacts(v0, f0, base.center, np.random.default_rng([3, 7]))
    b = tc.scan_artefacts(v0, f0, base.center, np.random.default_rng([3, 7]))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for k in range(6):
        v, f = tc.scan_artefacts(v0, f0, base.center, np.random.default_rng([3, k]))
        assert f.min() >= 0 and f.max() < len(v)
        assert len(f) > 0.3 * len(f0)
        # no face collapsed to a line or a point by decimation
        assert np.all((f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2]))
        # the surface stays where it was: every kept vertex near the clean mesh (noise, chords)
        from scipy.spatial import cKDTree

        d = cKDTree(v0).query(v[np.unique(f)])[0]
        assert np.percentile(d, 99) < 0.6


def test_each_artefact_alone_does_what_it_says(case):
    base = make_frame(case.context.vertices, tc.FRAME)
    v0, f0 = case.context.vertices, case.context.faces
    off = dict(p_uneven=0.0, p_noise=0.0, p_holes=0.0, p_cut=0.0)

    def run(**kw):
        cfg = tc.Artefacts(**(off | kw))
        return tc.scan_artefacts(v0, f0, base.center, np.random.default_rng(11), cfg)

    v, f = run()
    assert np.array_equal(f, f0) and np.array_equal(v, v0)
    v, f = run(p_noise=1.0, noise_mm=(0.03, 0.03))
    assert np.array_equal(f, f0)
    assert 0.01 < np.abs(v - v0).std() * np.sqrt(3) < 0.06
    v, f = run(p_holes=1.0)
    assert len(f) < len(f0) and np.array_equal(v, v0)
    v, f = run(p_cut=1.0)
    kept = v[f].mean(axis=1)
    assert len(f) < len(f0)
    # cuts are at least 5 mm from the frame centre: everything within 5 mm survives
    near0 = np.linalg.norm(v0[f0].mean(axis=1) - base.center, axis=1) < 4.9
    near = np.linalg.norm(kept - base.center, axis=1) < 4.9
    assert near.sum() == near0.sum()
    v, f = run(p_uneven=1.0)
    assert len(f) != len(f0)
