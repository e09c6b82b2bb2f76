"""SessionPool: one shared session per model, and the providers really in use reported."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from app.core import runtime
from app.core.errors import ModelError, PipelineError
from app.core.runtime import RuntimeConfig, SessionPool


def add_one_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph([helper.make_node("Add", ["x", "one"], ["y"])], "g", [x], [y], [one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_pool_shares_one_session_across_threads(tmp_path: Path) -> None:
    path = add_one_model(tmp_path / "m.onnx")
    pool = SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=1))
    got = []
    threads = [threading.Thread(target=lambda: got.append(pool.get(path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in got}) == 1
    assert len(pool.loaded()) == 1
    out = got[0].run(["y"], {"x": np.zeros((2, 3), np.float32)})[0]
    np.testing.assert_array_equal(out, np.ones((2, 3), np.float32))
    assert got[0].providers == ["cpu"]


def test_providers_read_back_not_assumed(tmp_path: Path) -> None:
    """Ask for TensorRT and CUDA; report only what the session really got, with the reasons.

    Without a GPU (CI) ONNX Runtime drops CUDA without an error: a pool that reported its
    request instead of reading the session back would claim CUDA here."""
    path = add_one_model(tmp_path / "m.onnx")
    made = SessionPool().get(path)
    real = [runtime.SHORT_NAMES[p] for p in made.session.get_providers()]
    assert made.providers == real
    assert made.requested == ["tensorrt", "cuda", "cpu"]
    assert made.providers[-1] == "cpu"
    for p in ("tensorrt", "cuda"):
        if p not in made.providers:
            assert any(n.startswith(f"{p}:") for n in made.notes)


def test_available_providers_are_the_known_ones_in_the_builds_order(monkeypatch) -> None:
    """Providers the app cannot configure (OpenVINO, Azure...) are never requested."""
    import onnxruntime as ort

    build = ["AzureExecutionProvider", "CUDAExecutionProvider", "OpenVINOExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: [*build, "CPUExecutionProvider"])
    assert runtime.available_providers() == ["cuda", "cpu"]


def test_fallback_reported_when_gpu_provider_is_dropped(tmp_path: Path, monkeypatch) -> None:
    """ONNX Runtime may drop CUDA silently; the pool must notice and say so."""
    import onnxruntime as ort

    path = add_one_model(tmp_path / "m.onnx")
    asked = {}
    real_session = ort.InferenceSession

    class Dropping(real_session):
        def __init__(self, p, sess_options=None, providers=None, **kw):
            asked["providers"] = [e[0] for e in providers]
            asked["fallback"] = kw.get("enable_fallback")
            super().__init__(p, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", Dropping)
    monkeypatch.setattr(
        runtime, "available_providers", lambda: ["tensorrt", "cuda", "cpu"], raising=True
    )
    made = SessionPool(RuntimeConfig(cache_dir=tmp_path / "trt")).get(path)
    assert asked["providers"] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert asked["fallback"] == 0
    assert made.providers == ["cpu"]
    assert any(n.startswith("cuda: could not be initialised") for n in made.notes)
    assert any(n.startswith("tensorrt: could not be initialised") for n in made.notes)
    assert (tmp_path / "trt").is_dir()


def test_tensorrt_options_use_fp16_and_user_cache(tmp_path: Path) -> None:
    name, opts = runtime._provider_entry("tensorrt", RuntimeConfig(cache_dir=tmp_path))
    assert name == "TensorrtExecutionProvider"
    assert opts["trt_fp16_enable"] is True
    assert opts["trt_engine_cache_enable"] is True
    assert opts["trt_engine_cache_path"] == str(tmp_path)


def test_provider_missing_from_build_is_noted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "available_providers", lambda: ["cpu"])
    made = SessionPool(RuntimeConfig(preference=("cuda", "cpu"))).get(
        add_one_model(tmp_path / "m.onnx")
    )
    assert made.providers == ["cpu"]
    assert made.notes == ["cuda: not in this ONNX Runtime build"]


def test_bad_model_files_are_model_errors(tmp_path: Path) -> None:
    pool = SessionPool(RuntimeConfig(preference=("cpu",)))
    with pytest.raises(ModelError, match="does not exist") as err:
        pool.get(tmp_path / "absent.onnx")
    assert err.value.path == (tmp_path / "absent.onnx").resolve()
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model")
    with pytest.raises(ModelError, match="cannot load model") as err:
        pool.get(junk)
    assert err.value.path == junk.resolve()


def test_run_failure_is_pipeline_error(tmp_path: Path) -> None:
    made = SessionPool(RuntimeConfig(preference=("cpu",))).get(add_one_model(tmp_path / "m.onnx"))
    with pytest.raises(PipelineError, match="inference failed"):
        made.run(["y"], {"x": np.zeros((2, 4), np.float32)})


def test_config_rejects_unknown_provider() -> None:
    with pytest.raises(ValueError, match="provider preference"):
        RuntimeConfig(preference=("directml",))


def test_provider_that_fails_to_start_is_skipped_with_reason(tmp_path: Path, monkeypatch) -> None:
    """TensorRT without its libraries raises at creation; the pool steps down and says why."""
    import onnxruntime as ort

    path = add_one_model(tmp_path / "m.onnx")
    tried = []
    real_session = ort.InferenceSession

    class Failing(real_session):
        def __init__(self, p, sess_options=None, providers=None, **kw):
            names = [e[0] for e in providers]
            tried.append(names)
            if "TensorrtExecutionProvider" in names:
                raise RuntimeError("detail\nPlease install TensorRT libraries")
            super().__init__(p, sess_options=sess_options, providers=["CPUExecutionProvider"])

    monkeypatch.setattr(ort, "InferenceSession", Failing)
    monkeypatch.setattr(runtime, "available_providers", lambda: ["tensorrt", "cuda", "cpu"])
    monkeypatch.setattr(runtime, "missing_gpu_library", lambda provider: None)
    made = SessionPool(RuntimeConfig(cache_dir=tmp_path)).get(path)
    assert tried[0][0] == "TensorrtExecutionProvider"
    assert tried[1] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert made.providers == ["cpu"]
    assert made.notes[0] == "tensorrt: could not be initialised: Please install TensorRT libraries"
    assert made.notes[1].startswith("cuda: could not be initialised")
