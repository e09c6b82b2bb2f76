"""`crownscan crown` through app.cli.main on a real scan with the identity test model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.core.crown.meshio import load_mesh
from tests.onnx_builders import crown_manifest, identity_crown_model, save, write_manifest

SIZE, VOX = 45.0, 64


def _identity_manifest(folder: Path, **overrides) -> Path:
    save(identity_crown_model(), folder / "identity.onnx")
    data = crown_manifest(
        folder,
        voxel_resolution=VOX,
        frame={"mode": "fixed", "size_mm": SIZE, "center": "bbox"},
        generation={"resolution": 96, "threshold": 0.5, "batch_points": 400_000},
        smoothing={"method": "taubin", "iterations": 10},
    )
    data.update(overrides)
    return write_manifest(folder, data)


def test_crown_on_real_scan_writes_watertight_stl_in_mm(dental_samples, tmp_path, capsys):
    scan_path = dental_samples / "vbcd_1723719_pna.ply"
    manifest = _identity_manifest(tmp_path)
    out = tmp_path / "crown.stl"
    t0 = time.perf_counter()
    code = main(
        ["crown", str(scan_path), "-o", str(out), "--model", str(manifest), "--json",
         "--providers", "cpu", "--threads", "2"]
    )  # fmt: skip
    wall_ms = (time.perf_counter() - t0) * 1000.0
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    for key in ("output", "timings_ms", "decoder_points", "providers", "vertices", "faces",
                "watertight"):  # fmt: skip
        assert key in report
    assert report["watertight"] is True
    assert report["decoder_points"] == 96**3 and report["providers"] == ["cpu"]
    # the stages are disjoint parts of the run: each took some time, none is counted twice
    # (decode runs inside grid and is taken out of it), so together they fit in the call
    timings = report["timings_ms"]
    assert {"load", "frame", "voxelize", "grid", "decode", "extract", "smooth", "write"} <= set(
        timings
    ), timings
    assert all(v >= 0 for v in timings.values()) and timings["decode"] > 0, timings
    assert sum(timings.values()) <= wall_ms, f"{timings} add up to more than {wall_ms:.1f} ms"
    crown = load_mesh(out)
    assert len(crown.faces) == report["faces"]
    scan = load_mesh(scan_path)
    h = SIZE / (VOX - 1)
    # the identity model returns the voxelized scan: same y/z extent and +x end, in mm; the
    # open scan's +x-ray fill may run to the frame's -x face
    np.testing.assert_allclose(crown.bounds[:, 1:], scan.bounds[:, 1:], atol=h)
    assert abs(crown.bounds[1, 0] - scan.bounds[1, 0]) < h
    frame_min_x = (scan.bounds[0, 0] + scan.bounds[1, 0]) / 2 - SIZE / 2
    assert frame_min_x - h < crown.bounds[0, 0] <= scan.bounds[0, 0] + h


def test_missing_scan_is_exit_2_with_one_error_line(tmp_path, capsys) -> None:
    manifest = _identity_manifest(tmp_path)
    missing = tmp_path / "nope.stl"
    code = main(["crown", str(missing), "-o", str(tmp_path / "o.stl"), "--model", str(manifest)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"error: {missing}: ")
    assert not (tmp_path / "o.stl").exists()


def test_manifest_with_unknown_key_is_exit_3(tmp_path, capsys) -> None:
    manifest = _identity_manifest(tmp_path, voxel_resolutoin=64)
    scan = tmp_path / "scan.stl"
    scan.write_bytes(b"")
    code = main(["crown", str(scan), "-o", str(tmp_path / "o.stl"), "--model", str(manifest)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert len(err) == 1 and "voxel_resolutoin" in err[0]


@pytest.mark.parametrize("content", [b"", b"solid x\nendsolid x\n"])
def test_unusable_scan_is_exit_2(tmp_path, capsys, content: bytes) -> None:
    manifest = _identity_manifest(tmp_path)
    scan = tmp_path / "scan.stl"
    scan.write_bytes(content)
    code = main(["crown", str(scan), "-o", str(tmp_path / "o.stl"), "--model", str(manifest)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(scan) in err[0]


def test_frame_missing_the_scan_is_exit_4_naming_the_scan(dental_samples, tmp_path, capsys):
    scan = dental_samples / "vbcd_1723719_pna.ply"
    manifest = _identity_manifest(tmp_path)
    out = tmp_path / "o.stl"
    code = main(["crown", str(scan), "-o", str(out), "--model", str(manifest),
                 "--center", "500", "0", "0", "--providers", "cpu"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 4 and len(err) == 1
    assert err[0].startswith(f"error: {scan}: ") and "no crown in the frame" in err[0]
    assert not out.exists()


def _box_scan(folder: Path) -> Path:
    import trimesh

    path = folder / "box.stl"
    path.write_bytes(trimesh.creation.box([10.0, 6.0, 3.0]).export(file_type="stl"))
    return path


@pytest.mark.parametrize(
    ("flags", "what"),
    [
        (["--occlusal", "0", "1", "0", "--mesial", "0", "-2", "0"], "must not be parallel"),
        (["--occlusal", "0", "0", "0"], "zero vector"),
        (["--pick", "1", "2", "3", "--center", "1", "2", "3"], "either --pick or --center"),
    ],
)
def test_contradictory_frame_options_are_exit_2(tmp_path, capsys, flags, what) -> None:
    manifest = _identity_manifest(tmp_path)
    out = tmp_path / "o.stl"
    code = main(["crown", str(_box_scan(tmp_path)), "-o", str(out), "--model", str(manifest),
                 *flags])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and what in err[0]
    assert not out.exists()


def test_auto_frame_on_a_scan_without_preparation_is_exit_2_naming_it(tmp_path, capsys) -> None:
    scan = _box_scan(tmp_path)
    code = main(["crown", str(scan), "-o", str(tmp_path / "o.stl"), "--auto-frame",
                 "--model", str(_identity_manifest(tmp_path))])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: {scan}: cannot place the crown frame: ")


def test_given_frame_is_used_and_checks_warn_on_stderr(tmp_path, capsys) -> None:
    manifest = _identity_manifest(tmp_path, checks={"extent_max_mm": [5, 5, 5]})
    out = tmp_path / "o.stl"
    code = main(["crown", str(_box_scan(tmp_path)), "-o", str(out), "--model", str(manifest),
                 "--json", "--center", "0", "0", "0", "--occlusal", "0", "2", "0",
                 "--mesial", "1", "0", "1"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0 and out.is_file()
    report = json.loads(captured.out)
    assert report["frame_source"] == "given"
    np.testing.assert_allclose(report["frame_occlusal"], [0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(report["frame_mesial"], np.array([1, 0, 1]) / np.sqrt(2), atol=1e-6)
    # the 10 x 6 x 3 mm box seen with occlusal +y is 6 mm tall; the identity model at threshold
    # 0.5 returns it up to a voxel larger on each side
    h = SIZE / (VOX - 1)
    assert 6.0 <= report["checks"]["extents_mm"]["occlusal"] <= 6.0 + 2 * h
    lines = captured.err.strip().splitlines()
    assert lines == [f"warning: {out}: {w}" for w in report["checks"]["warnings"]]
    assert any("mm occlusal (expected 3–5 mm)" in line for line in lines)
