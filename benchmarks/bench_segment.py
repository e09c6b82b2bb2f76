"""Segmentation stage timings at 1400x1600: full frame vs the ROI crop path, and the fast
pre-processing / decoding against their plain references, all measured in the same run.

Uses the demo model (models/scanseg_demo.json) when present, else a stand-in network built here
(three 3x3 convolutions, 16 channels, random weights: timing only, its masks mean nothing).
The image is the sample workspace image the ROI path crops most (a path can be given), else a
synthetic stone-model image.

    python benchmarks/bench_segment.py [--repeats 5] [--model manifest.json] [--image scan.png]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.core.manifest import load_manifest  # noqa: E402
from app.core.runtime import RuntimeConfig, SessionPool  # noqa: E402
from app.core.segment.decode import decode, decode_reference  # noqa: E402
from app.core.segment.imageio import load_image  # noqa: E402
from app.core.segment.pipeline import segment_image  # noqa: E402
from app.core.segment.preprocess import preprocess, preprocess_reference  # noqa: E402
from app.core.segment.roi import plan_roi  # noqa: E402

STAGES = ("roi", "preprocess", "infer", "decode")


def build_stand_in(folder: Path) -> Path:
    """A dynamic-size 3-class network with realistic per-pixel cost; returns its manifest."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    shapes = [(16, 3, 3, 3), (16, 16, 3, 3), (16, 16, 3, 3), (3, 16, 1, 1)]
    inits, nodes, cur = [], [], "input"
    for i, s in enumerate(shapes):
        w = (rng.normal(size=s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)
        inits += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(np.zeros(s[0], np.float32), f"b{i}"),
        ]
        pad = [s[2] // 2] * 4
        out = "output" if i == len(shapes) - 1 else f"c{i}"
        nodes.append(helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [out], pads=pad))
        if out != "output":
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
            cur = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "stand_in",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, "H", "W"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "stand_in.onnx"))
    manifest = {
        "kind": "segmentation",
        "name": "benchmark stand-in",
        "onnx": "stand_in.onnx",
        "input": "input",
        "output": "output",
        "input_size": None,
        "mean": [123.675, 116.28, 103.53],
        "std": [58.395, 57.12, 57.375],
        "to_rgb": True,
        "output_kind": "logits",
        "classes": [
            {"name": "background", "color": [0, 0, 0]},
            {"name": "gingiva", "color": [230, 120, 120]},
            {"name": "tooth", "color": [240, 230, 140]},
        ],
        "roi": {"enabled": True, "method": "threshold"},
    }
    path = folder / "stand_in.json"
    path.write_text(json.dumps(manifest))
    return path


def synthetic_image() -> np.ndarray:
    """A 1400x1600 stand-in scan: grey plate, an elliptic pink stone model with pale teeth."""
    import cv2

    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(70, 4, (1400, 1600, 3)), 0, 255).astype(np.uint8)
    cv2.ellipse(img, (800, 700), (420, 360), 0, 0, 360, (205, 120, 115), -1)
    for i in range(7):
        t = np.pi * (0.1 + 0.8 * i / 6)
        c = (int(800 + 300 * np.cos(t)), int(700 - 250 * np.sin(t)))
        cv2.circle(img, c, 45, (235, 225, 200), -1)
    return img


def crop_fraction(image: np.ndarray, model) -> float:
    """Share of the frame the ROI path would segment (1.0 when it falls back)."""
    box, _ = plan_roi(image, model)
    if box is None:
        return 1.0
    return (box[2] - box[0]) * (box[3] - box[1]) / float(image.shape[0] * image.shape[1])


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", type=Path, default=None, help="segmentation manifest")
    ap.add_argument("--image", type=Path, default=None, help="image (default: first sample)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_segment_"))
    demo = REPO / "models" / "scanseg_demo.json"
    manifest = args.model or (demo if demo.is_file() else build_stand_in(tmp))
    model = load_manifest(manifest)
    samples = sorted((REPO / "resources" / "samples").glob("*/image_*.jpg"))
    if args.image is not None:
        samples = [args.image.resolve()]
    elif samples:
        samples = [min(samples, key=lambda p: crop_fraction(load_image(p), model))]
    image = load_image(samples[0]) if samples else synthetic_image()
    where = f"{samples[0].parent.name}/{samples[0].name}" if samples else "synthetic"
    pool = SessionPool(RuntimeConfig(preference=("cpu",)))
    segment_image(image, model, pool, roi=False)  # session creation and warm-up

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    print(
        f"model: {model.id} ({manifest.name}); image: "
        f"{where} {image.shape[1]}x"
        f"{image.shape[0]}; nproc: {affinity} (cpu_count {os.cpu_count()}); "
        f"ONNX Runtime CPU; median of {args.repeats}"
    )

    rows = []
    for label, roi in (("full frame", False), ("ROI (" + model.roi.method + ")", True)):
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            r = segment_image(image, model, pool, roi=roi)
            total = (time.perf_counter() - t0) * 1000.0
            runs.append((r.report.timings_ms, total, r))
        stage = {s: statistics.median(t.get(s, 0.0) for t, _, _ in runs) for s in STAGES}
        last = runs[-1][2]
        rows.append((label, stage, statistics.median(t for _, t, _ in runs), last))
    base = rows[0][2]
    agree = float((rows[0][3].labels == rows[1][3].labels).mean())

    print()
    print("| path | crop | " + " | ".join(f"{s} ms" for s in STAGES) + " | total ms | vs full |")
    print("|---|---|" + "---|" * (len(STAGES) + 2))
    for label, stage, total, r in rows:
        crop = f"{r.report.info['roi_fraction']:.2f}"
        cells = " | ".join(f"{stage[s]:.1f}" for s in STAGES)
        print(f"| {label} | {crop} | {cells} | {total:.1f} | {total / base:.2f}x |")
    meaning = (
        " (stand-in, random weights: its masks mean nothing)" if model.id == "stand_in" else ""
    )
    print(f"\nROI note: {rows[1][3].report.info['roi_note']}")
    print(f"ROI vs full mask agreement: {agree:.4%}{meaning}")

    prepared = preprocess(image, model)
    raw = pool.get(model.onnx).run([model.output], {model.input: prepared.tensor})[0]
    pairs = [
        (
            "preprocess",
            lambda: preprocess_reference(image, model),
            lambda: preprocess(image, model),
        ),
        (
            "decode",
            lambda: decode_reference(raw, prepared, model),
            lambda: decode(raw, prepared, model),
        ),
    ]
    print("\n| step (full frame) | plain reference ms | fast ms | fast / plain |")
    print("|---|---|---|---|")
    for name, ref, fast in pairs:
        r_ms = median_ms(ref, args.repeats)
        f_ms = median_ms(fast, args.repeats)
        print(f"| {name} | {r_ms:.1f} | {f_ms:.1f} | {f_ms / r_ms:.2f} |")


if __name__ == "__main__":
    main()
