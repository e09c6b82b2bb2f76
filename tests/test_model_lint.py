"""Model lint: graphs compared with their manifests, warnings naming the node."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from seg_builders import make_model

from app.cli import main
from app.core.manifest import load_manifest
from app.core.model_lint import lint_model
from tests.onnx_builders import crown_manifest, identity_crown_model, save, write_manifest


def _crown(tmp_path: Path, stem: str, model: onnx.ModelProto, **overrides):
    save(model, tmp_path / f"{stem}.onnx")
    data = crown_manifest(tmp_path, f"{stem}.onnx", **overrides)
    return load_manifest(write_manifest(tmp_path, data, stem))


def _named_grid_sample(model: onnx.ModelProto) -> onnx.ModelProto:
    for node in model.graph.node:
        if node.op_type == "GridSample":
            node.name = "encoder/grid_sample_7"
    return model


def test_lint_passes_a_model_exported_as_declared(tmp_path) -> None:
    spec = _crown(tmp_path, "good", identity_crown_model("native", align_corners=True))
    assert spec.sampling.align_corners is True
    assert lint_model(spec) == []


def test_lint_catches_grid_sample_exported_with_the_wrong_align_corners(tmp_path) -> None:
    wrong = _named_grid_sample(identity_crown_model("native", align_corners=False))
    spec = _crown(tmp_path, "wrong", wrong)
    warnings = lint_model(spec)
    assert len(warnings) == 1
    assert "wrong.onnx" in warnings[0]
    assert "GridSample node 'encoder/grid_sample_7'" in warnings[0]
    assert "align_corners=0" in warnings[0]


def test_lint_findings_are_kept_on_disk_per_file_contents(tmp_path, monkeypatch) -> None:
    """A later process reads the findings back without reading the graph (importing onnx
    stalls a run for over a second); a changed model file is read again."""
    from app.core import model_lint

    spec = _crown(tmp_path, "m", identity_crown_model("native", align_corners=False))
    first = lint_model(spec)
    assert len(first) == 1 and "align_corners=0" in first[0]
    model_lint._cache.clear()
    monkeypatch.setattr(model_lint, "_crown", lambda spec: pytest.fail("graph read again"))
    assert lint_model(spec) == first
    monkeypatch.undo()
    model_lint._cache.clear()
    save(identity_crown_model("native", align_corners=True), tmp_path / "m.onnx")
    assert lint_model(spec) == []


def test_lint_catches_padding_mode_and_mode(tmp_path) -> None:
    model = _named_grid_sample(identity_crown_model("native"))
    for node in model.graph.node:
        if node.op_type == "GridSample":
            for a in node.attribute:
                if a.name == "padding_mode":
                    a.s = b"border"
                if a.name == "mode":
                    a.s = b"nearest"
    warnings = lint_model(_crown(tmp_path, "pad", model))
    assert any("'border'" in w and "padding_mode 'zeros'" in w for w in warnings)
    assert any("'nearest'" in w for w in warnings)
    spec = _crown(tmp_path, "declared", model,
                  sampling={"padding_mode": "border", "mode": "nearest"})  # fmt: skip
    assert lint_model(spec) == []


def test_lint_checks_names_and_static_sizes(tmp_path) -> None:
    model = identity_crown_model("plain", static_resolution=32)
    spec = _crown(tmp_path, "static", model, voxel_resolution=24)
    assert any("voxel_resolution is 24" in w for w in lint_model(spec))
    spec = _crown(tmp_path, "names", model, voxel_resolution=32,
                  inputs={"voxels": "vox", "points": "p"}, output="logits")  # fmt: skip
    warnings = lint_model(spec)
    assert any("no input 'vox'" in w for w in warnings)
    assert any("no output 'logits'" in w for w in warnings)


def test_lint_checks_segmentation_output_kind_and_input(tmp_path) -> None:
    spec = make_model(tmp_path, "labels", output_kind="labels")
    assert lint_model(spec) == []
    import dataclasses

    as_logits = dataclasses.replace(spec, output_kind="logits")
    assert any("is integer; output_kind is 'logits'" in w for w in lint_model(as_logits))
    fixed = make_model(tmp_path, "fixed", input_size=(64, 96))
    assert lint_model(fixed) == []
    assert any(
        "fixed at [64, 96]" in w for w in lint_model(dataclasses.replace(fixed, input_size=None))
    )


def _frozen_resize_model(path: Path) -> Path:
    """A segmentation graph whose Resize has constant output sizes (the HRNet int() pitfall)."""
    inits = [
        numpy_helper.from_array(np.zeros((3, 3, 1, 1), np.float32), "w"),
        numpy_helper.from_array(np.array([1, 3, 64, 64], np.int64), "sizes"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["s"]),
        helper.make_node(
            "Resize", ["s", "", "", "sizes"], ["output"], name="head/upsample", mode="linear"
        ),  # fmt: skip
    ]
    graph = helper.make_graph(
        nodes,
        "frozen",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 64, 64])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_lint_flags_a_resize_frozen_at_export(tmp_path) -> None:
    from seg_builders import write_manifest as seg_manifest

    _frozen_resize_model(tmp_path / "frozen.onnx")
    spec = load_manifest(seg_manifest(tmp_path, "frozen.onnx"))
    warnings = lint_model(spec)
    assert len(warnings) == 1 and "Resize node 'head/upsample'" in warnings[0]


def test_models_check_reports_and_fails(tmp_path, capsys) -> None:
    _crown(tmp_path, "good", identity_crown_model("native"))
    assert main(["models", "--models", str(tmp_path), "--check"]) == 0
    _crown(
        tmp_path, "wrong", _named_grid_sample(identity_crown_model("native", align_corners=False))
    )
    capsys.readouterr()
    assert main(["models", "--models", str(tmp_path), "--check", "--json"]) == 3
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["good"]["lint"] == []
    assert "encoder/grid_sample_7" in rows["wrong"]["lint"][0]


@pytest.mark.parametrize("sampler", ["native", "plain"])
def test_lint_runs_when_a_crown_model_is_loaded(tmp_path, sampler) -> None:
    import trimesh

    from app.core.crown.meshio import Mesh
    from app.core.crown.pipeline import generate_crown
    from app.core.runtime import RuntimeConfig, SessionPool

    model = (
        identity_crown_model(sampler, align_corners=False)
        if sampler == "native"
        else identity_crown_model(sampler)
    )
    generation = {"resolution": 17, "threshold": 0.5, "batch_points": 100000}
    spec = _crown(
        tmp_path, sampler, _named_grid_sample(model), voxel_resolution=16, generation=generation
    )
    box = trimesh.creation.box([10.0, 8.0, 6.0])
    pool = SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=1))
    result = generate_crown(Mesh(box.vertices, box.faces), spec, pool)
    lint = result.report.info["model_lint"]
    assert (len(lint) == 1 and "align_corners=0" in lint[0]) if sampler == "native" else lint == []
