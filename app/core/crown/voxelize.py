"""Voxelization of a triangle mesh in the unit cube, shared by training and runtime.

The array is indexed ``[x, y, z]``. Where a cell sits (``placement``): ``points`` puts cell i at
``linspace(-0.5, 0.5, R)[i]`` (spacing ``h = 1/(R-1)``, the default); ``cells`` cuts the cube
into R cells of side ``h = 1/R`` centred at ``(i + 0.5)/R - 0.5`` (IF-Net's voxels). Each cell is
the cube of side h around its centre. The rules below are exact, so :func:`voxelize` (fast,
vectorised) and :func:`voxelize_reference` (slow, direct terms) can be compared cell by cell;
they may differ only on ties (a cell centre exactly on a triangle edge seen along the ray, or
exactly at the surface distance threshold).

Default rules (``surface="ball"``, ``inside="ray_x"``):

- **surface cell**: the distance from the cell centre to some triangle is at most ``h / 2``
  with ``h = 1/(R-1)`` (the ball inscribed in the cell's cube meets the surface). Where the
  surface crosses the segment between two axis-neighbour grid points, one of them is within
  ``h / 2`` of the crossing, so the shell has no 6-connected gaps; and a solid grows by at most
  ``h / 2`` (on average not at all) over the closed shape it came from.
- **inside cell**: the ray from the grid point towards +x crosses the surface an odd number of
  times. For a closed mesh this is the usual inside test; for an open scan it is a documented,
  direction-dependent answer (use ``surface`` mode for open scans).
- ``solid`` = inside cells plus surface cells (IF-Net's training input); ``surface`` = surface
  cells only.

IF-Net's rules (``surface="cube"``, ``inside="ray_z_both"``, with ``placement="cells"``):

- **surface cell**: some triangle overlaps the cell's closed cube (separating-axis test, see
  :mod:`app.core.crown.voxel_overlap`); a thicker shell than the ball rule.
- **inside cell**: the rays from the cell centre towards +z and towards -z both cross the
  surface an odd number of times. IF-Net jitters the centre by up to 0.05 cell with random
  numbers; the app uses the centre itself. A jitter only moves the point inside its own cell,
  so on a closed mesh the solid is the same either way (a cell the surface passes through is a
  surface cell anyway); on an open scan a ray moved sideways may meet other triangles.

Geometry outside the cube is clipped: only grid points in the cube are classified, but a ray
still counts the crossings beyond the cube, so a mesh cut by the cube stays filled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.core.arrays import sorted_unique

VoxelMode = Literal["solid", "surface"]
Placement = Literal["points", "cells"]
SurfaceRule = Literal["ball", "cube"]
InsideRule = Literal["ray_x", "ray_z_both"]

SURFACE_RADIUS = 0.5
"""Surface-cell distance threshold in units of the grid spacing h (see module docstring)."""

_PAIR_CHUNK = 1_000_000
_BARY_TOL = 1e-9
_MERGE_TOL = 1e-9


def grid_axis(resolution: int, placement: Placement = "points") -> np.ndarray:
    """Cell centres on one axis: ``linspace(-0.5, 0.5, R)`` (``points``) or
    ``(i + 0.5)/R - 0.5`` (``cells``)."""
    r = int(resolution)
    if placement == "points":
        return np.linspace(-0.5, 0.5, r)
    if placement == "cells":
        return (np.arange(r) + 0.5) / r - 0.5
    raise ValueError(f"placement must be 'points' or 'cells', got {placement!r}")


@dataclass(frozen=True)
class Grid:
    """Cell centres on one axis (the same on all three) and the cell side ``h``."""

    axis: np.ndarray
    h: float

    @classmethod
    def of(cls, resolution: int, placement: Placement = "points") -> Grid:
        r = int(resolution)
        return cls(grid_axis(r, placement), 1.0 / (r - 1) if placement == "points" else 1.0 / r)

    @property
    def size(self) -> int:
        return len(self.axis)


def _check(
    vertices: np.ndarray,
    faces: np.ndarray,
    resolution: int,
    mode: str,
    surface: str = "ball",
    inside: str = "ray_x",
) -> tuple:
    if mode not in ("solid", "surface"):
        raise ValueError(f"mode must be 'solid' or 'surface', got {mode!r}")
    if surface not in ("ball", "cube"):
        raise ValueError(f"surface rule must be 'ball' or 'cube', got {surface!r}")
    if inside not in ("ray_x", "ray_z_both"):
        raise ValueError(f"inside rule must be 'ray_x' or 'ray_z_both', got {inside!r}")
    if int(resolution) < 2:
        raise ValueError(f"resolution must be at least 2, got {resolution}")
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    return v, f, int(resolution)


# ----------------------------------------------------------------------------- fast


def index_range(lo: np.ndarray, hi: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the cell centres in [lo, hi], widened by a rounding margin (the exact test
    decides)."""
    g0, n = grid.axis[0], grid.size
    i0 = np.clip(np.ceil((lo - g0) / grid.h - 1e-7), 0, n)
    i1 = np.clip(np.floor((hi - g0) / grid.h + 1e-7), -1, n - 1)
    return i0.astype(np.int64), i1.astype(np.int64)


def pairs(counts: np.ndarray, chunk: int = _PAIR_CHUNK):
    """Yield (item ids, local offsets) enumerating ``counts[i]`` slots per item, in chunks."""
    ids = np.nonzero(counts > 0)[0]
    if ids.size == 0:
        return
    c = counts[ids]
    ends = np.cumsum(c)
    start = 0
    while start < ids.size:
        base = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, base + chunk, side="right"))
        stop = max(stop, start + 1)
        sel = ids[start:stop]
        sc = c[start:stop]
        rep = np.repeat(np.arange(sel.size), sc)
        offsets = np.arange(int(sc.sum()), dtype=np.int64) - np.repeat(np.cumsum(sc) - sc, sc)
        yield sel[rep], offsets
        start = stop


class _TriangleTerms:
    """Per-triangle vectors reused by every point tested against that triangle."""

    def __init__(self, tri: np.ndarray) -> None:
        self.a, self.b, self.c = tri[:, 0], tri[:, 1], tri[:, 2]
        self.edges = (self.b - self.a, self.c - self.b, self.a - self.c)
        self.edge_len2 = tuple(np.einsum("ij,ij->i", e, e) for e in self.edges)
        self.n = np.cross(self.edges[0], -self.edges[2])
        self.nn = np.einsum("ij,ij->i", self.n, self.n)
        self.side = tuple(np.cross(self.n, e) for e in self.edges)


def _point_triangle_dist2(p: np.ndarray, terms: _TriangleTerms, t: np.ndarray) -> np.ndarray:
    """Squared distance from points ``p`` to triangles ``t`` (row-wise), degenerate ones too."""
    starts = (terms.a[t], terms.b[t], terms.c[t])
    best = None
    inside = terms.nn[t] > 0
    for u, e, ee, side in zip(starts, terms.edges, terms.edge_len2, terms.side, strict=True):
        pu = p - u
        d = e[t]
        dd = ee[t]
        inside &= np.einsum("ij,ij->i", pu, side[t]) >= 0
        s = np.clip(np.einsum("ij,ij->i", pu, d) / np.where(dd > 0, dd, 1.0), 0.0, 1.0)
        q = pu - s[:, None] * d
        q2 = np.einsum("ij,ij->i", q, q)
        best = q2 if best is None else np.minimum(best, q2)
    nn = terms.nn[t]
    plane = np.einsum("ij,ij->i", p - starts[0], terms.n[t]) ** 2 / np.where(nn > 0, nn, 1.0)
    return np.where(inside, np.minimum(plane, best), best)


def _surface_fast(tri: np.ndarray, grid: Grid) -> np.ndarray:
    g, resolution = grid.axis, grid.size
    r = SURFACE_RADIUS * grid.h
    i0, i1 = index_range(tri.min(axis=1) - r, tri.max(axis=1) + r, grid)
    n = np.maximum(i1 - i0 + 1, 0)
    counts = n[:, 0] * n[:, 1] * n[:, 2]
    out = np.zeros(resolution**3, dtype=bool)
    terms = _TriangleTerms(tri)
    nlen = np.sqrt(terms.nn)
    unit_n = terms.n / np.where(nlen > 0, nlen, 1.0)[:, None]
    for t, local in pairs(counts):
        nyz = n[t, 1] * n[t, 2]
        ix = i0[t, 0] + local // nyz
        rem = local % nyz
        iy = i0[t, 1] + rem // n[t, 2]
        iz = i0[t, 2] + rem % n[t, 2]
        p = np.stack([g[ix], g[iy], g[iz]], axis=1)
        # cheap plane-distance prefilter (skipped for zero-area triangles)
        near = (nlen[t] == 0) | (np.abs(np.einsum("ij,ij->i", p - tri[t, 0], unit_n[t])) <= r)
        t, p = t[near], p[near]
        ix, iy, iz = ix[near], iy[near], iz[near]
        hit = _point_triangle_dist2(p, terms, t) <= r * r
        out[(ix[hit] * resolution + iy[hit]) * resolution + iz[hit]] = True
    return out.reshape((resolution,) * 3)


def _crossing_histograms(
    tri: np.ndarray, grid: Grid, both: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Crossings of the columns along the first coordinate, binned per column by how many cell
    centres lie below them (``< x``, and with ``both`` also ``<= x``): (R+1, R, R) each.

    Column scan: 2-D point-in-triangle in (y, z), barycentric x. Edge functions are evaluated
    once per undirected edge in a canonical vertex order, and a point exactly on an edge belongs
    to the triangle whose counter-clockwise traversal follows that order; a ray through a shared
    edge therefore counts one crossing, not two or none.
    """
    g, resolution = grid.axis, grid.size
    yz = tri[:, :, 1:]
    area = (yz[:, 1, 0] - yz[:, 0, 0]) * (yz[:, 2, 1] - yz[:, 0, 1]) - (
        yz[:, 1, 1] - yz[:, 0, 1]
    ) * (yz[:, 2, 0] - yz[:, 0, 0])
    j0, j1 = index_range(yz[:, :, 0].min(1), yz[:, :, 0].max(1), grid)
    k0, k1 = index_range(yz[:, :, 1].min(1), yz[:, :, 1].max(1), grid)
    nj = np.maximum(j1 - j0 + 1, 0)
    nk = np.maximum(k1 - k0 + 1, 0)
    counts = np.where(area != 0, nj * nk, 0)
    hist = np.zeros((resolution + 1) * resolution * resolution, dtype=np.int64)
    hist_on = hist.copy() if both else None
    for t, local in pairs(counts):
        j = j0[t] + local // nk[t]
        k = k0[t] + local % nk[t]
        py, pz = g[j], g[k]
        sign = np.sign(area[t])
        w = []
        inside = np.ones(t.size, dtype=bool)
        for s_i, e_i in ((1, 2), (2, 0), (0, 1)):
            s, e = yz[t, s_i], yz[t, e_i]
            swap = (s[:, 0] > e[:, 0]) | ((s[:, 0] == e[:, 0]) & (s[:, 1] > e[:, 1]))
            a = np.where(swap[:, None], e, s)
            b = np.where(swap[:, None], s, e)
            big_w = (b[:, 0] - a[:, 0]) * (pz - a[:, 1]) - (b[:, 1] - a[:, 1]) * (py - a[:, 0])
            wn = np.where(swap, -big_w, big_w) * sign
            owned = swap != (sign > 0)
            inside &= (wn > 0) | ((wn == 0) & owned)
            w.append(wn)
        t = t[inside]
        j, k = j[inside], k[inside]
        w0, w1, w2 = (x[inside] for x in w)
        xs = tri[t, :, 0]
        x = (w0 * xs[:, 0] + w1 * xs[:, 1] + w2 * xs[:, 2]) / (w0 + w1 + w2)
        column = j * resolution + k
        below = np.searchsorted(g, x, side="left")
        hist += np.bincount(below * resolution * resolution + column, minlength=hist.size)
        if hist_on is not None:
            upto = np.searchsorted(g, x, side="right")
            hist_on += np.bincount(upto * resolution * resolution + column, minlength=hist.size)
    shape = (resolution + 1, resolution, resolution)
    return hist.reshape(shape), None if hist_on is None else hist_on.reshape(shape)


def _odd_beyond(hist: np.ndarray) -> np.ndarray:
    """Per cell centre: odd number of crossings beyond it (``x > centre``)."""
    return (np.cumsum(hist[::-1], axis=0)[::-1][1:] & 1).astype(bool)


def _odd_before(hist_on: np.ndarray) -> np.ndarray:
    """Per cell centre: odd number of crossings before it (``x < centre``)."""
    return (np.cumsum(hist_on, axis=0)[:-1] & 1).astype(bool)


def _inside_fast(tri: np.ndarray, grid: Grid, rule: InsideRule) -> np.ndarray:
    """Ray parity along +x (``ray_x``), or along +z and -z both odd (``ray_z_both``)."""
    if rule == "ray_x":
        hist, _ = _crossing_histograms(tri, grid, both=False)
        return _odd_beyond(hist)
    hist, hist_on = _crossing_histograms(tri[:, :, [2, 0, 1]], grid, both=True)
    inside = _odd_beyond(hist) & _odd_before(hist_on)
    return np.ascontiguousarray(np.moveaxis(inside, 0, 2))


def _triangles(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    tri = v[f]
    return tri[np.isfinite(tri).all(axis=(1, 2))]


def voxelize(
    vertices_unit: np.ndarray,
    faces: np.ndarray,
    resolution: int,
    mode: VoxelMode = "solid",
    *,
    placement: Placement = "points",
    surface: SurfaceRule = "ball",
    inside: InsideRule = "ray_x",
) -> np.ndarray:
    """Voxelize a mesh given in unit-cube coordinates into a bool (R, R, R) grid, [x, y, z].

    ``solid`` marks inside plus surface cells, ``surface`` only surface cells; ``placement``,
    ``surface`` and ``inside`` choose the rules (module docstring). Geometry outside
    [-0.5, 0.5]^3 is clipped, never an error.
    """
    v, f, res = _check(vertices_unit, faces, resolution, mode, surface, inside)
    grid = Grid.of(res, placement)
    if f.size == 0:
        return np.zeros((res,) * 3, dtype=bool)
    tri = _triangles(v, f)
    if surface == "ball":
        vox = _surface_fast(tri, grid)
    else:
        from app.core.crown.voxel_overlap import overlap_cells

        vox = overlap_cells(tri, grid)
    if mode == "solid":
        vox |= _inside_fast(tri, grid, inside)
    return vox


# ------------------------------------------------------------------------- reference


def _ray_hits(tri: np.ndarray, normals: np.ndarray, y: float, z: float, lo, hi) -> np.ndarray:
    """Sorted first coordinates where the line through (., y, z) along the first axis meets
    the triangles (trimesh ray-plane intersection + barycentric test), one per shared edge."""
    import trimesh

    cand = np.nonzero((lo[:, 1] <= y) & (hi[:, 1] >= y) & (lo[:, 2] <= z) & (hi[:, 2] >= z))[0]
    cand = cand[normals[cand, 0] != 0]
    if cand.size == 0:
        return np.empty(0)
    origins = np.tile([0.0, y, z], (cand.size, 1))
    dirs = np.tile([1.0, 0.0, 0.0], (cand.size, 1))
    hits, valid = trimesh.intersections.planes_lines(tri[cand, 0], normals[cand], origins, dirs)
    cand = cand[valid]
    if cand.size == 0:
        return np.empty(0)
    bary = trimesh.triangles.points_to_barycentric(tri[cand], hits)
    xs = np.sort(hits[(bary >= -_BARY_TOL).all(axis=1), 0])
    return xs[np.diff(xs, prepend=-np.inf) > _MERGE_TOL]


def _inside_reference(
    tri: np.ndarray, grid: Grid, region: np.ndarray, rule: InsideRule
) -> np.ndarray:
    """Per column along the ray axis, per cell: count the hits beyond (and before) it."""
    import trimesh

    if rule == "ray_z_both":
        tri, region = tri[:, :, [2, 0, 1]], region[[2, 0, 1]]
    g, n = grid.axis, grid.size
    out = np.zeros((n,) * 3, dtype=bool)
    lo, hi = tri.min(axis=1), tri.max(axis=1)
    normals, ok = trimesh.triangles.normals(tri)
    tri, lo, hi = tri[ok], lo[ok], hi[ok]
    (x0, x1), (y0, y1), (z0, z1) = region
    for j in range(y0, y1):
        for k in range(z0, z1):
            xs = _ray_hits(tri, normals, g[j], g[k], lo, hi)
            for i in range(x0, x1):
                odd = np.count_nonzero(xs > g[i]) % 2 == 1
                if rule == "ray_z_both":
                    odd = odd and np.count_nonzero(xs < g[i]) % 2 == 1
                out[i, j, k] = odd
    return out if rule == "ray_x" else np.moveaxis(out, 0, 2)


def _surface_reference(tri: np.ndarray, grid: Grid, region: np.ndarray) -> np.ndarray:
    """Per cell centre: candidate triangles from a KD-tree, distance via trimesh closest_point."""
    import trimesh
    from scipy.spatial import cKDTree

    g, n = grid.axis, grid.size
    r = SURFACE_RADIUS * grid.h
    out = np.zeros((n,) * 3, dtype=bool)
    (x0, x1), (y0, y1), (z0, z1) = region
    ii, jj, kk = np.meshgrid(np.arange(x0, x1), np.arange(y0, y1), np.arange(z0, z1), indexing="ij")
    ii, jj, kk = ii.ravel(), jj.ravel(), kk.ravel()
    pts = np.stack([g[ii], g[jj], g[kk]], axis=1)
    centroid = tri.mean(axis=1)
    reach = float(np.linalg.norm(tri - centroid[:, None], axis=2).max()) + r
    tree = cKDTree(centroid)
    for start in range(0, len(pts), 4096):
        chunk = pts[start : start + 4096]
        lists = tree.query_ball_point(chunk, reach * (1 + 1e-9))
        lens = np.array([len(c) for c in lists])
        if lens.sum() == 0:
            continue
        pidx = np.repeat(np.arange(len(chunk)), lens)
        tidx = np.concatenate([np.asarray(c, dtype=np.int64) for c in lists if c])
        closest = trimesh.triangles.closest_point(tri[tidx], chunk[pidx])
        dist = np.linalg.norm(closest - chunk[pidx], axis=1)
        hit = sorted_unique(pidx[dist <= r]) + start
        out[ii[hit], jj[hit], kk[hit]] = True
    return out


def voxelize_reference(
    vertices_unit: np.ndarray,
    faces: np.ndarray,
    resolution: int,
    mode: VoxelMode = "solid",
    region: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None,
    *,
    placement: Placement = "points",
    surface: SurfaceRule = "ball",
    inside: InsideRule = "ray_x",
) -> np.ndarray:
    """Slow, direct version of :func:`voxelize` built on trimesh primitives and a per-cell
    triangle–cube test, for tests.

    ``region`` ((x0, x1), (y0, y1), (z0, z1)) in grid indices, end exclusive, restricts the work
    to a sub-block; cells outside it stay False.
    """
    v, f, res = _check(vertices_unit, faces, resolution, mode, surface, inside)
    grid = Grid.of(res, placement)
    reg = np.array(region if region is not None else [(0, res)] * 3, dtype=np.int64)
    if f.size == 0:
        return np.zeros((res,) * 3, dtype=bool)
    tri = _triangles(v, f)
    if surface == "ball":
        vox = _surface_reference(tri, grid, reg)
    else:
        from app.core.crown.voxel_overlap import overlap_cells_reference

        vox = np.zeros((res,) * 3, dtype=bool)
        block = tuple(slice(a, b) for a, b in reg)
        lo = grid.axis[reg[:, 0]] - grid.h
        hi = grid.axis[reg[:, 1] - 1] + grid.h
        near = ((tri.max(axis=1) >= lo) & (tri.min(axis=1) <= hi)).all(axis=1)
        vox[block] = overlap_cells_reference(tri[near], grid)[block]
    if mode == "solid":
        vox |= _inside_reference(tri, grid, reg, inside)
    return vox
