"""Faulty models built with onnx.helper: NaN outputs, broken files beside good ones, folders
where nothing loads. A wrong result is never handed over; the error names the model file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import trimesh
from onnx import helper, numpy_helper
from seg_builders import build_colour_model, patch_image
from seg_builders import write_manifest as write_seg_manifest

from app.cli import main
from app.core.errors import ModelError, PipelineError
from app.core.manifest import find_model, load_manifest
from app.core.runtime import RuntimeConfig, SessionPool
from app.core.segment.pipeline import run_segment
from tests.onnx_builders import crown_manifest, identity_crown_model, save, write_manifest


def _nan_where(model: onnx.ModelProto, output: str, cond_nodes, cond: str) -> onnx.ModelProto:
    """``model`` with its ``output`` replaced by NaN wherever tensor ``cond`` is true."""
    for node in model.graph.node:
        node.output[:] = [f"{o}_raw" if o == output else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(np.nan, np.float32), "nan"))
    model.graph.node.extend(cond_nodes)
    model.graph.node.append(helper.make_node("Where", [cond, "nan", f"{output}_raw"], [output]))
    onnx.checker.check_model(model)
    return model


def nan_crown_model(x_above: float) -> onnx.ModelProto:
    """The identity crown model, NaN at every query point whose first coordinate (IF-Net
    order: z) is above ``x_above`` (-10: everywhere)."""
    model = identity_crown_model()
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(0, np.int64), "axis0"),
            numpy_helper.from_array(np.array(x_above, np.float32), "cut"),
        ]
    )
    nodes = [
        helper.make_node("Gather", ["p", "axis0"], ["p0"], axis=2),
        helper.make_node("Greater", ["p0", "cut"], ["is_nan"]),
    ]
    return _nan_where(model, "out", nodes, "is_nan")


def _crown_folder(folder: Path, onnx_model: onnx.ModelProto, stem: str = "crown") -> Path:
    save(onnx_model, folder / f"{stem}.onnx")
    data = crown_manifest(
        folder,
        f"{stem}.onnx",
        voxel_resolution=24,
        frame={"mode": "fixed", "size_mm": 20.0, "center": "bbox"},
        generation={"resolution": 40, "threshold": 0.5, "batch_points": 100_000},
    )
    return write_manifest(folder, data, stem)


def _box_stl(folder: Path) -> Path:
    path = folder / "scan.stl"
    path.write_bytes(trimesh.creation.box((9.0, 7.0, 11.0)).export(file_type="stl"))
    return path


@pytest.mark.parametrize("x_above", [0.2, -10.0], ids=["part", "all"])
def test_nan_crown_output_is_an_error_naming_the_model_and_count(tmp_path, capsys, x_above):
    manifest = _crown_folder(tmp_path, nan_crown_model(x_above))
    out = tmp_path / "crown.stl"
    code = main(["crown", str(_box_stl(tmp_path)), "-o", str(out), "--model", str(manifest),
                 "--providers", "cpu", "--threads", "1"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1
    onnx_path = load_manifest(manifest).onnx
    assert err[0].startswith(f"error: {onnx_path}: the model returned ")
    assert "non-finite values (NaN or infinity)" in err[0]
    count = int(err[0].split("returned ")[1].split()[0].replace(",", ""))
    assert count > 0 and (x_above > 0 or count >= 40**3)
    assert "no crown in the frame" not in err[0]
    assert not out.exists()


def test_empty_surface_says_what_the_model_returned(tmp_path, capsys):
    manifest = _crown_folder(tmp_path, identity_crown_model())
    code = main(["crown", str(_box_stl(tmp_path)), "-o", str(tmp_path / "o.stl"), "--model",
                 str(manifest), "--providers", "cpu", "--center", "300", "0", "0"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 4
    # the identity model gives k * (0 - 0.5) = -5 outside the scan
    assert "all 64,000 grid values are below the decision level 0" in err
    assert "ranging from -5 to -5" in err and "check the frame centre" in err


def nan_seg_model(path: Path) -> Path:
    build_colour_model(path)
    model = onnx.load(str(path))
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.9, np.float32), "cut"))
    nodes = [helper.make_node("Greater", ["output_raw", "cut"], ["is_nan"])]
    onnx.save(_nan_where(model, "output", nodes, "is_nan"), str(path))
    return path


def test_nan_segmentation_output_writes_no_mask(tmp_path):
    onnx_path = nan_seg_model(tmp_path / "nan_seg.onnx")
    spec = load_manifest(write_seg_manifest(tmp_path, "nan_seg.onnx"))
    image = tmp_path / "scan.png"
    from PIL import Image

    Image.fromarray(patch_image(64, 80, 8)).save(image)
    mask = tmp_path / "mask.png"
    pool = SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=1))
    with pytest.raises(PipelineError) as err:
        run_segment(image, spec, pool, mask_path=mask, roi=False)
    assert err.value.path == onnx_path.resolve()
    assert "non-finite values (NaN or infinity)" in err.value.message
    assert int(err.value.message.split("returned ")[1].split()[0].replace(",", "")) > 0
    assert not mask.exists()


def _broken_onnx(path: Path) -> None:
    path.write_bytes(b"\x08\x07this is not a protobuf model")


def test_broken_model_sorting_first_does_not_break_the_default(tmp_path, capsys):
    _crown_folder(tmp_path, identity_crown_model(), "b_good")
    bad = _crown_folder(tmp_path, identity_crown_model(), "a_broken")
    _broken_onnx(tmp_path / "a_broken.onnx")
    assert find_model(None, "crown", tmp_path).id == "b_good"
    assert main(["models", "--models", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(m["id"], m["default"]) for m in out["models"]] == [("b_good", True)]
    assert [s["manifest"] for s in out["skipped"]] == [str(bad.resolve())]
    assert "cannot load model" in out["skipped"][0]["reason"]
    assert main(["models", "--models", str(tmp_path)]) == 0
    text = capsys.readouterr()
    assert "* b_good" in text.out and "a_broken.json: skipped: " in text.err


def test_model_whose_graph_lacks_the_declared_output_is_skipped(tmp_path):
    _crown_folder(tmp_path, identity_crown_model(), "b_good")
    wrong = _crown_folder(tmp_path, identity_crown_model(), "a_wrong")
    data = json.loads(wrong.read_text())
    wrong.write_text(json.dumps({**data, "output": "logits"}))
    assert find_model(None, "crown", tmp_path).id == "b_good"
    with pytest.raises(ModelError, match="has no output named 'logits'"):
        find_model("a_wrong", "crown", tmp_path)


def test_explicit_default_and_preferred_model_win_over_file_order(tmp_path):
    _crown_folder(tmp_path, identity_crown_model(), "a_first")
    second = _crown_folder(tmp_path, identity_crown_model(), "b_second")
    assert find_model(None, "crown", tmp_path).id == "a_first"
    second.write_text(json.dumps({**json.loads(second.read_text()), "default": True}))
    assert find_model(None, "crown", tmp_path).id == "b_second"
    assert find_model(None, "crown", tmp_path, preferred="a_first").id == "a_first"
    # a preferred model that does not load falls back to the default
    _broken_onnx(tmp_path / "a_first.onnx")
    assert find_model(None, "crown", tmp_path, preferred="a_first").id == "b_second"


def test_folder_where_nothing_loads_lists_every_skipped_model_and_why(tmp_path):
    _crown_folder(tmp_path, identity_crown_model(), "a_broken")
    _broken_onnx(tmp_path / "a_broken.onnx")
    bad = crown_manifest(tmp_path, "a_broken.onnx", voxel_resolutoin=3)
    write_manifest(tmp_path, bad, "b_typo")
    with pytest.raises(ModelError) as err:
        find_model(None, "crown", tmp_path)
    text = str(err.value)
    assert "no usable crown model" in text
    assert "a_broken.json (" in text and "cannot load model" in text
    assert "b_typo.json (" in text and "voxel_resolutoin" in text


def test_model_checks_are_cached_by_file_content(tmp_path, monkeypatch):
    from app.core import model_choice

    _crown_folder(tmp_path, identity_crown_model(k=7.25), "m")  # content no other test has
    spec = load_manifest(tmp_path / "m.json")
    calls = []
    real = model_choice._load_problem
    monkeypatch.setattr(model_choice, "_load_problem", lambda s: calls.append(s) or real(s))
    model_choice._memory.clear()
    assert model_choice.model_problem(spec) is None
    model_choice._memory.clear()  # a new process: the on-disk cache answers
    assert model_choice.model_problem(spec) is None
    assert len(calls) == 1
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07not a model, and no other test's bytes")
    assert "cannot load model" in model_choice.model_problem(spec)
    assert len(calls) == 2
