"""Property tests: whatever bytes sit in a scan, image or manifest file, loading it either
succeeds or raises the project's own error naming that file; never another exception."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.crown.meshio import MESH_SUFFIXES, load_mesh
from app.core.errors import CrownscanError, InputError, ModelError
from app.core.manifest import load_manifest
from app.core.segment.imageio import load_image

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Starts of real files, so the readers get past their first check some of the time.
MAGIC = [b"", b"solid x\n", b"ply\nformat ascii 1.0\n", b"OFF\n", b"v 0 0 0\n", b"<?xml",
         b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"{"]  # fmt: skip


def _file(suffix: str, data: bytes) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="crownscan-prop-"))
    path = folder / f"input{suffix}"
    path.write_bytes(data)
    return path


def _mesh_ok(mesh) -> bool:
    return mesh.faces.shape[1] == 3 and len(mesh.vertices) >= 4


def _image_ok(rgb) -> bool:
    return rgb.ndim == 3 and rgb.shape[2] == 3


@pytest.mark.parametrize(
    ("load", "suffixes", "ok"),
    [
        (load_mesh, MESH_SUFFIXES, _mesh_ok),
        (load_image, (".png", ".jpg", ".bmp", ".tif"), _image_ok),
    ],
    ids=["mesh", "image"],
)
@SETTINGS
@given(data=st.data(), head=st.sampled_from(MAGIC), body=st.binary(max_size=600))
def test_any_bytes_as_a_scan_or_image_load_or_raise_input_error(load, suffixes, ok, data, head,
                                                                body):  # fmt: skip
    path = _file(data.draw(st.sampled_from(suffixes)), head + body)
    try:
        loaded = load(path)
    except InputError as exc:
        assert exc.path == path
    else:
        assert ok(loaded)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = ["kind", "name", "onnx", "inputs", "output", "frame", "generation", "classes", "input",
        "mean", "std", "voxel_resolution", "input_size", "output_kind", "default"]  # fmt: skip


@SETTINGS
@given(data=st.binary(max_size=400))
def test_any_bytes_as_a_manifest_load_or_raise_model_error(data):
    path = _file(".json", data)
    with pytest.raises(ModelError) as err:
        load_manifest(path)
    assert err.value.path == path.resolve()


@SETTINGS
@given(
    kind=st.sampled_from(["crown", "segmentation", "other"]),
    values=st.dictionaries(st.sampled_from(KEYS), JSON, max_size=len(KEYS)),
)
def test_any_json_as_a_manifest_loads_or_raises_model_error(kind, values):
    path = _file(".json", json.dumps({"kind": kind, "name": "n", **values}).encode())
    try:
        load_manifest(path)
    except ModelError as exc:
        assert exc.path == path.resolve()


@settings(max_examples=10, deadline=None)
@given(depth=st.integers(min_value=1, max_value=100_000))
def test_deeply_nested_manifest_is_a_model_error(depth):
    path = _file(".json", b"[" * depth + b"]" * depth)
    with pytest.raises(CrownscanError):
        load_manifest(path)
