"""Triangle meshes in millimetres: loading (STL, PLY, OBJ, OFF, VTP) and binary STL export."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.errors import InputError
from app.core.fileio import atomic_write, check_not_input

MESH_SUFFIXES = (".stl", ".ply", ".obj", ".off", ".vtp")


@dataclass(frozen=True)
class Mesh:
    """A triangle mesh: ``vertices`` (V, 3) float64 in mm, ``faces`` (F, 3) int64."""

    vertices: np.ndarray
    faces: np.ndarray

    @property
    def bounds(self) -> np.ndarray:
        """(2, 3): minimum and maximum corner."""
        return np.stack([self.vertices.min(axis=0), self.vertices.max(axis=0)])


def triangle_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def merge_vertices(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge bit-identical vertices (STL stores each corner per face), drop collapsed faces and
    unreferenced vertices."""
    uniq, inverse = np.unique(vertices, axis=0, return_inverse=True)
    f = inverse.reshape(-1)[faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
    used = np.unique(f)
    remap = np.full(len(uniq), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return uniq[used], remap[f]


def _read_trimesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    loaded = trimesh.load(str(path), file_type=path.suffix[1:].lower(), process=False, force="mesh")
    if not hasattr(loaded, "faces"):
        raise ValueError("no triangle surface in the file")
    return np.asarray(loaded.vertices, dtype=np.float64), np.asarray(loaded.faces, dtype=np.int64)


def _read_vtp(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """VTK XML PolyData through VTK's own reader (imported only here); polygons triangulated."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkCommonCore import vtkObject
    from vtkmodules.vtkFiltersCore import vtkTriangleFilter
    from vtkmodules.vtkIOXML import vtkXMLPolyDataReader

    vtkObject.GlobalWarningDisplayOff()
    reader = vtkXMLPolyDataReader()
    if not reader.CanReadFile(str(path)):
        raise ValueError("not a VTK XML PolyData file")
    reader.SetFileName(str(path))
    reader.Update()
    if reader.GetErrorCode():
        raise ValueError("VTK could not parse the file")
    tri = vtkTriangleFilter()
    tri.SetInputConnection(reader.GetOutputPort())
    tri.PassVertsOff()
    tri.PassLinesOff()
    tri.Update()
    poly = tri.GetOutput()
    if poly.GetPoints() is None or poly.GetNumberOfPolys() == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    vertices = vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)
    polys = poly.GetPolys()
    conn = vtk_to_numpy(polys.GetConnectivityArray()).astype(np.int64)
    offsets = vtk_to_numpy(polys.GetOffsetsArray()).astype(np.int64)
    if not np.all(np.diff(offsets) == 3):
        raise ValueError("polygons could not be triangulated")
    return vertices, conn.reshape(-1, 3)


def load_mesh(path: str | Path) -> Mesh:
    """Load a scan mesh in millimetres with duplicate vertices merged.

    Raises :class:`InputError` naming the file when it is missing, unreadable, empty, has
    non-finite coordinates or is degenerate (fewer than 4 vertices, or no face with an area).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise InputError(path, "file does not exist")
    if not path.is_file():
        raise InputError(path, "is not a file")
    if suffix not in MESH_SUFFIXES:
        raise InputError(
            path, f"unsupported mesh format '{suffix}' (use {', '.join(MESH_SUFFIXES)})"
        )
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")
    try:
        vertices, faces = _read_vtp(path) if suffix == ".vtp" else _read_trimesh(path)
    except InputError:
        raise
    except Exception as exc:  # readers raise many unrelated types on corrupt files
        raise InputError(path, f"cannot read {suffix[1:].upper()} file: {exc}") from exc
    vertices = vertices.reshape(-1, 3)
    faces = faces.reshape(-1, 3)
    if len(faces) == 0 or len(vertices) == 0:
        raise InputError(path, "contains no triangles")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise InputError(path, "a face refers to a vertex that does not exist")
    if not np.isfinite(vertices).all():
        raise InputError(path, "has non-finite vertex coordinates (NaN or infinity)")
    vertices, faces = merge_vertices(vertices, faces)
    if len(vertices) < 4 or len(faces) == 0:
        raise InputError(path, f"is degenerate: {len(vertices)} distinct vertices in use")
    if not (triangle_areas(vertices, faces) > 0).any():
        raise InputError(path, "is degenerate: every triangle has zero area")
    return Mesh(vertices=vertices, faces=faces)


def stl_bytes(mesh: Mesh) -> bytes:
    """Binary STL: 80-byte header, triangle count, then normal + 3 corners per triangle."""
    tri = mesh.vertices[mesh.faces].astype(np.float64)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(length > 0, n / np.where(length > 0, length, 1.0), 0.0)
    rec = np.zeros(len(tri), dtype=[("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("attr", "<u2")])
    rec["n"] = n
    rec["v"] = tri
    header = b"crownscan binary STL".ljust(80, b" ")
    return header + np.uint32(len(tri)).tobytes() + rec.tobytes()


def write_stl(path: str | Path, mesh: Mesh, inputs: Sequence[Path] = ()) -> None:
    """Write ``mesh`` as binary STL atomically; refuse to overwrite any of ``inputs``."""
    path = Path(path)
    check_not_input(path, inputs)
    data = stl_bytes(mesh)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
