"""Overlay drawing: fill blending, contour edges, per-class visibility."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.segment.overlay import overlay, overlay_reference

PALETTE = [(0, 0, 0), (200, 0, 0), (0, 0, 200)]


@pytest.fixture
def scene():
    image = np.full((40, 50, 3), 100, np.uint8)
    labels = np.zeros((40, 50), np.uint8)
    labels[10:30, 5:20] = 1
    labels[10:30, 25:45] = 2
    return image, labels


def test_fill_blends_visible_classes_and_leaves_background(scene):
    image, labels = scene
    out = overlay(image, labels, PALETTE, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert tuple(out[0, 0]) == (100, 100, 100)  # class 0 hidden by default
    assert tuple(out[15, 10]) == (150, 50, 50)
    assert tuple(out[15, 30]) == (50, 50, 150)
    assert tuple(image[15, 10]) == (100, 100, 100)  # input untouched


def test_visible_flags_and_alpha(scene):
    image, labels = scene
    out = overlay(image, labels, PALETTE, alpha=1.0, visible=[True, False, True])
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert tuple(out[15, 10]) == (100, 100, 100)
    assert tuple(out[15, 30]) == (0, 0, 200)
    np.testing.assert_array_equal(overlay(image, labels, PALETTE, alpha=0.0), image)


def test_contour_draws_only_the_inner_edge(scene):
    image, labels = scene
    out = overlay(image, labels, PALETTE, alpha=1.0, mode="contour", thickness=2)
    assert tuple(out[10, 10]) == (200, 0, 0) and tuple(out[11, 10]) == (200, 0, 0)
    assert tuple(out[12, 12]) == (100, 100, 100)  # interior untouched
    assert tuple(out[20, 5]) == (200, 0, 0) and tuple(out[20, 4]) == (100, 100, 100)
    assert tuple(out[29, 30]) == (0, 0, 200)
    changed = (out != image).any(axis=2)
    edge_band = np.zeros_like(changed)
    for c in (1, 2):
        ys, xs = np.nonzero(labels == c)
        edge_band[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
        edge_band[ys.min() + 2 : ys.max() - 1, xs.min() + 2 : xs.max() - 1] = False
    np.testing.assert_array_equal(changed, edge_band)


def test_bad_arguments(scene):
    image, labels = scene
    with pytest.raises(ValueError):
        overlay(image, labels[:10], PALETTE)
    with pytest.raises(ValueError):
        overlay(image, labels + 5, PALETTE)
    with pytest.raises(ValueError):
        overlay(image, labels, PALETTE, mode="outline")
    with pytest.raises(ValueError):
        overlay(image, labels, PALETTE, visible=[True])


@pytest.mark.parametrize("mode", ["fill", "contour"])
@pytest.mark.parametrize("alpha", [0.3, 0.5, 1.0])
def test_overlay_matches_the_plain_reference(mode, alpha):
    rng = np.random.default_rng(int(alpha * 10))
    image = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    blocks = rng.integers(0, 4, (6, 8)).astype(np.uint8)
    labels = np.kron(blocks, np.ones((10, 10), np.uint8))
    palette = [(0, 0, 0), (200, 10, 10), (10, 10, 200), (250, 250, 0)]
    visible = [False, True, False, True]
    for vis in (None, visible):
        fast = overlay(image, labels, palette, alpha=alpha, mode=mode, visible=vis)
        ref = overlay_reference(image, labels, palette, alpha=alpha, mode=mode, visible=vis)
        assert np.abs(fast.astype(int) - ref).max() <= 1
        np.testing.assert_array_equal(fast != image, ref != image)
