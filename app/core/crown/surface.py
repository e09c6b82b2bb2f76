"""From model values on a grid over [-0.5, 0.5]^3 to a closed triangle surface.

Two ways to fill the grid: dense (every grid point through the model, as IF-Net generates), or
coarse-to-fine (a coarse grid first, then only points near where the coarse values cross the
decision level; the rest is interpolated from the coarse values, which keeps their sign).
Marching cubes then runs on the grid padded with one layer of a large negative value, so a crown
cut by the box still closes at the box faces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.core.arrays import sorted_unique
from app.core.crown.voxelize import grid_axis

Evaluate = Callable[[np.ndarray], np.ndarray]
"""Unit-cube points (N, 3) -> raw model values (N,)."""

PAD_VALUE = -1.0e6
_CHUNK = 1 << 18
MC_SLAB = 16
"""Grid layers per marching-cubes call. scikit-image's marching cubes holds the interpreter for
its whole run (435 ms for a 257^3 grid, the window frozen meanwhile), so the grid goes through
in slabs of this many layers (~30 ms each at 257) and other threads run between them."""


def grid_points(resolution: int, flat: np.ndarray) -> np.ndarray:
    """Unit-cube coordinates (N, 3) of flat indices into an [x, y, z] grid."""
    g = grid_axis(resolution)
    rr = resolution * resolution
    return np.stack([g[flat // rr], g[(flat // resolution) % resolution], g[flat % resolution]], 1)


def _plane_points(resolution: int, x0: int, x1: int) -> np.ndarray:
    """Coordinates of the grid points in x-planes x0..x1-1, in flat [x, y, z] order."""
    g = grid_axis(resolution)
    pts = np.empty((x1 - x0, resolution, resolution, 3), dtype=np.float64)
    pts[..., 0] = g[x0:x1, None, None]
    pts[..., 1] = g[None, :, None]
    pts[..., 2] = g[None, None, :]
    return pts.reshape(-1, 3)


def _evaluate_flat(evaluate: Evaluate, resolution: int, flat: np.ndarray, chunk: int):
    out = np.empty(len(flat), dtype=np.float32)
    for start in range(0, len(flat), chunk):
        sel = flat[start : start + chunk]
        out[start : start + len(sel)] = evaluate(grid_points(resolution, sel))
    return out


def evaluate_dense(evaluate: Evaluate, resolution: int, chunk: int = _CHUNK) -> np.ndarray:
    """Model values at every point of the resolution^3 grid, float32 [x, y, z]."""
    values = np.empty((resolution,) * 3, dtype=np.float32)
    planes = max(1, chunk // (resolution * resolution))
    for x0 in range(0, resolution, planes):
        x1 = min(resolution, x0 + planes)
        values[x0:x1] = evaluate(_plane_points(resolution, x0, x1)).reshape(x1 - x0, resolution, -1)
    return values


def _along(axis: int, sl: slice) -> tuple[slice, ...]:
    idx = [slice(None)] * 3
    idx[axis] = sl
    return tuple(idx)


def upsample_linear(values: np.ndarray, factor: int) -> np.ndarray:
    """Trilinear upsampling with corners kept: n points per axis -> (n - 1) * factor + 1."""
    out = np.asarray(values, dtype=np.float32)
    for axis in range(3):
        n = out.shape[axis]
        shape = list(out.shape)
        shape[axis] = (n - 1) * factor + 1
        dst = np.empty(shape, dtype=np.float32)
        dst[_along(axis, slice(None, None, factor))] = out
        lo, hi = out[_along(axis, slice(None, -1))], out[_along(axis, slice(1, None))]
        for k in range(1, factor):
            w = np.float32(k / factor)
            dst[_along(axis, slice(k, None, factor))] = lo * (1 - w) + hi * w
        out = dst
    return out


def _dilate(cells: np.ndarray) -> np.ndarray:
    """Dilation by one cell in all 26 directions, as three separable passes."""
    out = cells
    for axis in range(3):
        src = out
        out = src.copy()
        out[_along(axis, slice(1, None))] |= src[_along(axis, slice(None, -1))]
        out[_along(axis, slice(None, -1))] |= src[_along(axis, slice(1, None))]
    return out


def _straddling_cells(values: np.ndarray, level: float) -> np.ndarray:
    """Cells ((n-1)^3) whose 8 corner values are not all on one side of ``level``."""
    inside = values > level
    any_in = np.zeros(tuple(s - 1 for s in inside.shape), dtype=bool)
    all_in = np.ones_like(any_in)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                corner = inside[dx : dx + any_in.shape[0], dy : dy + any_in.shape[1],
                                dz : dz + any_in.shape[2]]  # fmt: skip
                any_in |= corner
                all_in &= corner
    return any_in & ~all_in


def _near_cells(values: np.ndarray, level: float, margin: float) -> np.ndarray:
    """Cells ((n-1)^3) with a corner value within ``margin`` of ``level``."""
    near = np.abs(values - np.float32(level)) <= margin
    return _cells_with_corner(near)


def _cells_with_corner(points: np.ndarray) -> np.ndarray:
    """Cells ((n-1)^3) that have at least one flagged corner point (n^3)."""
    out = points
    for axis in range(3):
        out = out[_along(axis, slice(None, -1))] | out[_along(axis, slice(1, None))]
    return out


_NEIGHBOURS = np.array(
    [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)
     if (dx, dy, dz) != (0, 0, 0)]
)  # fmt: skip


def _cell_corners(cells: np.ndarray, n: int) -> np.ndarray:
    """Flat point indices (len(cells), 8) of the corners of flat cell indices, grid n^3."""
    m = n - 1
    cx, rest = np.divmod(cells, m * m)
    cy, cz = np.divmod(rest, m)
    base = (cx * n + cy) * n + cz
    offsets = np.array([(dx * n + dy) * n + dz for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)])
    return base[:, None] + offsets


def _neighbour_cells(cells: np.ndarray, m: int) -> np.ndarray:
    """The distinct flat indices of the 26 neighbours (inside the m^3 cell grid) of ``cells``."""
    cx, rest = np.divmod(cells, m * m)
    cy, cz = np.divmod(rest, m)
    xyz = (np.stack([cx, cy, cz], 1)[:, None, :] + _NEIGHBOURS[None]).reshape(-1, 3)
    xyz = xyz[((xyz >= 0) & (xyz < m)).all(1)]
    return sorted_unique((xyz[:, 0] * m + xyz[:, 1]) * m + xyz[:, 2])


def _trace(
    evaluate: Evaluate,
    values: np.ndarray,
    exact: np.ndarray,
    seeds: np.ndarray,
    level: float,
    chunk: int,
) -> tuple[int, np.ndarray]:
    """Evaluate the corners of the ``seeds`` cells, then those of every neighbour of an
    evaluated cell that straddles ``level``, until no straddling cell has an unvisited
    neighbour.

    ``values`` and ``exact`` (n^3) are updated in place. Returns the number of points
    evaluated and the flat indices of the straddling cells found.
    """
    n = values.shape[0]
    m = n - 1
    flat, known = values.reshape(-1), exact.reshape(-1)
    visited = np.zeros(m**3, dtype=bool)
    frontier = np.flatnonzero(seeds)
    evaluated = 0
    found = [np.zeros(0, np.int64)]
    while frontier.size:
        visited[frontier] = True
        corners = _cell_corners(frontier, n)
        todo = sorted_unique(corners)
        todo = todo[~known[todo]]
        if todo.size:
            flat[todo] = _evaluate_flat(evaluate, n, todo, chunk)
            known[todo] = True
            evaluated += int(todo.size)
        inside = flat[corners] > level
        straddling = frontier[inside.any(1) & ~inside.all(1)]
        found.append(straddling)
        near = _neighbour_cells(straddling, m)
        frontier = near[~visited[near]]
    return evaluated, np.concatenate(found)


def _evaluated_cells(cells: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """Which of the flagged ``cells`` have all 8 corners evaluated."""
    flat = np.flatnonzero(cells)
    out = np.zeros(cells.shape, dtype=bool)
    out.reshape(-1)[flat[exact.reshape(-1)[_cell_corners(flat, exact.shape[0])].all(1)]] = True
    return out


@dataclass
class CoarseToFineStats:
    """Per-level resolutions and model points evaluated (the first level is dense)."""

    levels: list[int]
    evaluated: list[int]


def evaluate_coarse_to_fine(
    evaluate: Evaluate,
    resolution: int,
    coarse_resolution: int,
    level: float,
    chunk: int = _CHUNK,
    band: int = 0,
    margin: float = 0.0,
) -> tuple[np.ndarray, CoarseToFineStats]:
    """Grid values at ``resolution`` evaluating the model densely only at ``coarse_resolution``.

    Each step refines the grid (by 2 while (resolution-1)/(current-1) is even, else by the
    remaining odd factor); fine points take the linear interpolation of the coarse values
    unless evaluated. The fine cells inside coarse cells whose corners straddle ``level`` or
    come within ``margin`` of it (dilated by ``band`` coarse cells) are seeds, and the band
    then grows by tracing: every neighbour of an evaluated fine cell that straddles is
    evaluated too, until none is left, so the band follows the surface wherever it leaves the
    seeds (a thin shell the coarse grid only grazes). With a step of 2 every fine point is a
    corner of a fine cell that has a coarse point as its other corner, so an interpolated point
    can take the wrong side only in a straddling fine cell that no trace reached: a surface
    component that no coarse cell sees or comes within ``margin`` of.
    With a larger odd step a pocket can lie inside a coarse cell without touching its corners,
    so every coarse cell holding a straddling fine cell is evaluated whole and traced again.
    """
    if (resolution - 1) % (coarse_resolution - 1):
        raise ValueError("(resolution - 1) must be a multiple of (coarse_resolution - 1)")
    values = evaluate_dense(evaluate, coarse_resolution, chunk)
    stats = CoarseToFineStats([coarse_resolution], [values.size])
    exact = np.ones(values.shape, dtype=bool)
    cur = coarse_resolution
    while cur < resolution:
        ratio = (resolution - 1) // (cur - 1)
        step = 2 if ratio % 2 == 0 else ratio
        new = (cur - 1) * step + 1
        cells = _straddling_cells(values, level)
        if margin > 0:
            cells |= _near_cells(values, level, margin)
        for _ in range(band):
            cells = _dilate(cells)
        fine_exact = np.zeros((new,) * 3, dtype=bool)
        fine_exact[::step, ::step, ::step] = exact
        values = upsample_linear(values, step)
        seeds = cells.repeat(step, 0).repeat(step, 1).repeat(step, 2)
        evaluated = 0
        while seeds.any():
            count, found = _trace(evaluate, values, fine_exact, seeds, level, chunk)
            evaluated += count
            if step == 2:
                break
            holders = np.zeros(cells.shape, dtype=bool)
            fx, rest = np.divmod(found, (new - 1) ** 2)
            fy, fz = np.divmod(rest, new - 1)
            holders[fx // step, fy // step, fz // step] = True
            whole = holders.repeat(step, 0).repeat(step, 1).repeat(step, 2)
            seeds = whole & ~_evaluated_cells(whole, fine_exact)
        exact = fine_exact
        stats.levels.append(new)
        stats.evaluated.append(evaluated)
        cur = new
    return values, stats


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    tri = vertices[faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def _merge_grid_point_vertices(verts: np.ndarray, faces: np.ndarray):
    """Marching cubes makes one vertex per crossed edge; where a value equals the level exactly,
    several edges share the grid point and their vertices coincide. Only such vertices (all
    coordinates integral, in index space) can coincide, so only they are merged."""
    return _merge_coincident(verts, faces, np.flatnonzero((verts == np.round(verts)).all(axis=1)))


def _merge_coincident(verts: np.ndarray, faces: np.ndarray, candidates: np.ndarray):
    """Merge the vertices ``candidates`` (indices) that coincide into the first of each group;
    faces that collapse and vertices left unused are dropped."""
    if candidates.size == 0:
        return verts, faces
    _, first, inverse = np.unique(verts[candidates], axis=0, return_index=True, return_inverse=True)
    target = np.arange(len(verts))
    target[candidates] = candidates[first][inverse.reshape(-1)]
    if np.array_equal(target[candidates], candidates):
        return verts, faces
    f = target[faces]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
    used = sorted_unique(f)
    remap = np.full(len(verts), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return verts[used], remap[f]


def marching_cubes_in_slabs(
    grid: np.ndarray, level: float, slab: int = MC_SLAB
) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's marching cubes over ``grid``, run on slabs of ``slab`` cell layers along
    the first axis: the same triangles as one call, with the vertices two slabs both make on
    their shared layer merged (those at grid points stay as one call leaves them, one per
    edge, for :func:`_merge_grid_point_vertices`). Vertices (float64, index space), faces.
    """
    from skimage.measure import marching_cubes

    n = grid.shape[0]
    verts: list[np.ndarray] = []
    faces: list[np.ndarray] = []
    count = 0
    for start in range(0, max(n - 1, 1), slab):
        part = grid[start : min(start + slab, n - 1) + 1]
        if not part.min() <= level <= part.max():
            continue  # no crossing in these layers (marching_cubes refuses such a slab)
        try:
            v, f = marching_cubes(part, level=level)[:2]
        except RuntimeError:  # the level is reached but not crossed: no surface here
            continue
        v[:, 0] += np.float32(start)  # in float32, as one call rounds its coordinates
        verts.append(v)
        faces.append(f.astype(np.int64) + count)
        count += len(v)
    if not verts:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    v, f = np.concatenate(verts).astype(np.float64), np.concatenate(faces)
    if len(verts) == 1:
        return v, f
    # a vertex inside an edge of a shared layer was made by both slabs; vertices at grid
    # points are left to _merge_grid_point_vertices, as after one call
    on_layer = np.isin(v[:, 0], np.arange(slab, n - 1, slab, dtype=np.float64))
    return _merge_coincident(v, f, np.flatnonzero(on_layer & (v != np.round(v)).any(axis=1)))


def extract_surface(values: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Marching cubes at ``level`` (occupied = above) -> unit-cube vertices and outward faces.

    Returns None when no grid value is above ``level`` (no surface). Coincident vertices are
    merged so zero-area triangles from values exactly at the level collapse away.
    """
    if not np.isfinite(level):
        raise ValueError("decision level must be finite")
    if not (values > level).any():
        return None
    res = values.shape[0]
    padded = np.pad(values.astype(np.float32), 1, constant_values=PAD_VALUE)
    verts, faces = marching_cubes_in_slabs(padded, level)
    verts, faces = _merge_grid_point_vertices(verts, faces)
    verts = (verts - 1.0) / (res - 1) - 0.5
    if len(faces) == 0:
        return None
    if signed_volume(verts, faces) < 0:
        faces = faces[:, ::-1].copy()
    return verts, faces
