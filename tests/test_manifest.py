"""Manifest validation: every key checked, errors name the file and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core.errors import ModelError
from app.core.manifest import (
    Checks,
    CrownModel,
    PostProcess,
    SegmentationModel,
    find_model,
    load_manifest,
    scan_models,
)

CROWN = {
    "kind": "crown",
    "name": "Test crown",
    "version": "1",
    "onnx": "crown.onnx",
    "inputs": {"voxels": "x", "points": "p"},
    "output": "out",
    "output_kind": "logits",
    "voxel_resolution": 128,
    "voxelization": "solid",
    "frame": {"mode": "fixed", "size_mm": 20.0, "center": "bbox"},
    "point_convention": "ifnet",
    "generation": {"resolution": 256, "threshold": 0.5, "batch_points": 200000},
    "smoothing": {"method": "taubin", "iterations": 10},
}

SEG = {
    "kind": "segmentation",
    "name": "Test seg",
    "version": "1",
    "onnx": "seg.onnx",
    "input": "input",
    "output": "output",
    "input_size": [1400, 1600],
    "resize": "stretch",
    "mean": [123.675, 116.28, 103.53],
    "std": [58.395, 57.12, 57.375],
    "to_rgb": True,
    "output_kind": "logits",
    "classes": [
        {"name": "background", "color": [0, 0, 0]},
        {"name": "gingiva", "color": [230, 120, 120]},
        {"name": "tooth", "color": [240, 230, 140]},
    ],
}


def write(folder: Path, name: str, data: dict, onnx_names=("crown.onnx", "seg.onnx")) -> Path:
    for n in onnx_names:
        (folder / n).write_bytes(b"placeholder")
    path = folder / name
    path.write_text(json.dumps(data))
    return path


def test_crown_manifest_as_design_doc(tmp_path: Path) -> None:
    spec = load_manifest(write(tmp_path, "crown_a.json", CROWN))
    assert isinstance(spec, CrownModel)
    assert spec.id == "crown_a"
    assert spec.onnx == (tmp_path / "crown.onnx").resolve()
    assert spec.inputs == {"voxels": "x", "points": "p"}
    assert spec.frame.mode == "fixed" and spec.frame.size_mm == 20.0
    assert spec.frame.center == "bbox"
    assert spec.generation.resolution == 256 and spec.generation.batch_points == 200000
    assert spec.generation.coarse_resolution is None
    assert spec.smoothing.method == "taubin" and spec.smoothing.iterations == 10


def test_crown_explicit_centre_and_defaults(tmp_path: Path) -> None:
    data = {k: v for k, v in CROWN.items() if k not in ("generation", "smoothing")}
    data["frame"] = {"mode": "fixed", "size_mm": 22, "center": [1, 2.5, -3]}
    spec = load_manifest(write(tmp_path, "c.json", data))
    assert spec.frame.center == (1.0, 2.5, -3.0)
    assert spec.generation.threshold == 0.5
    assert spec.smoothing.method == "taubin"


def test_crown_frame_axes_postprocess_and_checks(tmp_path: Path) -> None:
    spec = load_manifest(write(tmp_path, "c.json", CROWN))
    assert (spec.frame.occlusal, spec.frame.mesial) == ("+z", "+x")
    assert spec.postprocess.keep == "largest"
    assert spec.checks.extent_max_mm == (14.0, 14.0, 12.0)
    data = dict(CROWN)
    data["frame"] = {"mode": "fixed", "size_mm": 20, "occlusal": "-y", "mesial": "+z"}
    data["postprocess"] = {"keep": "over_preparation", "min_volume_mm3": 5}
    data["checks"] = {"extent_max_mm": [9, 9, 8], "max_base_gap_mm": 0.5}
    spec = load_manifest(write(tmp_path, "c.json", data))
    assert (spec.frame.occlusal, spec.frame.mesial) == ("-y", "+z")
    assert spec.postprocess == PostProcess("over_preparation", 5.0)
    assert spec.checks.extent_max_mm == (9.0, 9.0, 8.0) and spec.checks.max_base_gap_mm == 0.5
    assert spec.checks.volume_min_mm3 == Checks().volume_min_mm3


def test_segmentation_manifest(tmp_path: Path) -> None:
    spec = load_manifest(write(tmp_path, "seg.json", SEG))
    assert isinstance(spec, SegmentationModel)
    assert spec.input_size == (1400, 1600)
    assert spec.palette == [(0, 0, 0), (230, 120, 120), (240, 230, 140)]
    assert spec.roi.enabled is False
    dyn = dict(SEG, input_size=None, roi={"enabled": True, "margin": 0.1})
    spec = load_manifest(write(tmp_path, "seg2.json", dyn))
    assert spec.input_size is None
    assert spec.roi.enabled and spec.roi.margin == 0.1 and spec.roi.method == "threshold"


def test_two_part_crown_needs_features(tmp_path: Path) -> None:
    data = {k: v for k, v in CROWN.items() if k != "onnx"}
    data.update(encoder_onnx="enc.onnx", decoder_onnx="dec.onnx")
    path = write(tmp_path, "two.json", data, ("enc.onnx", "dec.onnx"))
    with pytest.raises(ModelError, match="'features' is missing"):
        load_manifest(path)
    data["features"] = ["f0", "f1"]
    spec = load_manifest(write(tmp_path, "two.json", data, ("enc.onnx", "dec.onnx")))
    assert spec.onnx is None and spec.features == ("f0", "f1")
    assert [p.name for p in spec.onnx_files] == ["enc.onnx", "dec.onnx"]


@pytest.mark.parametrize(
    ("change", "key", "what"),
    [
        ({"voxel_resolution": "128"}, "voxel_resolution", "must be an integer"),
        ({"voxel_resolution": True}, "voxel_resolution", "must be an integer"),
        ({"voxelisation": "solid"}, "voxelisation", "not a known manifest key"),
        ({"point_convention": "xyz"}, "point_convention", "must be one of"),
        ({"frame": {"mode": "fixed", "size_mm": -1}}, "frame.size_mm", "must be a number"),
        ({"frame": {"mode": "fixed", "centre": "bbox"}}, "frame.centre", "not a known"),
        ({"frame": {"mode": "fixed", "center": [1, 2]}}, "frame.center", "'bbox' or"),
        (
            {"generation": {"resolution": 256, "coarse_resolution": 40}},
            "generation.coarse_resolution",
            "multiple",
        ),
        ({"inputs": {"voxels": "x"}}, "inputs.points", "is missing"),
        ({"frame": {"mode": "fixed", "occlusal": "z"}}, "frame.occlusal", "one of"),
        (
            {"frame": {"mode": "fixed", "occlusal": "-x", "mesial": "+x"}},
            "frame.mesial",
            "perpendicular",
        ),
        ({"postprocess": {"keep": "biggest"}}, "postprocess.keep", "one of"),
        ({"postprocess": {"min_volume": 1}}, "postprocess.min_volume", "not a known"),
        ({"checks": {"extent_min_mm": [1, 2]}}, "checks.extent_min_mm", "[mesio-distal"),
        ({"checks": {"max_base_gap_mm": -1}}, "checks.max_base_gap_mm", "a number"),
        ({"onnx": "missing.onnx"}, "onnx", "does not exist"),
        ({"output": ""}, "output", "non-empty string"),
    ],
)
def test_crown_errors_name_file_and_key(tmp_path: Path, change, key, what) -> None:
    path = write(tmp_path, "bad.json", {**CROWN, **change})
    with pytest.raises(ModelError) as err:
        load_manifest(path)
    assert err.value.path == path.resolve()
    assert f"'{key}'" in str(err.value) and what in str(err.value)
    assert str(err.value).startswith(str(path.resolve()))


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"classes": [{"name": "bg", "color": [0, 0, 256]}]}, "classes[0].color"),
        ({"classes": [{"name": "bg", "colour": [0, 0, 0]}]}, "classes[0].color"),
        ({"input_size": [1400]}, "input_size"),
        ({"std": [1, 0, 1]}, "std"),
        ({"output_kind": "label"}, "output_kind"),
        ({"roi": {"enabled": True, "method": "magic"}}, "roi.method"),
        ({"to_rgb": "yes"}, "to_rgb"),
    ],
)
def test_segmentation_errors_name_key(tmp_path: Path, change, key) -> None:
    with pytest.raises(ModelError) as err:
        load_manifest(write(tmp_path, "bad.json", {**SEG, **change}))
    assert f"'{key}'" in str(err.value)


def test_unreadable_manifests(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_manifest(tmp_path / "nope.json")
    bad = tmp_path / "broken.json"
    bad.write_text("{ not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_manifest(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ModelError, match="must be a JSON object"):
        load_manifest(bad)


def loadable(folder: Path) -> None:
    """Real ONNX files behind CROWN and SEG (the manifests name them), so the models can run."""
    from onnx_builders import identity_crown_model, save
    from seg_builders import build_colour_model

    save(identity_crown_model(), folder / "crown.onnx")
    build_colour_model(folder / "seg.onnx", input_size=(1400, 1600))


def test_scan_and_find(tmp_path: Path) -> None:
    write(tmp_path, "a_crown.json", CROWN)
    write(tmp_path, "b_seg.json", SEG)
    write(tmp_path, "c_bad.json", {**CROWN, "oops": 1})
    loadable(tmp_path)
    listing = scan_models(tmp_path)
    assert [m.id for m in listing.models] == ["a_crown", "b_seg"]
    assert len(listing.errors) == 1 and "oops" in str(listing.errors[0])
    assert find_model(None, "segmentation", tmp_path).id == "b_seg"
    assert find_model("a_crown", "crown", tmp_path).id == "a_crown"
    assert find_model(str(tmp_path / "b_seg.json"), "segmentation", tmp_path).id == "b_seg"
    with pytest.raises(ModelError, match="is a segmentation model"):
        find_model(str(tmp_path / "b_seg.json"), "crown", tmp_path)
    with pytest.raises(ModelError, match="oops"):
        find_model("c_bad", "crown", tmp_path)
    with pytest.raises(ModelError, match="no crown model 'zzz'"):
        find_model("zzz", "crown", tmp_path)


def test_bundled_manifests_are_valid() -> None:
    from app.core.paths import bundled_models_dir

    listing = scan_models(bundled_models_dir())
    assert listing.errors == []
    assert {m.kind for m in listing.models} == {"crown", "segmentation"}
