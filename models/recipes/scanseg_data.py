"""Rendered training and held-out data for the demo segmentation model, cached on disk.

Seeds are split by range so training, held-out evaluation, tests and the sample workspace never
share a scene: training uses ``TRAIN_SEED0 + i``, held-out evaluation and tests
``HELDOUT_SEED0 + i``; the sample workspace uses small case seeds (see ``render_sample_images``).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from models.recipes.synth_images import FULL_SIZE, GENERATOR_VERSION, render_pair

TRAIN_SEED0 = 1_000_000
HELDOUT_SEED0 = 2_000_000
WORK_DIR = Path(__file__).resolve().parent / "work"


def cache_dir(work_dir: Path = WORK_DIR) -> Path:
    return Path(work_dir) / f"scanseg-v{GENERATOR_VERSION}"


def load_or_render(seed: int, work_dir: Path = WORK_DIR) -> tuple[np.ndarray, np.ndarray]:
    """The full-size (image RGB, mask) of one seed, rendered once and then read from the cache."""
    folder = cache_dir(work_dir)
    img_path, mask_path = folder / f"{seed}_image.png", folder / f"{seed}_mask.png"
    if img_path.is_file() and mask_path.is_file():
        image = cv2.imread(str(img_path), cv2.IMREAD_COLOR)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        if image is not None and mask is not None:
            return np.ascontiguousarray(image[..., ::-1]), mask
    image, mask = render_pair(seed, FULL_SIZE)
    folder.mkdir(parents=True, exist_ok=True)
    for path, arr in ((img_path, image[..., ::-1]), (mask_path, mask)):
        tmp = path.with_suffix(f".{os.getpid()}.tmp.png")
        cv2.imwrite(str(tmp), arr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        tmp.replace(path)
    return image, mask


def dataset(seeds: list[int], work_dir: Path = WORK_DIR, log=print) -> list[tuple]:
    """(image, mask) pairs for ``seeds``, rendering the missing ones."""
    out = []
    for i, seed in enumerate(seeds):
        out.append(load_or_render(seed, work_dir))
        if log is not None and (i + 1) % 20 == 0:
            log(f"  data {i + 1}/{len(seeds)}")
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Pre-render the cached scanseg data.")
    ap.add_argument("--train", type=int, default=600)
    ap.add_argument("--heldout", type=int, default=20)
    ap.add_argument(
        "--part",
        default="0/1",
        help="K/N: render only every N-th seed from the K-th, so N processes can share the work",
    )
    args = ap.parse_args()
    k, n = (int(v) for v in args.part.split("/"))
    os.environ.setdefault("LP_NUM_THREADS", "1")
    seeds = [HELDOUT_SEED0 + i for i in range(args.heldout)]
    seeds += [TRAIN_SEED0 + i for i in range(args.train)]
    dataset(seeds[k::n])
