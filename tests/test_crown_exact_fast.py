"""The crown fast path against the dense grid, and the int8 decoder against fp32.

Coarse-to-fine must give the dense occupancy grid exactly (0 differing cells) with the trained
demo model on every sample case at generation resolutions 257 and 129, and with the IF-Net
benchmark model at 129. The demo's dense 257^3 grid (17 M points a case) is evaluated once per
case and serves both resolutions (every other point of it is the 129 grid, to the bit), by one
single-threaded process per core in batches of :data:`DENSE_BATCH` points, the cheapest way
through the same model path on this size of decoder. The int8 decoder is an option: it must
agree with fp32 above a floor and never run unless asked for.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from app.cli import main as cli_main
from app.core.crown.bench import crown_scan
from app.core.crown.bench_model import build, ensure
from app.core.crown.decode import CrownEvaluator, decision_level, decision_margin
from app.core.crown.frame import make_frame
from app.core.crown.int8_decoder import dense_layers_as_matmul
from app.core.crown.meshio import load_mesh
from app.core.crown.surface import evaluate_coarse_to_fine, evaluate_dense, grid_points
from app.core.crown.voxelize import grid_axis, voxelize
from app.core.manifest import CrownModel, load_manifest
from app.core.runtime import RuntimeConfig, SessionPool

ROOT = Path(__file__).resolve().parents[1]
CASES = sorted((ROOT / "resources" / "samples").glob("case_*/scan.ply"))
DEMO = ROOT / "models" / "crown_demo.json"
RES = 129
DEMO_RES = 257
DENSE_BATCH = 1024
"""Points per decoder run for the dense grids: on one thread the demo decoder did about twice
as many points per CPU second in batches of 1024 as in the 57k its memory budget allows."""


@pytest.fixture(scope="module")
def pool() -> SessionPool:
    return SessionPool(RuntimeConfig(preference=("cpu",)))


def _evaluator(spec: CrownModel, scan, pool: SessionPool) -> CrownEvaluator:
    frame = make_frame(scan.vertices, spec.frame)
    voxels = voxelize(frame.to_unit(scan.vertices), scan.faces, spec.voxel_resolution,
                      spec.voxelization)  # fmt: skip
    return CrownEvaluator(spec, pool, voxels)


def _occupancy_both_ways(spec: CrownModel, scan, pool: SessionPool):
    gen = spec.generation
    ev = _evaluator(spec, scan, pool)
    level = decision_level(gen.threshold, spec.output_kind)
    margin = decision_margin(gen.threshold, gen.refine_margin, spec.output_kind)
    fast, stats = evaluate_coarse_to_fine(ev.evaluate, RES, gen.coarse_resolution, level,
                                          margin=margin)  # fmt: skip
    dense = evaluate_dense(ev.evaluate, RES)
    return dense > level, fast > level, sum(stats.evaluated)


def test_there_are_sample_cases() -> None:
    assert len(CASES) >= 3


_worker: CrownEvaluator | None = None


def _one_thread_evaluator(scan_path: Path) -> CrownEvaluator:
    one_thread = SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=1))
    ev = _evaluator(load_manifest(DEMO), load_mesh(scan_path), one_thread)
    ev.batch_points = DENSE_BATCH
    return ev


def _start_worker(scan_path: Path) -> None:
    global _worker
    _worker = _one_thread_evaluator(scan_path)


def _dense_planes(planes: range) -> np.ndarray:
    assert _worker is not None
    r = DEMO_RES
    flat = np.arange(planes.start * r * r, planes.stop * r * r)
    return _worker.evaluate(grid_points(r, flat)).reshape(len(planes), r, r)


def _demo_dense(scan_path: Path) -> np.ndarray:
    """The demo model's dense DEMO_RES^3 grid for a case, x-planes shared out over one
    single-threaded process per core (the same model, plan and batch size as in this one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = max(1, min(4, cores or 1))
    tasks = [range(x, min(x + 8, DEMO_RES)) for x in range(0, DEMO_RES, 8)]
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, spawn, _start_worker, (scan_path,)) as executor:
        return np.concatenate(list(executor.map(_dense_planes, tasks)))


@pytest.mark.parametrize("scan_path", CASES, ids=[p.parent.name for p in CASES])
def test_coarse_to_fine_equals_dense_with_the_demo_model(scan_path: Path) -> None:
    ev = _one_thread_evaluator(scan_path)
    assert ev.plan.split
    gen = ev.model.generation
    level = decision_level(gen.threshold, ev.model.output_kind)
    margin = decision_margin(gen.threshold, gen.refine_margin, ev.model.output_kind)
    dense = _demo_dense(scan_path) > level
    assert dense.any() and not dense.all()
    assert np.array_equal(grid_axis(DEMO_RES)[::2], grid_axis(RES))
    for res, grid in ((DEMO_RES, dense), (RES, dense[::2, ::2, ::2])):
        fast, stats = evaluate_coarse_to_fine(ev.evaluate, res, gen.coarse_resolution, level,
                                              margin=margin)  # fmt: skip
        differing = int(((fast > level) != grid).sum())
        assert differing == 0, f"{differing} differing cells at {res}"
        assert sum(stats.evaluated) < 0.1 * grid.size


def test_coarse_to_fine_equals_dense_with_the_benchmark_model(tmp_path, pool) -> None:
    spec = load_manifest(ensure(tmp_path, "native"))
    dense, fast, points = _occupancy_both_ways(spec, crown_scan(), pool)
    assert dense.sum() > 0.05 * dense.size
    assert int((dense != fast).sum()) == 0
    assert points < 0.25 * dense.size


def test_dense_layers_as_matmul_match_the_convs() -> None:
    model = build("native", seed=5, resolution=12, stages=((1, (3,)), (3, (4,))), hidden=16)
    rewritten = onnx.ModelProto.FromString(model.SerializeToString())
    names = dense_layers_as_matmul(rewritten)
    assert len(names) == 4  # the 1x1 Conv layers of the MLP, not the 3x3x3 encoder convs
    assert "Conv" in {n.op_type for n in rewritten.graph.node}
    rng = np.random.default_rng(2)
    feed = {"x": rng.uniform(0, 1, (1, 12, 12, 12)).astype(np.float32),
            "p": rng.uniform(-1.2, 1.2, (1, 500, 3)).astype(np.float32)}  # fmt: skip
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
           .run(None, feed)[0] for m in (model, rewritten)]  # fmt: skip
    assert np.abs(run[0]).max() > 1.0
    np.testing.assert_allclose(run[1], run[0], atol=1e-5, rtol=0)


def test_int8_decoder_is_an_option_that_agrees_with_fp32(pool) -> None:
    spec = load_manifest(DEMO)
    assert spec.generation.decoder_int8 is False
    scan = load_mesh(CASES[0])
    fp32 = _evaluator(spec, scan, pool)
    assert "int8" not in fp32.plan.label
    int8_spec = dataclasses.replace(
        spec, generation=dataclasses.replace(spec.generation, decoder_int8=True)
    )
    int8 = _evaluator(int8_spec, scan, pool)
    assert int8.plan.label.endswith("+int8") and int8.plan.int8 is not None
    assert fp32.plan.decoder == int8.plan.decoder  # the fp32 part stays what the plan names
    ops = {n.op_type for n in onnx.load(str(int8.plan.int8)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops or "DynamicQuantizeMatMul" in ops

    level = decision_level(spec.generation.threshold, spec.output_kind)
    margin = decision_margin(spec.generation.threshold, 2.0, spec.output_kind)
    grids = [evaluate_coarse_to_fine(ev.evaluate, RES, 33, level, margin=margin)[0] > level
             for ev in (fp32, int8)]  # fmt: skip
    differing = int((grids[0] != grids[1]).sum())
    occupied = int(grids[0].sum())
    assert differing <= 0.005 * occupied  # 164 of 67286 measured (case_001)
    assert not np.array_equal(fp32.evaluate(np.zeros((4, 3))), int8.evaluate(np.zeros((4, 3))))


def test_decoder_memory_is_estimated_for_the_demo_model(pool) -> None:
    spec = load_manifest(DEMO)
    ev = _evaluator(spec, load_mesh(CASES[0]), pool)
    assert ev.plan.bytes_per_point is not None and ev.plan.bytes_per_point > 0
    assert ev.batch_points < spec.generation.batch_points  # the budget binds, not the cap
    graph = onnx.load(str(ev.plan.decoder)).graph
    read = {x for n in graph.node for x in n.input} | {o.name for o in graph.output}
    unread = [n.op_type for n in graph.node if not any(o in read for o in n.output)]
    assert unread == []  # the rewritten samplers' channel-expanded indices are gone


def test_bench_segment_without_its_module_is_one_clear_error(monkeypatch, capsys) -> None:
    import app.core.segment

    monkeypatch.delattr(app.core.segment, "bench", raising=False)
    monkeypatch.setitem(sys.modules, "app.core.segment.bench", None)
    assert cli_main(["bench", "segment", "--json"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "segmentation bench is not part of this build" in err[0]
    assert cli_main(["bench", "crown", "--resolution", "4"]) == 2
    assert "--resolution must be at least 9" in capsys.readouterr().err


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.9])
def test_margin_for_probability_outputs_stays_inside_the_logit_window(threshold: float) -> None:
    def logit(p: float) -> float:
        return float(np.log(p / (1 - p)))

    m = decision_margin(threshold, 2.0, "probability")
    sides = [abs(logit(threshold + s * m) - logit(threshold)) for s in (-1, 1)]
    assert max(sides) == pytest.approx(2.0) and min(sides) <= 2.0
    assert decision_margin(threshold, 2.0, "logits") == 2.0
    assert decision_margin(1.0, 2.0, "probability") == 0.0
