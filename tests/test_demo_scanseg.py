"""The shipped demo segmentation model: manifest, ONNX interface, and quality on fresh renders.

Held-out scenes are rendered at full size (1400 x 1600) with seeds the recipe never trained on,
then segmented through the application's own pipeline (manifest preprocessing, ONNX Runtime CPU).
Rendering needs an OpenGL context; in CI pytest-xvfb provides the display.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from app.core.manifest import SegmentationModel, load_manifest
from app.core.runtime import RuntimeConfig, SessionPool
from app.core.segment.pipeline import segment_image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.recipes.synth_images import FULL_SIZE, render_pair  # noqa: E402

MANIFEST = ROOT / "models" / "scanseg_demo.json"
HELDOUT_SEEDS = (2_001_000, 2_001_001, 2_001_002)
"""In the held-out seed range (the recipe trains on 1_000_000 + i), beyond its evaluation set."""


@pytest.fixture(scope="module")
def spec() -> SegmentationModel:
    spec = load_manifest(MANIFEST)
    assert isinstance(spec, SegmentationModel)
    return spec


@pytest.fixture(scope="module")
def pool() -> SessionPool:
    return SessionPool(RuntimeConfig(preference=("cpu",)))


def _crop_box(mask: np.ndarray, margin: float, min_px: int, divisor: int) -> tuple[int, ...]:
    """The model's box with the manifest's ROI margin, sides rounded up to the divisor."""
    h, w = mask.shape
    rows, cols = np.nonzero(mask)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    my = max(min_px, int(margin * (y1 - y0)))
    mx = max(min_px, int(margin * (x1 - x0)))
    y0, y1, x0, x1 = max(0, y0 - my), min(h, y1 + my), max(0, x0 - mx), min(w, x1 + mx)
    y1 = min(h, y0 + -(-(y1 - y0) // divisor) * divisor)
    x1 = min(w, x0 + -(-(x1 - x0) // divisor) * divisor)
    return int(x0), int(y0), int(x1), int(y1)


@pytest.fixture(scope="module")
def results(spec, pool) -> list[dict[str, np.ndarray]]:
    out = []
    for seed in HELDOUT_SEEDS:
        image, mask = render_pair(seed, FULL_SIZE)
        full = segment_image(image, spec, pool, roi=False).labels
        x0, y0, x1, y1 = _crop_box(mask, spec.roi.margin, spec.roi.min_margin_px, spec.size_divisor)
        crop = np.zeros_like(full)
        crop[y0:y1, x0:x1] = segment_image(image[y0:y1, x0:x1], spec, pool, roi=False).labels
        roi = segment_image(image, spec, pool, roi=True).labels
        out.append({"truth": mask, "full": full, "crop": crop, "roi": roi})
    return out


def test_manifest_and_onnx_interface(spec, pool) -> None:
    assert spec.onnx.name == "scanseg_demo.onnx"
    assert spec.onnx.stat().st_size <= 20 * 1024 * 1024
    assert spec.input_size is None and spec.output_kind == "logits"
    assert [c.name for c in spec.classes] == ["background", "gingiva", "tooth"]
    assert spec.palette == [(0, 0, 0), (230, 120, 120), (240, 230, 140)]
    assert spec.roi.enabled and spec.roi.method == "threshold"
    session = pool.get(spec.onnx).session
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("input", "output")
    assert inp.shape[:2] == [1, 3] and all(isinstance(d, str) for d in inp.shape[2:])
    h, w = 3 * spec.size_divisor, 5 * spec.size_divisor
    y = session.run(None, {"input": np.zeros((1, 3, h, w), np.float32)})[0]
    assert y.shape == (1, 3, h, w)


def _miou(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, list[float]]:
    cm = np.zeros((3, 3), np.int64)
    for truth, pred in pairs:
        cm += np.bincount(truth.ravel() * 3 + pred.ravel(), minlength=9).reshape(3, 3)
    tp = np.diag(cm)
    iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    return float(iou.mean()), [float(v) for v in iou]


def test_quality_on_heldout_renders(results) -> None:
    miou, ious = _miou([(r["truth"], r["full"]) for r in results])
    assert miou >= 0.90, f"mIoU {miou:.3f}, per class {ious}"
    assert min(ious) >= 0.8


def test_crop_with_margin_agrees_with_full_frame(results) -> None:
    """What the ROI path relies on: a bounded receptive field, so a crop gives the same labels."""
    for r in results:
        assert (r["full"] == r["crop"]).mean() >= 0.995


def test_pipeline_roi_path_agrees_with_full_frame(results) -> None:
    for r in results:
        assert (r["full"] == r["roi"]).mean() >= 0.995
