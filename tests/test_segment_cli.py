"""The `crownscan segment` verb end to end on an analytic model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from seg_builders import build_colour_model, oracle_labels, stone_image, write_manifest

from app.cli import main
from app.core.segment.imageio import read_label_png

ROI_ON = {"enabled": True, "method": "threshold", "margin": 0.08, "min_margin_px": 32}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    folder = tmp_path_factory.mktemp("climodels")
    build_colour_model(folder / "colour.onnx")
    return write_manifest(folder, "colour.onnx", roi=ROI_ON)


@pytest.fixture(scope="module")
def scan():
    return stone_image(400, 480, (150, 100, 330, 300), seed=6)


@pytest.fixture
def scan_file(tmp_path, scan):
    p = tmp_path / "scan.png"
    Image.fromarray(scan).save(p)
    return p


def _segment(capsys, *args):
    code = main(["segment", *map(str, args), "--providers", "cpu"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("roi", ["auto", "on", "off"])
def test_segment_json_report(capsys, tmp_path, manifest, scan_file, scan, roi):
    mask, over = tmp_path / "mask.png", tmp_path / "over.jpg"
    code, out, err = _segment(
        capsys,
        scan_file,
        "-o",
        mask,
        "--overlay",
        over,
        "--model",
        manifest,
        "--roi",
        roi,
        "--json",
    )
    assert code == 0, err
    rep = json.loads(out)
    for key in ("timings_ms", "providers", "class_pixels", "roi_box", "roi_fraction"):
        assert key in rep
    assert set(rep["timings_ms"]) == {"load", "roi", "preprocess", "infer", "decode", "write"}
    assert rep["providers"] == ["cpu"]
    assert sum(rep["class_pixels"].values()) == 400 * 480
    if roi == "off":
        assert rep["roi_box"] is None and rep["roi_fraction"] == 1.0
    else:
        assert rep["roi_box"] is not None and rep["roi_fraction"] < 1.0
    np.testing.assert_array_equal(read_label_png(mask), oracle_labels(scan))
    with Image.open(over) as im:
        assert im.size == (480, 400)


def test_bad_image_exits_2_with_one_line(capsys, tmp_path, manifest):
    bad = tmp_path / "broken.png"
    bad.write_text("not a png")
    code, out, err = _segment(capsys, bad, "-o", tmp_path / "m.png", "--model", manifest)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ")
    assert not (tmp_path / "m.png").exists()


def test_mask_over_the_input_exits_2(capsys, scan_file, manifest):
    before = scan_file.read_bytes()
    code, _, err = _segment(capsys, scan_file, "-o", scan_file, "--model", manifest)
    assert code == 2 and err.startswith("error: ")
    assert scan_file.read_bytes() == before


def test_bad_manifest_exits_3(capsys, tmp_path, scan_file, manifest):
    data = json.loads(manifest.read_text())
    data["mean_rgb"] = [0, 0, 0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    (tmp_path / "colour.onnx").write_bytes((manifest.parent / "colour.onnx").read_bytes())
    code, _, err = _segment(capsys, scan_file, "-o", tmp_path / "m.png", "--model", bad)
    assert code == 3
    assert err.strip().startswith(f"error: {bad}: ") and "mean_rgb" in err
    assert len(err.strip().splitlines()) == 1


def test_manifest_class_count_not_matching_the_model_exits_3(capsys, tmp_path, scan_file):
    build_colour_model(tmp_path / "four.onnx", n_classes=4)
    m = write_manifest(tmp_path, "four.onnx")
    code, _, err = _segment(capsys, scan_file, "-o", tmp_path / "m.png", "--model", m)
    assert code == 3 and "four.onnx" in err and "4 channels" in err
    assert not (tmp_path / "m.png").exists()
