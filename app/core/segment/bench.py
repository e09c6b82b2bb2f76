"""``crownscan bench segment``: the segmentation paths the app offers, timed on this machine.

Speed is measured on the benchmark model a lab runs, mmseg ``fcn_hr18s`` at 1400x1600 (built by
``benchmarks/models/fcn_hr18s.py``, random weights, committed beside the recipe), through the
app's own pipeline on the sample images; agreement is measured on the trained demo model
(``models/scanseg_demo.json``) with the same options, against its fp32 full-frame labels, on
the same images, since agreement of a network with random weights means nothing.

The baseline is the handover's way: the int64-labels export at its fixed 1400x1600 input, fp32,
full frame. Each other path runs the logits export (any input size) with some of the app's
options: the ROI crop, the int8 copy, a reduced inference scale. Paths are run in turn on each
image (round robin), so a load change on a shared machine hits them alike; figures are medians
per image, and ratios are only meaningful within one run. The fast path is the fastest path
whose agreement is at least :data:`AGREEMENT_FLOOR`. The int8 copies are built into the user
cache on the first run (not timed as a stage; ``int8_build_s`` says how long it took). The
ONNX Runtime session-options table is made only when asked for (``--session-options``): its
five sessions, one with basic optimisations only, were about a fifth of a run.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from app.core.errors import ModelError
from app.core.manifest import SegmentationModel, Speed, load_manifest
from app.core.paths import bundled_models_dir, install_root
from app.core.runtime import RuntimeConfig, SessionPool
from app.core.segment.imageio import load_image
from app.core.segment.pipeline import segment_image
from app.core.segment.quantize import int8_path, sample_images
from app.core.segment.scale import preprocess_scaled, scale_factor

AGREEMENT_FLOOR = 0.99
FAST_LONG_SIDE = 1280
"""The reduced scale offered with int8: the largest long side under 1400 at which int8 keeps
99 % agreement on the demo model over the sample images (1024 falls to about 97.5 %)."""
STAGES = ("roi", "preprocess", "infer", "decode")
BENCH_MODELS = "benchmarks/models"


@dataclass(frozen=True)
class BenchPath:
    """One way to run a segmentation: which export, ROI on or off, which speed options."""

    name: str
    export: str
    roi: bool
    speed: Speed


PATHS = (
    BenchPath("fp32 full frame, labels export (baseline)", "labels", False, Speed()),
    BenchPath("fp32 full frame, logits export", "logits", False, Speed()),
    BenchPath("fp32 ROI", "logits", True, Speed()),
    BenchPath("int8 full frame", "logits", False, Speed("int8")),
    BenchPath(f"fp32 long side {FAST_LONG_SIDE}", "logits", False, Speed("fp32", FAST_LONG_SIDE)),
    BenchPath(
        f"int8 + ROI + long side {FAST_LONG_SIDE}", "logits", True, Speed("int8", FAST_LONG_SIDE)
    ),
    BenchPath("int8 + ROI + long side 1024", "logits", True, Speed("int8", 1024)),
)


def benchmark_model(export: str) -> SegmentationModel:
    """The committed ``fcn_hr18s`` benchmark manifest for ``export`` (``labels`` or ``logits``)."""
    path = install_root() / BENCH_MODELS / f"fcn_hr18s_{export}.json"
    if not path.is_file():
        raise ModelError(
            path, "benchmark model missing (build it with: python -m benchmarks.models.fcn_hr18s)"
        )
    model = load_manifest(path)
    assert isinstance(model, SegmentationModel)
    return model


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    return {
        "cpu": cpu,
        "cores": cores,
        "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
    }


def _agreement(
    path: BenchPath, demo: SegmentationModel, pool: SessionPool, images: list, refs: list
) -> float:
    """Share of pixels whose labels equal the demo's fp32 full-frame labels, over all images."""
    same = total = 0
    for image, ref in zip(images, refs, strict=True):
        labels = segment_image(image, demo, pool, roi=path.roi, speed=path.speed).labels
        same += int(np.count_nonzero(labels == ref))
        total += ref.size
    return same / total


def _timed_rounds(
    paths: tuple[BenchPath, ...],
    models: dict[str, SegmentationModel],
    pool: SessionPool,
    images: list,
    repeats: int,
) -> dict[str, dict[str, Any]]:
    """Per path: median stage ms, total ms and process CPU ms per image, paths in turn."""
    runs: dict[str, list[tuple[dict[str, float], float, float]]] = {p.name: [] for p in paths}
    notes: dict[str, set[str]] = {p.name: set() for p in paths}
    for _ in range(repeats):
        for image in images:
            for p in paths:
                c0 = time.process_time()
                t0 = time.perf_counter()
                result = segment_image(image, models[p.export], pool, roi=p.roi, speed=p.speed)
                wall = (time.perf_counter() - t0) * 1000.0
                cpu = (time.process_time() - c0) * 1000.0
                runs[p.name].append((result.report.timings_ms, wall, cpu))
                notes[p.name].add(str(result.report.info.get("roi_note", "")))
    out = {}
    for p in paths:
        rows = runs[p.name]
        stages = {s: statistics.median(t.get(s, 0.0) for t, _, _ in rows) for s in STAGES}
        out[p.name] = {
            "stages_ms": {s: round(v, 1) for s, v in stages.items()},
            "total_ms": round(statistics.median(w for _, w, _ in rows), 1),
            "cpu_ms": round(statistics.median(c for _, _, c in rows), 1),
            "pre_post_share": round(1.0 - stages["infer"] / max(sum(stages.values()), 1e-9), 4),
            "roi_notes": sorted(notes[p.name]),
        }
    return out


def session_options(
    model: SegmentationModel, image: np.ndarray, speed: Speed, repeats: int = 1
) -> list[dict[str, Any]]:
    """What the ONNX Runtime session options that matter do for ``model`` at ``speed``'s input:
    threads, graph optimisation level, and loading a saved optimised model."""
    import tempfile

    import onnxruntime as ort

    tensor = preprocess_scaled(image, model, scale_factor(image.shape[:2], speed.long_side)).tensor
    level = ort.GraphOptimizationLevel
    rows = []
    with tempfile.TemporaryDirectory(prefix="crownscan-bench-") as tmp:
        saved = str(Path(tmp) / "optimised.onnx")
        src = str(model.onnx)
        variants = [
            ("threads 1, all optimisations", src, 1, level.ORT_ENABLE_ALL, saved),
            ("threads 2, basic optimisations", src, 2, level.ORT_ENABLE_BASIC, None),
            ("threads 2, extended optimisations", src, 2, level.ORT_ENABLE_EXTENDED, None),
            ("threads 2, all optimisations", src, 2, level.ORT_ENABLE_ALL, None),
            ("threads 2, saved optimised model", saved, 2, level.ORT_DISABLE_ALL, None),
        ]
        for name, source, threads, opt, save_to in variants:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.graph_optimization_level = opt
            options.log_severity_level = 3
            if save_to is not None:
                options.optimized_model_filepath = save_to
            t0 = time.perf_counter()
            session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
            created = (time.perf_counter() - t0) * 1000.0
            times = []
            for _ in range(repeats + 1):
                t0 = time.perf_counter()
                session.run(None, {model.input: tensor})
                times.append((time.perf_counter() - t0) * 1000.0)
            rows.append(
                {
                    "options": name,
                    "session_ms": round(created, 1),
                    "infer_ms": round(statistics.median(times[1:]), 1),
                }
            )
    return rows


def _spread(files: list[Path], count: int) -> list[Path]:
    """Up to ``count`` of ``files``, one per folder first (the sample cases), in order."""
    firsts = [f for i, f in enumerate(files) if f.parent not in {g.parent for g in files[:i]}]
    rest = [f for f in files if f not in firsts]
    return (firsts + rest)[: max(1, count)]


def pick_fast(rows: list[dict[str, Any]], floor: float) -> dict[str, Any]:
    """The fastest row (``total_ms``) whose ``agreement`` is at least ``floor``."""
    return min((r for r in rows if r["agreement"] >= floor), key=lambda r: r["total_ms"])


def segment_bench(
    threads: int = 0,
    repeats: int = 1,
    images: list[Path] | None = None,
    timing_images: int = 3,
    with_session_options: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time every path of :data:`PATHS` on the benchmark model, measure each one's agreement on
    the demo model, and pick the fast path; returns the figures as one JSON-able dict (with
    :func:`session_options` for the fast path's model when ``with_session_options``).

    Agreement uses every image; timing the first ``timing_images`` of them (one per sample case
    by default), ``repeats`` rounds each, after one warm-up run per ONNX Runtime session.
    """
    start = time.perf_counter()
    say = progress or (lambda _msg: None)
    files = list(images) if images else sample_images()
    if not files:
        raise ModelError(None, "no sample images to benchmark on (resources/samples)")
    pictures = [load_image(f) for f in files]
    models = {e: benchmark_model(e) for e in ("labels", "logits")}
    demo = load_manifest(bundled_models_dir() / "scanseg_demo.json")
    assert isinstance(demo, SegmentationModel)
    pool = SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=threads))
    timed_files = _spread(files, timing_images)
    figures: dict[str, Any] = {
        "machine": machine(),
        "images": [f"{f.parent.name}/{f.name}" for f in files],
        "timing_images": [f"{f.parent.name}/{f.name}" for f in timed_files],
    }

    t0 = time.perf_counter()
    say("building or finding the int8 models")
    for model in (models["logits"], demo):
        int8_path(model)
    figures["int8_build_s"] = round(time.perf_counter() - t0, 1)

    say("agreement on the demo model")
    refs = [segment_image(im, demo, pool, roi=False, speed=Speed()).labels for im in pictures]
    agreement = {}
    for p in PATHS:
        if p.roi or p.speed != Speed():
            agreement[p.name] = round(_agreement(p, demo, pool, pictures, refs), 6)
        else:
            agreement[p.name] = 1.0

    say("timing the benchmark model")
    timed_pictures = [pictures[files.index(f)] for f in timed_files]
    warmed = set()
    for p in PATHS:  # one full-size run per session: created, first-run allocations done
        if (p.export, p.speed.precision) not in warmed:
            warmed.add((p.export, p.speed.precision))
            full = Speed(p.speed.precision, None)
            segment_image(timed_pictures[0], models[p.export], pool, roi=False, speed=full)
    timed = _timed_rounds(PATHS, models, pool, timed_pictures, repeats)

    base = timed[PATHS[0].name]["total_ms"]
    rows = []
    for p in PATHS:
        row = {"path": p.name, **timed[p.name], "agreement": agreement[p.name]}
        row["speedup"] = round(base / row["total_ms"], 3)
        row["cpu_speedup"] = round(timed[PATHS[0].name]["cpu_ms"] / row["cpu_ms"], 3)
        rows.append(row)
    figures["paths"] = rows
    fast = pick_fast(rows, AGREEMENT_FLOOR)
    figures.update(
        {
            "full_ms": base,
            "fast_ms": fast["total_ms"],
            "speedup": fast["speedup"],
            "cpu_speedup": fast["cpu_speedup"],
            "agreement": fast["agreement"],
            "pre_post_share": fast["pre_post_share"],
            "fast_path": fast["path"],
            "agreement_floor": AGREEMENT_FLOOR,
        }
    )
    if with_session_options:
        say("session options")
        fast_path = next(p for p in PATHS if p.name == fast["path"])
        model = models[fast_path.export]
        if fast_path.speed.precision == "int8":
            model = replace(model, onnx=int8_path(model))
        figures["session_options"] = session_options(model, pictures[0], fast_path.speed)
    figures["machine"]["load_average_end"] = figures["machine"]["load_average"]
    if hasattr(os, "getloadavg"):
        figures["machine"]["load_average_end"] = round(os.getloadavg()[0], 2)
    figures["seconds"] = round(time.perf_counter() - start, 1)
    return figures


def table(figures: dict[str, Any]) -> str:
    """The figures as Markdown tables, for a person."""
    m = figures["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores, load {m['load_average']} -> "
        f"{m['load_average_end']}, ONNX Runtime {m['onnxruntime']} (CPU)",
        f"agreement on {len(figures['images'])} sample images (1400x1600), timing on "
        f"{len(figures['timing_images'])}: median ms per image; int8 models built or found in "
        f"{figures['int8_build_s']} s; whole bench {figures['seconds']} s",
        "",
        "| path | " + " | ".join(f"{s} ms" for s in STAGES) + " | total ms | CPU ms | "
        "speedup | CPU speedup | pre+post | demo agreement |",
        "|---|" + "---:|" * (len(STAGES) + 6),
    ]
    for r in figures["paths"]:
        cells = " | ".join(f"{r['stages_ms'][s]:.1f}" for s in STAGES)
        lines.append(
            f"| {r['path']} | {cells} | {r['total_ms']:.1f} | {r['cpu_ms']:.1f} | "
            f"{r['speedup']:.2f}x | {r['cpu_speedup']:.2f}x | {r['pre_post_share']:.1%} | "
            f"{r['agreement']:.4%} |"
        )
    lines += [
        "",
        f"fast path: {figures['fast_path']}: {figures['fast_ms']:.1f} ms against "
        f"{figures['full_ms']:.1f} ms, {figures['speedup']:.2f}x (CPU time "
        f"{figures['cpu_speedup']:.2f}x), agreement {figures['agreement']:.4%} on the demo "
        f"model, pre+post {figures['pre_post_share']:.1%} of the total",
    ]
    notes = {n for r in figures["paths"] for n in r["roi_notes"] if n.startswith("roi (")}
    lines += [f"ROI: {n}" for n in sorted(notes)]
    if figures.get("session_options"):
        lines += [
            "",
            f"session options, fast path's model ({figures['fast_path']}):",
            "",
            "| options | session ms | infer ms |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {r['options']} | {r['session_ms']:.1f} | {r['infer_ms']:.1f} |"
            for r in figures["session_options"]
        ]
    return "\n".join(lines)
