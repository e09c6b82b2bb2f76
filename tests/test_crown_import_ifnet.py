"""``crownscan import ifnet``: a manifest with IF-Net's conventions, and the app run with it
against a plain re-implementation of IF-Net's generator on the same network and scan."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import trimesh

from app.cli import main
from app.core.crown.meshio import Mesh
from app.core.crown.pipeline import generate_crown
from app.core.crown.point_cloud import (
    point_cloud_voxels,
    point_cloud_voxels_reference,
    sample_surface,
)
from app.core.crown.voxelize import voxelize_reference
from app.core.errors import InputError
from app.core.manifest import load_manifest
from app.core.model_import import ifnet_manifest
from app.core.model_lint import lint_model
from app.core.runtime import RuntimeConfig, SessionPool
from tests.onnx_builders import identity_crown_model, save

R = 32


@pytest.fixture
def imported(tmp_path):
    onnx_path = save(identity_crown_model("native", static_resolution=R), tmp_path / "ifnet32.onnx")
    out = tmp_path / "ifnet32.json"
    assert main(["import", "ifnet", str(onnx_path), "--variant", "ShapeNet32Vox"]) == 0
    return load_manifest(out)


def test_manifest_holds_ifnet_conventions(imported) -> None:
    spec = imported
    assert spec.voxel_resolution == R and spec.voxelization == "solid"
    assert (spec.voxel_grid.placement, spec.voxel_grid.surface, spec.voxel_grid.inside) == (
        "cells",
        "cube",
        "ray_z_both",
    )
    assert spec.frame.mode == "bbox" and spec.frame.center == "bbox"
    assert spec.point_convention == "ifnet" and spec.output_kind == "logits"
    assert spec.generation.coarse_resolution is None and spec.generation.threshold == 0.5
    assert spec.smoothing.method == "none" and spec.postprocess.keep == "all"
    assert spec.sampling.align_corners and spec.sampling.padding_mode == "zeros"
    assert lint_model(spec) == []


def _ifnet_generator(onnx_path, vertices, faces, res: int) -> np.ndarray:
    """IF-Net's pipeline written out: bbox normalisation, voxels (plain reference), dense grid
    of linspace points fed as 2 * (z, y, x), marching cubes on the grid padded with -1e6 at
    logit 0, mapped back with step 1/(res - 1) from -0.5. Returns vertices in mm."""
    from skimage.measure import marching_cubes

    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    centre, size = (lo + hi) / 2, (hi - lo).max()
    unit = (vertices - centre) / size
    vox = voxelize_reference(
        unit, faces, R, "solid", placement="cells", surface="cube", inside="ray_z_both"
    )
    g = np.linspace(-0.5, 0.5, res)
    pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = {"x": vox[None].astype(np.float32), "p": (2 * pts[None, :, ::-1]).astype(np.float32)}
    logits = session.run(["out"], feed)[0].reshape(res, res, res)
    verts, _, _, _ = marching_cubes(np.pad(logits, 1, constant_values=-1e6), level=0.0)
    verts = (verts - 1) / (res - 1) - 0.5
    return verts * size + centre


def test_app_reproduces_ifnets_generator(imported, tmp_path) -> None:
    box = trimesh.creation.box([9.0, 6.0, 7.5])
    box.apply_transform(trimesh.transformations.rotation_matrix(0.35, [1, 2, 3]))
    box.apply_translation([12.0, -3.0, 40.0])
    pool = SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=1))
    res = 40
    result = generate_crown(Mesh(box.vertices, box.faces), imported, pool, resolution=res)
    want = _ifnet_generator(imported.onnx, np.asarray(box.vertices), box.faces, res)
    got = result.mesh.vertices
    assert len(got) == len(want) > 100

    def rows(v: np.ndarray) -> np.ndarray:
        v = np.round(v, 4)
        return v[np.lexsort(v.T)]

    np.testing.assert_allclose(rows(got), rows(want), atol=2e-4)


def test_point_cloud_variant_feeds_surface_samples(tmp_path) -> None:
    """ShapeNet300Points: 300 seeded surface samples, each marking its nearest linspace grid
    point of a 128 grid (fast rounding equal to a KD-tree over all grid points)."""
    onnx_path = save(identity_crown_model("native", static_resolution=128), tmp_path / "pc.onnx")
    data = ifnet_manifest(onnx_path, "ShapeNet300Points", tmp_path)
    (tmp_path / "pc.json").write_text(json.dumps(data))
    spec = load_manifest(tmp_path / "pc.json")
    assert spec.voxelization == "point_cloud" and spec.voxel_resolution == 128
    assert spec.voxel_grid.placement == "points" and spec.voxel_grid.point_samples == 300
    box = trimesh.creation.box([9.0, 6.0, 7.5])
    pool = SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=1))
    runs = [generate_crown(Mesh(box.vertices, box.faces), spec, pool, resolution=24)
            for _ in range(2)]  # fmt: skip
    occupied = runs[0].report.info["voxels_occupied"]
    assert 250 <= occupied <= 300
    np.testing.assert_array_equal(runs[0].mesh.vertices, runs[1].mesh.vertices)


def test_point_cloud_voxels_fast_equal_plain() -> None:
    rng = np.random.default_rng(5)
    points = rng.uniform(-0.6, 0.6, (5000, 3))
    for placement in ("points", "cells"):
        fast = point_cloud_voxels(points, 20, placement)
        np.testing.assert_array_equal(fast, point_cloud_voxels_reference(points, 20, placement))
    box = trimesh.creation.box([0.4, 0.3, 0.2])
    samples = sample_surface(box.vertices, box.faces, 4000, seed=3)
    np.testing.assert_array_equal(samples, sample_surface(box.vertices, box.faces, 4000, seed=3))
    q = np.abs(samples) - [0.2, 0.15, 0.1]
    assert np.abs(q.max(axis=1)).max() < 1e-12  # every sample on the box's surface
    face_share = [np.mean(np.abs(np.abs(samples[:, k]) - h) < 1e-12)
                  for k, h in enumerate([0.2, 0.15, 0.1])]  # fmt: skip
    np.testing.assert_allclose(face_share, np.array([0.12, 0.16, 0.24]) / 0.52, atol=0.03)


def test_variant_typos_are_refused(tmp_path) -> None:
    onnx_path = save(identity_crown_model("native"), tmp_path / "m.onnx")
    with pytest.raises(InputError, match="ShapeNet128Vox"):
        ifnet_manifest(onnx_path, "ShapeNet128vox", tmp_path)


def test_import_never_replaces_a_manifest_without_force(tmp_path, capsys) -> None:
    onnx_path = save(identity_crown_model("native"), tmp_path / "m.onnx")
    out = tmp_path / "m.json"
    out.write_text('{"kept": true}')
    assert main(["import", "ifnet", str(onnx_path), "--variant", "ShapeNet128Vox"]) == 2
    assert json.loads(out.read_text()) == {"kept": True}
    assert "--force" in capsys.readouterr().err
    args = ["import", "ifnet", str(onnx_path), "--variant", "ShapeNet128Vox", "--force"]
    assert main(args) == 0
    assert load_manifest(out).voxel_resolution == 128
