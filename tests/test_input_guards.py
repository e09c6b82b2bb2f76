"""Inputs in the wrong unit or too large: refused with a message that says why and what to do,
before memory is spent on them."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import trimesh

from app.cli import main
from app.core.crown import meshio
from app.core.errors import InputError
from app.core.segment import imageio
from tests.onnx_builders import identity_crown_model
from tests.test_model_faults import _crown_folder


def _box(folder: Path, size_mm: float, name: str = "scan.stl") -> Path:
    path = folder / name
    box = trimesh.creation.box((9.0 * size_mm, 7.0 * size_mm, 11.0 * size_mm))
    data = box.export(file_type=path.suffix[1:])
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _crown(tmp_path: Path, scan: Path, *extra: str) -> list[str]:
    manifest = _crown_folder(tmp_path, identity_crown_model())
    return ["crown", str(scan), "-o", str(tmp_path / "crown.stl"), "--model", str(manifest),
            "--providers", "cpu", "--threads", "1", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("scale", "unit", "hint"), [(1e-3, "metres", "--scale 1000"), (1e3, "microns", "--scale 0.001")]
)
def test_scan_in_another_unit_is_refused_naming_the_unit(tmp_path, capsys, scale, unit, hint):
    scan = _box(tmp_path, scale)
    assert main(_crown(tmp_path, scan)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {scan}: the scan is ")
    assert f"it looks like it is in {unit}" in err[0] and hint in err[0]
    assert "--center" not in err[0]
    assert main(_crown(tmp_path, scan, "--scale", hint.split()[1])) == 0
    crown = meshio.load_mesh(tmp_path / "crown.stl")
    assert 5.0 < np.ptp(crown.vertices, axis=0).max() < 30.0  # mm again


def test_wrong_scale_is_refused(tmp_path, capsys):
    assert main(_crown(tmp_path, _box(tmp_path, 1.0), "--scale", "0")) == 2
    assert "--scale must be a positive number" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["s.stl", "s.ply", "s.obj", "s.off"])
def test_triangle_count_is_read_without_parsing(tmp_path, name):
    path = _box(tmp_path, 1.0, name)
    assert meshio.declared_triangles(path) == 12


def test_ascii_stl_faces_are_counted(tmp_path):
    path = tmp_path / "a.stl"
    path.write_text(trimesh.creation.box((9.0, 7.0, 11.0)).export(file_type="stl_ascii"))
    assert meshio.declared_triangles(path) == 12


def test_scan_over_the_triangle_limit_is_refused_before_parsing(tmp_path, monkeypatch):
    scan = _box(tmp_path, 1.0, "big.ply")
    monkeypatch.setattr(meshio, "MAX_TRIANGLES", 10)

    def never(path):
        raise AssertionError("parsed a scan that should have been refused")

    monkeypatch.setattr(meshio, "_read_trimesh", never)
    with pytest.raises(InputError) as err:
        meshio.load_mesh(scan)
    assert err.value.path == scan
    assert err.value.message.startswith("the scan has 12 triangles; at most 10 are accepted")


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` but holds almost no pixel data: decoding it
    would fail as truncated, so a size error proves the size was checked first."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def test_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    side = int((imageio.MAX_PIXELS + 1_000_000) ** 0.5)
    path = _png_header_only(tmp_path / "huge.png", side, side)
    with pytest.raises(InputError) as err:
        imageio.load_image(path)
    assert err.value.path == path
    assert f"image is {side}x{side} pixels" in err.value.message
    assert f"{imageio.MAX_PIXELS // 1_000_000} megapixels" in err.value.message


def test_image_at_the_limit_gets_past_the_size_check(tmp_path):
    side = int(imageio.MAX_PIXELS**0.5)
    path = _png_header_only(tmp_path / "at-limit.png", side, side)
    with pytest.raises(InputError, match="truncated or corrupt"):
        imageio.load_image(path)
