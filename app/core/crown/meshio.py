"""Triangle meshes in millimetres: loading (STL, PLY, OBJ, OFF, VTP) and export as binary STL,
binary PLY or OBJ, chosen by the output's suffix."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.core.arrays import sorted_unique, unique_rows
from app.core.errors import InputError
from app.core.fileio import atomic_write, check_not_input, check_output_path

MESH_SUFFIXES = (".stl", ".ply", ".obj", ".off", ".vtp")
OUTPUT_SUFFIXES = (".stl", ".ply", ".obj")
MAX_TRIANGLES = 3_000_000
"""Scans with more triangles are refused before they are parsed (see ``docs/errors.md``)."""
MIN_EXTENT_MM = 1.0
MAX_EXTENT_MM = 1000.0
"""A scan's largest bounding-box side outside these is in the wrong unit (metres, microns)."""
_HEAD = 1 << 16


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


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit normal (V, 3) of each vertex: the normalised sum of the unit normals of the
    triangles around it (zero where none has an area), as VTK's ``vtkPolyDataNormals``
    computes them without splitting or reorienting.

    In numpy so that a worker building a mesh for display lets the GUI thread run: the VTK
    filter holds the interpreter for its whole run (tens of ms per 30k triangles).
    """
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.divide(n, length, out=np.zeros_like(n), where=length > 0)
    summed = np.zeros((len(vertices), 3))
    for corner in range(3):
        for axis in range(3):
            summed[:, axis] += np.bincount(
                faces[:, corner], weights=n[:, axis], minlength=len(vertices)
            )
    length = np.linalg.norm(summed, axis=1, keepdims=True)
    return np.divide(summed, length, out=np.zeros_like(summed), where=length > 0)


def merge_vertices(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge equal vertices (STL stores each corner per face), drop collapsed faces and
    unreferenced vertices."""
    uniq, inverse = unique_rows(vertices)
    f = inverse[faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
    used = sorted_unique(f)
    remap = np.full(len(uniq), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return uniq[used], remap[f]


def _read_trimesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles as trimesh reads them (``process=False``): PLY and STL straight
    from its format reader, anything else (and a PLY of polygons) through ``trimesh.load``."""
    import trimesh

    direct = _read_triangles(path)
    if direct is not None:
        return direct
    loaded = trimesh.load(str(path), file_type=path.suffix[1:].lower(), process=False, force="mesh")
    if not hasattr(loaded, "faces"):
        raise ValueError("no triangle surface in the file")
    return np.asarray(loaded.vertices, dtype=np.float64), np.asarray(loaded.faces, dtype=np.int64)


def _read_triangles(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A PLY or STL file's vertices and triangles from trimesh's format reader alone; None when
    the file needs ``trimesh.load`` (other formats, polygons, no faces).

    ``trimesh.load(force="mesh")`` wraps the same arrays in a scene, then copies and hashes
    them: ten times the time, in calls that hold the interpreter while the window waits.
    """
    from trimesh.exchange.load import mesh_loaders

    kind = path.suffix[1:].lower()
    if kind not in ("ply", "stl"):
        return None
    with open(path, "rb") as f:
        loaded = mesh_loaders[kind](f, file_type=kind)
    if not isinstance(loaded, dict) or loaded.get("faces") is None:
        return None
    vertices = np.asarray(loaded.get("vertices"), dtype=np.float64)
    faces = np.asarray(loaded["faces"])
    if vertices.ndim != 2 or vertices.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
        return None
    return vertices, faces.astype(np.int64)


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


def _count_in_file(path: Path, token: bytes) -> int:
    """Occurrences of ``token`` in the file, read in blocks (memory stays bounded)."""
    count, tail = 0, b""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            data = tail + block
            count += data.count(token)
            tail = data[-(len(token) - 1) :]
    return count


def declared_triangles(path: Path) -> int | None:
    """The triangle count a mesh file declares or holds, read without parsing its geometry
    (binary STL and PLY/OFF/VTP headers, faces counted in ASCII STL and OBJ); None when the
    file does not say."""
    suffix = path.suffix.lower()
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    if suffix == ".stl":
        if len(head) >= 84:
            n = int(np.frombuffer(head[80:84], "<u4")[0])
            if 84 + 50 * n == size:
                return n
        return _count_in_file(path, b"endfacet")
    if suffix == ".ply":
        m = re.search(rb"element\s+face\s+(\d+)", head.split(b"end_header")[0])
        return int(m.group(1)) if m else None
    if suffix == ".off":
        words = re.sub(rb"#[^\n]*", b"", head).split()
        if len(words) >= 3 and words[0].endswith(b"OFF") and words[2].isdigit():
            return int(words[2])
        return None
    if suffix == ".obj":
        return _count_in_file(path, b"\nf ") + int(head.startswith(b"f "))
    if suffix == ".vtp":
        found = re.findall(rb'Number(?:OfPolys|OfStrips)="(\d+)"', head)
        return sum(int(n) for n in found) if found else None
    return None


def _check_units(path: Path, vertices: np.ndarray, scale: float) -> None:
    extent = float((vertices.max(axis=0) - vertices.min(axis=0)).max())
    given = "" if scale == 1.0 else f" after --scale {scale:g}"
    if extent < MIN_EXTENT_MM:
        raise InputError(
            path,
            f"the scan is only {extent:.3g} mm across{given}: it looks like it is in metres; "
            "Crownscan needs millimetres (convert it, or give --scale 1000)",
        )
    if extent > MAX_EXTENT_MM:
        raise InputError(
            path,
            f"the scan is {extent:.4g} mm across{given}: it looks like it is in microns; "
            "Crownscan needs millimetres (convert it, or give --scale 0.001)",
        )


def load_mesh(path: str | Path, scale: float = 1.0) -> Mesh:
    """Load a scan mesh in millimetres with duplicate vertices merged.

    ``scale`` multiplies the coordinates first (1000 for a file in metres). Raises
    :class:`InputError` naming the file when it is missing, unreadable, empty, holds more than
    :data:`MAX_TRIANGLES` triangles (checked before parsing), has non-finite coordinates, is
    degenerate (fewer than 4 vertices, or no face with an area), or is less than 1 mm or more
    than 1 m across (a unit other than mm).
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
        declared = declared_triangles(path)
    except OSError as exc:
        raise InputError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if declared is not None and declared > MAX_TRIANGLES:
        raise InputError(
            path,
            f"the scan has {declared:,} triangles; at most {MAX_TRIANGLES:,} are accepted "
            "(decimate it in the scanner or CAD software first)",
        )
    try:
        vertices, faces = _read_vtp(path) if suffix == ".vtp" else _read_trimesh(path)
    except InputError:
        raise
    except Exception as exc:  # readers raise many unrelated types on corrupt files
        raise InputError(path, f"cannot read {suffix[1:].upper()} file: {exc}") from exc
    vertices = vertices.reshape(-1, 3)
    faces = faces.reshape(-1, 3)
    if len(faces) > MAX_TRIANGLES:
        raise InputError(
            path, f"the scan has {len(faces):,} triangles; at most {MAX_TRIANGLES:,} are accepted"
        )
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
    if scale != 1.0:
        vertices = vertices * scale
    _check_units(path, vertices, scale)
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


def ply_bytes(mesh: Mesh) -> bytes:
    """Binary little-endian PLY: float32 vertices, faces as a uchar count and three int32."""
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment crownscan\n"
        f"element vertex {len(mesh.vertices)}\nproperty float x\nproperty float y\n"
        f"property float z\nelement face {len(mesh.faces)}\n"
        "property list uchar int vertex_indices\nend_header\n"
    ).encode("ascii")
    faces = np.zeros(len(mesh.faces), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    faces["n"] = 3
    faces["v"] = mesh.faces
    return header + mesh.vertices.astype("<f4").tobytes() + faces.tobytes()


def obj_bytes(mesh: Mesh) -> bytes:
    """Wavefront OBJ text: ``v`` lines in mm, then 1-based ``f`` lines."""
    out = io.StringIO()
    out.write("# crownscan\n")
    np.savetxt(out, mesh.vertices, fmt="v %.6f %.6f %.6f")
    np.savetxt(out, mesh.faces + 1, fmt="f %d %d %d")
    return out.getvalue().encode("ascii")


_ENCODERS = {".stl": stl_bytes, ".ply": ply_bytes, ".obj": obj_bytes}


def check_mesh_output(path: str | Path) -> None:
    """Refuse a crown output that is a folder or whose suffix is not .stl, .ply or .obj."""
    check_output_path(Path(path), OUTPUT_SUFFIXES)


def write_mesh(path: str | Path, mesh: Mesh, inputs: Sequence[Path] = ()) -> None:
    """Write ``mesh`` atomically in the format its suffix names; refuse to overwrite any of
    ``inputs``."""
    path = Path(path)
    check_mesh_output(path)
    check_not_input(path, inputs)
    data = mesh_bytes(path, mesh)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def mesh_bytes(path: Path, mesh: Mesh) -> bytes:
    """``mesh`` encoded in the format named by ``path``'s suffix."""
    return _ENCODERS[Path(path).suffix.lower()](mesh)
