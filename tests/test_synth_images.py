"""Synthetic model-scan renders: deterministic, exact masks that line up with the image.

Rendering needs an OpenGL context; in CI pytest-xvfb provides the display.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.recipes.synth_images import COVERAGE_RANGE, render_pair, render_sample_images  # noqa: E402

SMALL = (280, 320)
SEEDS = (11, 12, 13)


@pytest.fixture(scope="module")
def renders() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    return {seed: render_pair(seed, SMALL) for seed in SEEDS}


def test_same_seed_gives_the_same_image_and_mask(renders) -> None:
    image, mask = render_pair(SEEDS[0], SMALL)
    assert np.array_equal(image, renders[SEEDS[0]][0])
    assert np.array_equal(mask, renders[SEEDS[0]][1])
    assert not np.array_equal(renders[SEEDS[0]][0], renders[SEEDS[1]][0])


def test_shapes_and_mask_values(renders) -> None:
    for image, mask in renders.values():
        assert image.shape == (*SMALL, 3) and image.dtype == np.uint8
        assert mask.shape == SMALL and mask.dtype == np.uint8
        assert set(np.unique(mask)) == {0, 1, 2}


def test_model_covers_a_quarter_to_seventy_percent_off_centre(renders) -> None:
    centres = []
    for _, mask in renders.values():
        cover = float((mask > 0).mean())
        assert COVERAGE_RANGE[0] <= cover <= COVERAGE_RANGE[1]
        rows, cols = np.nonzero(mask)
        centres.append((rows.mean() / SMALL[0], cols.mean() / SMALL[1]))
    assert np.ptp(np.array(centres), axis=0).max() > 0.03


def test_mask_lines_up_with_the_image(renders) -> None:
    for image, mask in renders.values():
        grey = image.astype(np.float64).mean(axis=2)
        # Tooth stone is near white: lighter than the gingiva around it (plates may be any shade).
        assert grey[mask == 2].mean() > grey[mask == 1].mean() + 8
        # Class boundaries of the mask sit on image edges: the gradient is stronger there.
        gy, gx = np.gradient(grey)
        grad = np.hypot(gx, gy)
        edge = np.zeros(mask.shape, bool)
        edge[1:] |= mask[1:] != mask[:-1]
        edge[:, 1:] |= mask[:, 1:] != mask[:, :-1]
        assert grad[edge].mean() > 2.0 * grad[~edge].mean()
        shifted = np.roll(edge, 6, axis=1)
        assert grad[edge].mean() > 1.3 * grad[shifted & ~edge].mean()


def test_sample_images_are_full_size_rgb_jpegs_replacing_old_ones(tmp_path: Path) -> None:
    case = tmp_path / "case"
    case.mkdir()
    (case / "image_3.png").write_bytes(b"stale")
    (case / "scan.ply").write_bytes(b"kept")
    paths = render_sample_images(5, case, 1)
    assert sorted(p.name for p in case.iterdir()) == ["image_1.jpg", "scan.ply"]
    assert paths == [case / "image_1.jpg"]
    with Image.open(paths[0]) as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (1600, 1400)
