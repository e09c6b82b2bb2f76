"""Mesh loading (every format, merged vertices, clear errors), STL export and the frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from app.core.crown.frame import make_frame
from app.core.crown.meshio import Mesh, load_mesh, write_mesh
from app.core.errors import InputError
from app.core.manifest import Frame


def _box_mm() -> trimesh.Trimesh:
    m = trimesh.creation.box([3.0, 4.0, 5.0])
    m.apply_translation([10.0, -20.0, 30.0])
    return m


@pytest.mark.parametrize("kind", ["stl", "stl_ascii", "ply", "obj", "off"])
def test_formats_load_with_merged_vertices(tmp_path: Path, kind: str) -> None:
    box = _box_mm()
    suffix = "stl" if kind.startswith("stl") else kind
    path = tmp_path / f"box.{suffix}"
    if kind == "stl_ascii":
        data = trimesh.exchange.stl.export_stl_ascii(box)
    else:
        data = box.export(file_type=kind)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    mesh = load_mesh(path)
    assert mesh.vertices.dtype == np.float64 and mesh.faces.dtype == np.int64
    assert len(mesh.vertices) == 8 and len(mesh.faces) == 12
    np.testing.assert_allclose(mesh.bounds, box.bounds, atol=1e-5)


def _trimesh_load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    loaded = trimesh.load(str(path), file_type=path.suffix[1:], process=False, force="mesh")
    return np.asarray(loaded.vertices, np.float64), np.asarray(loaded.faces, np.int64)


@pytest.mark.parametrize("kind", ["stl", "stl_ascii", "ply", "ply_ascii"])
def test_format_reader_alone_gives_what_trimesh_load_gives(tmp_path: Path, kind: str) -> None:
    """The fast path (the format reader without trimesh's scene, copy and hash) and the plain
    one read the same arrays, bit for bit; polygons and point clouds take the plain one."""
    from app.core.crown.meshio import _read_triangles

    box = _box_mm()
    path = tmp_path / f"box.{kind[:3]}"
    if kind == "stl_ascii":
        path.write_text(trimesh.exchange.stl.export_stl_ascii(box))
    else:
        path.write_bytes(
            box.export(file_type=kind[:3], **({"encoding": "ascii"} if kind == "ply_ascii" else {}))
        )
    fast = _read_triangles(path)
    assert fast is not None
    for got, want in zip(fast, _trimesh_load(path), strict=True):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    quads = tmp_path / "quads.ply"
    quads.write_text(
        "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
        "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
        "0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n"
    )
    assert _read_triangles(quads) is None
    assert len(load_mesh(quads).faces) == 2


def test_real_samples_read_alike_on_both_paths(dental_samples: Path) -> None:
    from app.core.crown.meshio import _read_triangles

    files = sorted(dental_samples.glob("*.stl")) + sorted(dental_samples.glob("*.ply"))
    assert files
    for path in files:
        fast = _read_triangles(path)
        assert fast is not None, path.name
        for got, want in zip(fast, _trimesh_load(path), strict=True):
            np.testing.assert_array_equal(got, want, err_msg=path.name)


def test_real_stl_scans_merge_alike_on_both_paths(dental_samples: Path) -> None:
    from app.core.arrays import unique_rows
    from app.core.crown.meshio import _read_triangles

    for path in sorted(dental_samples.glob("*.stl")):
        vertices, _ = _read_triangles(path)
        want_rows, want_inverse = np.unique(vertices, axis=0, return_inverse=True)
        got_rows, got_inverse = unique_rows(vertices)
        np.testing.assert_array_equal(got_rows, want_rows, err_msg=path.name)
        np.testing.assert_array_equal(got_inverse, want_inverse.reshape(-1), err_msg=path.name)


def test_vtp_written_by_vtk_loads(tmp_path: Path) -> None:
    from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
    from vtkmodules.vtkIOXML import vtkXMLPolyDataWriter

    box = _box_mm()
    pts = vtkPoints()
    pts.SetData(numpy_to_vtk(np.ascontiguousarray(box.vertices), deep=True))
    cells = vtkCellArray()
    cells.SetData(
        numpy_to_vtkIdTypeArray(np.arange(0, 3 * len(box.faces) + 1, 3), deep=True),
        numpy_to_vtkIdTypeArray(np.ascontiguousarray(box.faces.ravel()), deep=True),
    )
    poly = vtkPolyData()
    poly.SetPoints(pts)
    poly.SetPolys(cells)
    writer = vtkXMLPolyDataWriter()
    writer.SetFileName(str(tmp_path / "box.vtp"))
    writer.SetInputData(poly)
    writer.Write()
    mesh = load_mesh(tmp_path / "box.vtp")
    assert len(mesh.faces) == 12 and len(mesh.vertices) == 8
    np.testing.assert_allclose(mesh.bounds, box.bounds)


def test_real_samples_load(dental_samples: Path) -> None:
    vtp = load_mesh(dental_samples / "alsheghri_Upper001C_labeled.vtp")
    assert len(vtp.faces) == 10000 and len(vtp.vertices) <= 5118
    stl = load_mesh(dental_samples / "szu_patient10_b_l_31.stl")
    assert len(stl.vertices) < len(stl.faces)  # V = 3F on disk, merged here
    ply = load_mesh(dental_samples / "vbcd_1723719_pna.ply")
    assert len(ply.faces) == 29999
    assert 25 < np.ptp(ply.vertices, axis=0).max() < 45


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("missing.stl", None, "does not exist"),
        ("empty.stl", b"", "empty"),
        ("garbage.ply", b"\x00\x01not a ply at all" * 10, "cannot read"),
        ("garbage.vtp", b"<VTKFile nonsense", "VTP"),
        ("nan.obj", b"v 0 0 0\nv 1 0 0\nv 0 nan 0\nv 0 0 1\nf 1 2 3\nf 1 3 4\n", "non-finite"),
        ("tri.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "degenerate"),
        ("flat.obj", b"v 0 0 0\nv 1 0 0\nv 2 0 0\nv 3 0 0\nf 1 2 3\nf 2 3 4\n", "zero area"),
        ("scan.xyz", b"1 2 3\n", "unsupported"),
    ],
)
def test_bad_files_raise_input_error_naming_the_file(
    tmp_path: Path, name: str, content: bytes | None, why: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load_mesh(path)
    assert err.value.path == path
    assert why.lower() in err.value.message.lower()


def test_write_stl_round_trip_atomic_and_never_over_input(tmp_path: Path) -> None:
    box = _box_mm()
    mesh = Mesh(np.asarray(box.vertices, float), np.asarray(box.faces, np.int64))
    out = tmp_path / "out" / "crown.stl"
    write_mesh(out, mesh)
    assert out.stat().st_size == 84 + 50 * 12
    back = trimesh.load(out)
    assert back.is_watertight and back.volume == pytest.approx(60.0, rel=1e-5)
    assert sorted(p.name for p in out.parent.iterdir()) == ["crown.stl"]
    with pytest.raises(InputError):
        write_mesh(out, mesh, inputs=[out])


def test_fixed_frame_centres_on_bbox_or_given_point_and_inverts() -> None:
    v = np.array([[10.0, -20.0, 30.0], [14.0, -10.0, 32.0], [12.0, -15.0, 40.0]])
    f = make_frame(v, Frame("fixed", 20.0, "bbox"))
    np.testing.assert_allclose(f.center, [12.0, -15.0, 35.0])
    assert f.scale == pytest.approx(1 / 20)
    np.testing.assert_allclose(f.to_unit(v)[2], [0.0, 0.0, 0.25])
    np.testing.assert_allclose(f.to_mm(f.to_unit(v)), v, rtol=0, atol=1e-12)
    g = make_frame(v, Frame("fixed", 20.0, (1.0, 2.0, 3.0)))
    np.testing.assert_allclose(g.center, [1.0, 2.0, 3.0])
    h = make_frame(v, Frame("fixed", 20.0, (1.0, 2.0, 3.0)), center=[5, 6, 7])
    np.testing.assert_allclose(h.center, [5.0, 6.0, 7.0])


def test_bbox_frame_is_ifnet_normalisation() -> None:
    v = np.array([[10.0, -20.0, 30.0], [14.0, -10.0, 32.0], [12.0, -15.0, 40.0]])
    f = make_frame(v, Frame("bbox", 20.0, "bbox"))
    u = f.to_unit(v)
    assert np.ptp(u, axis=0).max() == pytest.approx(1.0)
    np.testing.assert_allclose((u.min(0) + u.max(0)) / 2, 0.0, atol=1e-12)
    np.testing.assert_allclose(f.to_mm(u), v, atol=1e-12)


def test_vertex_normals_match_vtk_point_normals() -> None:
    import pyvista as pv

    from app.core.crown.meshio import vertex_normals

    sphere = pv.Sphere(radius=3.0, theta_resolution=24, phi_resolution=18).triangulate()
    vertices = np.asarray(sphere.points, dtype=np.float64) * [1.0, 0.6, 1.4]
    faces = np.asarray(sphere.regular_faces, dtype=np.int64)
    vertices = np.vstack([vertices, [[50.0, 50.0, 50.0]]])  # referenced by no triangle
    reference = (
        pv.PolyData.from_regular_faces(vertices, faces)
        .compute_normals(
            cell_normals=False,
            split_vertices=False,
            auto_orient_normals=False,
            consistent_normals=False,
        )
        .point_data["Normals"]
    )
    ours = vertex_normals(vertices, faces)
    np.testing.assert_allclose(ours[:-1], reference[:-1], atol=1e-6)
    np.testing.assert_array_equal(ours[-1], [0.0, 0.0, 0.0])
