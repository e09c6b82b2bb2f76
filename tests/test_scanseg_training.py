"""The segmentation recipe's colour augmentation (numpy only, no PyTorch)."""

from __future__ import annotations

import numpy as np

from models.recipes.train_scanseg import recolour


def _chroma(img: np.ndarray) -> np.ndarray:
    return img - img.mean(axis=-1, keepdims=True)


def test_recolour_turns_hue_and_scales_saturation_without_touching_grey() -> None:
    rng = np.random.default_rng(3)
    img = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
    img[0, 0] = 128.0
    for seed in range(20):
        out = recolour(np.random.default_rng(seed), img)
        assert out.shape == img.shape and out.dtype == np.float32
        assert np.ptp(out[0, 0]) < 1e-3, "a grey pixel got a tint"
        assert np.isclose(out.mean(), img.mean(), atol=1e-2), "the mean brightness moved"
        before, after = _chroma(img).reshape(-1, 3)[1:], _chroma(out).reshape(-1, 3)[1:]
        scale = np.linalg.norm(after, axis=1) / np.linalg.norm(before, axis=1)
        assert np.ptp(scale) < 1e-3 and 0.3 - 1e-4 <= scale[0] <= 1.5 + 1e-4
        # a rotation about the grey axis keeps the angle between any two pixels' hues
        cos_before = before @ before[0] / np.linalg.norm(before, axis=1) / np.linalg.norm(before[0])
        cos_after = after @ after[0] / np.linalg.norm(after, axis=1) / np.linalg.norm(after[0])
        np.testing.assert_allclose(cos_after, cos_before, atol=1e-4)


def test_recolour_reaches_every_hue() -> None:
    pink = np.array([[[230.0, 120.0, 120.0]]], np.float32)
    hues = []
    for seed in range(200):
        c = _chroma(recolour(np.random.default_rng(seed), pink))[0, 0]
        hues.append(np.arctan2(np.sqrt(3) * (c[1] - c[2]), 2 * c[0] - c[1] - c[2]))
    counts, _ = np.histogram(hues, bins=6, range=(-np.pi, np.pi))
    assert counts.min() > 10, f"hue sectors hit unevenly: {counts}"
