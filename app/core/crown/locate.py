"""Find the case frame of a scan: where the crown goes and how the tooth is turned.

A crown model sees its crop in a fixed frame (centre on the middle of the crown-to-be, occlusal
and mesio-distal directions on fixed axes), so a scan needs a :class:`CaseFrame` before it can
be used. This module proposes one from a technician's click (:func:`propose_frame`) or finds
the preparation without any help (:func:`find_preparation`).

The method, in short:

* **Occlusal direction.** A cropped intraoral scan is an open surface whose outward normals face
  the air. The vector area of an open surface (the area-weighted sum of its normals) depends only
  on its rim: for a jaw cut off below the gum it points out of the cut, towards the biting
  surface. Each connected piece of the scan gives one such vector; the two jaws give opposite
  ones, so their common line is the occlusal axis, and each piece falls in one jaw by its sign.
* **Height map.** Seen along the occlusal axis, each jaw becomes a height map on a 0.5 mm grid
  (the highest point of the surface per cell).
* **Preparation.** The preparation is the tooth cut down in height: along the arch it lies
  below both neighbours. For every cell and a fan of directions in the occlusal plane, the
  *deficit* is how far the cell lies below the highest surface found within 12 mm on both sides
  along that direction (the lower of the two sides). The gum beside the teeth, open on one side,
  and the narrow gaps between teeth, too small, give no tooth-sized deficit; the preparation
  gives a basin some 8 mm across and 1.5-4 mm deep. Its deepest smoothed point places the
  crown's axis in the plane, and the direction that encloses it best is the arch (mesial).
* **Centre height.** The model was trained with the frame centred halfway between the margin
  and the crown's top on the preparation's axis. The top is the mean of the highest surface on
  either side along the arch (the neighbours' cusps: the level the crown must reach). The
  margin is read on radial profiles around the axis: each runs down the stump's steepest wall
  to where the slope eases (the margin ledge); the lower third of these heights is the margin
  (a real margin dips; the gum beyond it lies lower still and is not the margin).
* **Is it a preparation?** A prepared stump stands free above its margin: on nearly every
  radial profile its wall falls well down to the margin. A natural tooth lying low in a full
  arch touches its neighbours (its profiles stay high there), and a missing tooth's gap holds
  no stump above the gum; both are refused.
* **A click** only chooses the site: the clicked jaw is searched around it first, then the
  other, so a click on the antagonist straight above the preparation finds the preparation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from app.core.crown.frame import CaseFrame

CELL_MM = 0.5
"""Edge of one height-map cell."""
REACH_MM = 12.0
"""How far along the arch the neighbours are looked for on each side of a cell."""
DIRECTIONS = 24
"""Directions in the occlusal plane over which a cell's enclosure is tried (every 7.5 deg)."""
MIN_DEPTH_MM = 1.5
"""A smoothed deficit below this is no preparation (natural fissures, embrasures, a lone
tooth's own curvature); synthetic preparations give 2.1 mm and more, the VBCD scan 1.8."""
MIN_STUMP_MM = 1.2
"""A preparation stands at least this high above its margin (else it is an empty gap)."""
FOOTPRINT_MM = 4.5
"""Radius of the crown's footprint when the stump's own size is not known."""
SEARCH_MM = 6.5
"""Radius around a candidate within which the stump is looked for."""
REFINE_STEPS = 1
"""Times the occlusal direction is re-read from the preparation's walls."""
WALL_WEIGHT = 0.7
"""Weight of the walls' axis against the jaw's occlusal direction in the final direction."""
WALL_MARGIN_MM = 1.2
"""Faces this far beyond the stump's top may still be its walls."""
DEFICIT_CAP_MM = 4.0
"""Deficits are capped here before smoothing: the gum between teeth lies far deeper than a
preparation's top, but it is narrow."""
RAYS = 24
"""Radial profiles around the preparation's axis on which the margin is looked for."""
RAY_STEP_MM = 0.25
"""Bin length along a radial profile (finer than the height map: a margin ledge is ~1 mm)."""
WALL_SLOPE = 1.0
"""A profile steeper than this (height per radial mm, over 0.5 mm) is still the stump's wall."""
MARGIN_QUANTILE = 33
"""Percentile of the rays' margin heights taken as the margin: a real margin dips (the crown's
bottom is its lowest point), while a few rays miss a synthetic ledge and land on the gum."""


FREE_DROP_MM = 1.5
"""Drop from the stump's top to the margin for a radial profile to count as a free wall."""
MIN_FREE_FRACTION = 0.7
"""A preparation's wall falls free on at least this share of its profiles (synthetic cases
give 1.0, the VBCD scan 0.88; a natural tooth lower than its neighbours in a full arch under
0.5): below it the scan holds no preparation."""


class LocateError(ValueError):
    """No plausible preparation or frame was found; the message says what to do instead."""


@dataclass(frozen=True)
class Location:
    """A found case frame with the figures it was read from (scan millimetres).

    ``depth_mm``: how far the preparation lies below its neighbours (smoothed deficit);
    ``top_mm`` and ``margin_mm``: the crown's top and margin heights along ``occlusal``;
    ``stump_mm``: the preparation's height above its margin; ``radius_mm``: the radius of a
    disc as large as the stump's upper half, seen along ``occlusal``; ``free_fraction``: the
    share of radial profiles on which the stump's wall falls at least ``FREE_DROP_MM`` to the
    margin (a preparation stands free all round, a natural tooth touches its neighbours).
    """

    frame: CaseFrame
    depth_mm: float
    top_mm: float
    margin_mm: float
    stump_mm: float
    radius_mm: float
    free_fraction: float = 1.0


# --------------------------------------------------------------------------- geometry helpers


def _face_labels(vertices: np.ndarray, faces: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected pieces of the mesh (through shared vertices): count and one label per face."""
    n = len(vertices)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(e), dtype=np.int8), (e[:, 0], e[:, 1])), shape=(n, n))
    k, labels = connected_components(graph, directed=False)
    return int(k), labels[faces[:, 0]]


def _vector_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) area-weighted face normals (half the cross product)."""
    tri = vertices[faces]
    return 0.5 * np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def _plane_basis(o: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors spanning the plane perpendicular to ``o`` (right-handed with it)."""
    helper = np.eye(3)[int(np.argmin(np.abs(o)))]
    e1 = np.cross(o, helper)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(o, e1)


def _surface_points(
    vertices: np.ndarray, faces: np.ndarray, per_mm2: float = 6.0
) -> tuple[np.ndarray, np.ndarray]:
    """Points covering the surface densely enough for the height map (vertices, face centres
    and area-weighted samples from a fixed seed), with the face each came from."""
    tri = vertices[faces]
    areas = np.linalg.norm(_vector_areas(vertices, faces), axis=1)
    total = float(areas.sum())
    n = int(min(max(total * per_mm2, 0), 400_000))
    rng = np.random.default_rng(0)
    idx = rng.choice(len(faces), n, p=areas / total) if n and total > 0 else np.zeros(0, int)
    uv = rng.random((len(idx), 2))
    flip = uv.sum(axis=1) > 1
    uv[flip] = 1 - uv[flip]
    t = tri[idx]
    samples = t[:, 0] + uv[:, :1] * (t[:, 1] - t[:, 0]) + uv[:, 1:] * (t[:, 2] - t[:, 0])
    points = np.concatenate([tri.reshape(-1, 3), tri.mean(axis=1), samples])
    face_of = np.concatenate([np.repeat(np.arange(len(faces)), 3), np.arange(len(faces)), idx])
    return points, face_of


def _check_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(v) == 0 or len(f) == 0:
        raise LocateError("the scan is empty: load a scan with the prepared tooth")
    if not np.isfinite(v).all():
        raise LocateError("the scan has non-finite vertex coordinates; re-export it")
    if f.min() < 0 or f.max() >= len(v):
        raise LocateError("the scan's faces point at missing vertices; re-export it")
    return v, f


# ------------------------------------------------------------------------ occlusal direction


def _jaw_axis(piece_va: np.ndarray, piece_area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The occlusal line from the pieces' vector areas, and each piece's jaw (+1 / -1 / 0).

    The line is the dominant direction of the pieces' vector areas (sign free); its sign is
    chosen so the larger jaw (by surface area) gets +1.
    """
    big = piece_area >= 0.02 * piece_area.sum()
    va = piece_va[big]
    _, vecs = np.linalg.eigh(va.T @ va)
    axis = vecs[:, -1]
    sign = np.sign(piece_va @ axis)
    summed = (piece_va * sign[:, None])[big].sum(axis=0)
    norm = float(np.linalg.norm(summed))
    if norm < 1e-3 * float(piece_area.sum()):
        raise LocateError(
            "cannot tell the biting direction: the scan is closed or its pieces face every "
            "way; load the open intraoral scan (jaw cut off below the gum), not a solid model"
        )
    axis = summed / norm
    jaw = np.where(np.abs(piece_va @ axis) > 0.05 * piece_area, np.sign(piece_va @ axis), 0.0)
    jaw = jaw * big
    if piece_area[jaw < 0].sum() > piece_area[jaw > 0].sum():
        axis, jaw = -axis, -jaw
    return axis, jaw


# ------------------------------------------------------------------------------ height maps


@dataclass
class _Maps:
    o: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    points: np.ndarray  # (N, 3) the jaw's surface points the map was made from
    origin: np.ndarray  # (2,) plane coordinates of cell (0, 0)'s corner
    height: np.ndarray  # (nx, ny) highest surface per cell, nan where empty
    closing: np.ndarray  # (D, nx, ny) lower of the two sides' highest surface per direction
    deficit: np.ndarray  # (nx, ny) max over directions of closing - height (0 where empty)
    smooth: np.ndarray  # (nx, ny) deficit smoothed over a tooth-sized window


def _height_map(points: np.ndarray, o: np.ndarray) -> tuple[np.ndarray, ...]:
    e1, e2 = _plane_basis(o)
    xy = np.stack([points @ e1, points @ e2], axis=1)
    h = points @ o
    origin = xy.min(axis=0) - 2 * CELL_MM
    ij = ((xy - origin) / CELL_MM).astype(np.int64)
    shape = tuple(ij.max(axis=0) + 3)
    grid = np.full(shape, -np.inf)
    np.maximum.at(grid, (ij[:, 0], ij[:, 1]), h)
    return e1, e2, origin, grid


def _maps(points: np.ndarray, o: np.ndarray) -> _Maps:
    e1, e2, origin, grid = _height_map(points, o)
    have = np.isfinite(grid)
    # close pin holes (cells the samples missed) and widen the probe lines to ~1.5 mm
    filled = ndimage.maximum_filter(grid, size=3, mode="constant", cval=-np.inf)
    height = np.where(have, grid, np.nan)
    steps = int(round(REACH_MM / CELL_MM))
    pad = steps + 1
    padded = np.pad(filled, pad, constant_values=-np.inf)
    nx, ny = grid.shape
    closing = np.empty((DIRECTIONS, nx, ny))
    t = np.arange(1, steps + 1)
    for k in range(DIRECTIONS):
        theta = np.pi * k / DIRECTIONS
        dx = np.rint(t * np.cos(theta)).astype(int)
        dy = np.rint(t * np.sin(theta)).astype(int)
        sides = []
        for s in (1, -1):
            best = np.full((nx, ny), -np.inf)
            for a, b in zip(s * dx, s * dy, strict=True):
                np.maximum(best, padded[pad + a : pad + a + nx, pad + b : pad + b + ny], out=best)
            sides.append(best)
        closing[k] = np.minimum(sides[0], sides[1])
    with np.errstate(invalid="ignore"):
        deficit_dir = closing - np.where(have, grid, np.inf)[None]
    deficit_dir = np.where(np.isfinite(deficit_dir), deficit_dir, 0.0)
    deficit = np.clip(deficit_dir.max(axis=0), 0.0, None)
    sigma = 2.0 / CELL_MM
    w = ndimage.gaussian_filter(have.astype(float), sigma)
    capped = np.minimum(deficit, DEFICIT_CAP_MM)
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = np.where(have & (w > 0.3), ndimage.gaussian_filter(capped, sigma) / w, 0.0)
    return _Maps(o, e1, e2, points, origin, height, closing, deficit, smooth)


def _cells_within(maps: _Maps, centre_ij: np.ndarray, radius_mm: float) -> np.ndarray:
    nx, ny = maps.height.shape
    ii, jj = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    d = np.hypot(ii - centre_ij[0], jj - centre_ij[1]) * CELL_MM
    return d <= radius_mm


def _stump_centre(maps: _Maps, around: np.ndarray) -> tuple[np.ndarray, float]:
    """Cell coordinates of the preparation's axis near ``around``: the centroid of the stump's
    upper half (enclosed cells standing well above the lowest surface nearby), and the radius
    (mm) of a disc of the same area."""
    have = np.isfinite(maps.height)
    centre = np.asarray(around, dtype=float)
    radius = FOOTPRINT_MM - 2.0
    for _ in range(3):
        near = _cells_within(maps, centre, SEARCH_MM) & have
        enclosed = near & (maps.deficit > 0.8)
        if not enclosed.any():
            break
        low = float(np.percentile(maps.height[near], 10))
        top = float(np.percentile(maps.height[enclosed], 90))
        upper = enclosed & (maps.height > low + 0.5 * (top - low))
        lab, n = ndimage.label(upper)
        if n == 0:
            break
        # the piece of stump closest to the current centre (ties: the larger)
        ii, jj = np.nonzero(upper)
        d = np.hypot(ii - centre[0], jj - centre[1])
        sizes = np.bincount(lab[upper], minlength=n + 1)
        key = d - 0.01 * sizes[lab[upper]]
        pick = lab[ii[int(np.argmin(key))], jj[int(np.argmin(key))]]
        sel = lab == pick
        ii, jj = np.nonzero(sel)
        new = np.array([ii.mean(), jj.mean()])
        radius = float(np.sqrt(len(ii) / np.pi)) * CELL_MM
        if np.hypot(*(new - centre)) < 0.5:
            centre = new
            break
        centre = new
    return centre, radius


def _ray_margins(maps: _Maps, axis_xy: np.ndarray, radius: float) -> np.ndarray:
    """The margin's height on each of ``RAYS`` radial profiles around the axis (``axis_xy``, in
    plane mm): where the stump's wall stops falling.

    Each profile is the highest surface per 0.25 mm ring in a narrow sector. Its wall is the
    steepest drop within reach of the stump's edge; walking down it, the margin is where the
    slope first eases (the ledge). The gum beyond lies lower, so reading the lowest surface
    would put the margin, and the crown's centre, too low. Rays without data are nan.
    """
    rel_xy = np.stack([maps.points @ maps.e1, maps.points @ maps.e2], axis=1) - axis_xy
    rr = np.hypot(rel_xy[:, 0], rel_xy[:, 1])
    reach = radius + 4.5
    near = rr < reach
    h, rr = (maps.points @ maps.o)[near], rr[near]
    ang = np.arctan2(rel_xy[near, 1], rel_xy[near, 0])
    nb = int(reach / RAY_STEP_MM) + 1
    run = int(round(0.5 / RAY_STEP_MM))
    lo, hi = int(0.5 * radius / RAY_STEP_MM), int((radius + 3.0) / RAY_STEP_MM)
    out = []
    for k in range(RAYS):
        a0 = -np.pi + 2 * np.pi * k / RAYS
        sel = np.abs((ang - a0 + np.pi) % (2 * np.pi) - np.pi) < np.pi / RAYS
        prof = np.full(nb, -np.inf)
        np.maximum.at(prof, np.minimum((rr[sel] / RAY_STEP_MM).astype(int), nb - 1), h[sel])
        ok = np.isfinite(prof)
        if ok.sum() < nb // 2:
            out.append(np.nan)
            continue
        idx = np.arange(nb)
        prof = np.interp(idx, idx[ok], prof[ok])
        drop = prof[lo + run : hi + run] - prof[lo:hi]
        if drop.size == 0:
            out.append(np.nan)
            continue
        j = lo + int(np.argmin(drop))
        end = min(j + int(3.0 / RAY_STEP_MM), nb - run - 1)
        while j < end and prof[j + run] - prof[j] < -WALL_SLOPE * 0.5:
            j += 1
        out.append(prof[j])
    return np.array(out)


def _neighbours_top(maps: _Maps, centre: np.ndarray, k: int) -> float:
    """The level the crown must reach: the highest surface on each side of the axis along the
    arch direction ``k`` (the neighbours' cusps), the mean of the two sides.

    The lower side alone (the closing) would set the crown by its lower neighbour.
    """
    have = np.isfinite(maps.height)
    filled = ndimage.maximum_filter(
        np.where(have, maps.height, -np.inf), size=3, mode="constant", cval=-np.inf
    )
    ii, jj = np.nonzero(_cells_within(maps, centre, 1.5) & have)
    theta = np.pi * k / DIRECTIONS
    nx, ny = filled.shape
    sides = []
    for s in (1, -1):
        best = np.full(len(ii), -np.inf)
        for t in range(1, int(round(REACH_MM / CELL_MM)) + 1):
            a = ii + int(np.rint(s * t * np.cos(theta)))
            b = jj + int(np.rint(s * t * np.sin(theta)))
            inside = (a >= 0) & (b >= 0) & (a < nx) & (b < ny)
            best[inside] = np.maximum(best[inside], filled[a[inside], b[inside]])
        best = best[np.isfinite(best)]
        if best.size:
            sides.append(float(np.median(best)))
    return float(np.mean(sides)) if len(sides) == 2 else float("nan")


def _read_site(maps: _Maps, peak_ij: np.ndarray) -> Location:
    """The crown's axis, arch direction and centre height around a deficit peak."""
    have = np.isfinite(maps.height)
    centre, stump_radius = _stump_centre(maps, peak_ij)
    foot = _cells_within(maps, centre, stump_radius + 2.0) & have
    core = _cells_within(maps, centre, 2.0) & have
    if not core.any() or not foot.any():
        raise LocateError("the preparation's surroundings are missing from the scan")
    # arch direction: the directions that enclose the footprint best, as a doubled-angle mean
    fd = maps.closing[:, foot] - maps.height[foot][None]
    fd = np.where(np.isfinite(fd), np.clip(fd, 0, None), 0.0).mean(axis=1)
    weight = np.clip(fd - 0.5 * fd.max(), 0, None)
    ang = 2 * np.pi * np.arange(DIRECTIONS) / DIRECTIONS
    theta = 0.5 * np.arctan2((weight * np.sin(ang)).sum(), (weight * np.cos(ang)).sum())
    best = int(np.argmax(fd))
    mesial = np.cos(theta) * maps.e1 + np.sin(theta) * maps.e2
    xy = maps.origin + (centre + 0.5) * CELL_MM
    top = _neighbours_top(maps, centre, best)
    if not np.isfinite(top):
        top = float(np.nanmax(maps.height[foot]))
    rays = _ray_margins(maps, xy, stump_radius)
    rays = rays[np.isfinite(rays)]
    if len(rays) >= RAYS // 3:
        margin = float(np.percentile(rays, MARGIN_QUANTILE))
    else:
        margin = float(np.percentile(maps.height[foot], 10))
    stump = float(np.median(maps.height[core])) - margin
    free = float(np.mean(np.median(maps.height[core]) - rays >= FREE_DROP_MM)) if rays.size else 0.0
    h = 0.5 * (top + margin)
    c = xy[0] * maps.e1 + xy[1] * maps.e2 + h * maps.o
    frame = CaseFrame(center=tuple(c), occlusal=tuple(maps.o), mesial=tuple(mesial))
    depth = float(maps.smooth[tuple(np.rint(centre).astype(int))])
    return Location(frame, depth, top, margin, stump, stump_radius, free)


# ------------------------------------------------------------------------------- public API


def locate(
    vertices: np.ndarray,
    faces: np.ndarray,
    point: np.ndarray | None = None,
    *,
    radius_mm: float = 6.0,
) -> Location:
    """Find the preparation (near ``point`` when given) and read its frame, with diagnostics.

    See :func:`find_preparation` and :func:`propose_frame`, which return only the frame.
    """
    v, f = _check_mesh(vertices, faces)
    k, labels = _face_labels(v, f)
    va = _vector_areas(v, f)
    areas = np.linalg.norm(va, axis=1)
    piece_va = np.zeros((k, 3))
    np.add.at(piece_va, labels, va)
    piece_area = np.bincount(labels, weights=areas, minlength=k)
    if piece_area.sum() < 20.0:
        raise LocateError("the scan is too small to hold a tooth (under 20 mm² of surface)")
    points, face_of = _surface_points(v, f)
    face_centres = v[f].mean(axis=1)

    def keep_faces(keep_points: np.ndarray) -> np.ndarray:
        out = np.zeros(len(f), dtype=bool)
        out[face_of[keep_points]] = True
        return out

    point_piece = None
    if point is not None:
        p = np.asarray(point, dtype=np.float64).reshape(3)
        nearest = int(np.argmin(np.linalg.norm(points - p, axis=1)))
        if np.linalg.norm(points[nearest] - p) > 2.0:
            raise LocateError("the clicked point is not on the scan; click on the preparation")
        point_piece = labels[face_of[nearest]]

    axis, jaw = _jaw_axis(piece_va, piece_area)
    candidates = []
    for sign in (1.0, -1.0):
        members = jaw == sign
        if point_piece is not None:
            if jaw[point_piece] == 0:
                members = np.zeros_like(members)
                members[point_piece] = True
                sign = 1.0 if piece_va[point_piece] @ axis >= 0 else -1.0
        if not members.any():
            continue
        o = sign * axis
        keep = members[labels[face_of]]
        maps = _maps(points[keep], o)
        have = np.isfinite(maps.height)
        score = maps.smooth.copy()
        if point is not None:
            pxy = np.array([p @ maps.e1, p @ maps.e2])
            pij = (pxy - maps.origin) / CELL_MM - 0.5
            score[~_cells_within(maps, pij, radius_mm)] = 0.0
        score[~have] = 0.0
        peak = np.array(np.unravel_index(int(np.argmax(score)), score.shape))
        own = point_piece is None or jaw[point_piece] in (0, sign)
        candidates.append((float(score[tuple(peak)]), maps, peak, keep, own))
        if point_piece is not None and jaw[point_piece] == 0:
            break
    if not candidates:
        raise LocateError("no jaw surface found; load the intraoral scan of the prepared arch")
    # the clicked jaw first, then the deeper site
    candidates.sort(key=lambda c: (not c[4], -c[0]))
    best_score = max(c[0] for c in candidates)
    if best_score < MIN_DEPTH_MM:
        where = "near the clicked point" if point is not None else "in the scan"
        raise LocateError(
            f"no preparation found {where}: no tooth lies clearly below its neighbours "
            f"(deepest gap {best_score:.1f} mm). The scan must show the prepared tooth with a "
            "neighbour on each side; otherwise place the crown centre by hand"
        )
    # the other jaw when a site is no preparation: a click on the antagonist above the
    # preparation finds it in the jaw below
    first_error = None
    for score, maps, peak, keep, _ in candidates:
        if score < MIN_DEPTH_MM:
            break
        try:
            return _refine_and_check(maps, peak, keep_faces(keep), points[keep], face_centres, va)
        except LocateError as error:
            first_error = first_error or error
    raise first_error


def _refine_and_check(
    maps: _Maps,
    peak: np.ndarray,
    jaw_faces: np.ndarray,
    jaw_points: np.ndarray,
    face_centres: np.ndarray,
    va: np.ndarray,
) -> Location:
    """Read the site at ``peak``, re-read it along the preparation's own axis and check that it
    is a preparation (deep enough, standing free above a margin, with a stump)."""
    areas = np.linalg.norm(va, axis=1)
    loc = _read_site(maps, peak)
    normals = va / np.maximum(areas[:, None], 1e-12)
    o_jaw = maps.o
    for _ in range(REFINE_STEPS):
        # the preparation's axis from its walls, then read the site again around it
        o_walls = _wall_axis(face_centres[jaw_faces], normals[jaw_faces], areas[jaw_faces], loc)
        if o_walls is None:
            break
        # between the jaw's direction and the walls': real preparations are not
        # always cut symmetric about the tooth's axis, and crops are not cut square to it
        o_new = WALL_WEIGHT * o_walls + (1 - WALL_WEIGHT) * o_jaw
        maps = _maps(jaw_points, o_new / np.linalg.norm(o_new))
        c = np.asarray(loc.frame.center)
        xy = np.array([c @ maps.e1, c @ maps.e2])
        loc = _read_site(maps, (xy - maps.origin) / CELL_MM - 0.5)
    if loc.depth_mm < MIN_DEPTH_MM:
        raise LocateError(
            f"no preparation found: the best candidate, at {_fmt(loc.frame.center)} mm, lies "
            f"only {loc.depth_mm:.1f} mm below its surroundings. The scan must show the "
            "prepared tooth with a neighbour on each side; otherwise place the crown centre by "
            "hand"
        )
    if loc.free_fraction < MIN_FREE_FRACTION:
        raise LocateError(
            f"no preparation found: the tooth lying deepest, at {_fmt(loc.frame.center)} mm, does "
            f"not stand free above a margin (its wall falls to a margin on only "
            f"{100 * loc.free_fraction:.0f}% of its sides): it looks like a natural tooth. Load "
            "the scan of the prepared arch, or place the crown centre by hand"
        )
    if loc.stump_mm < MIN_STUMP_MM:
        raise LocateError(
            f"the gap found at {_fmt(loc.frame.center)} mm has no prepared stump in it (only "
            f"{loc.stump_mm:.1f} mm above the gum): it looks like a missing tooth. Check the "
            "scan holds the preparation, or place the crown centre by hand"
        )
    return loc


def _wall_axis(
    centres: np.ndarray, normals: np.ndarray, areas: np.ndarray, loc: Location
) -> np.ndarray | None:
    """The preparation's axis as the direction most nearly perpendicular to its side walls.

    The walls are the faces near the axis (within the stump's radius and ``WALL_MARGIN_MM``),
    between the margin and
    the stump's top, that face sideways. A tapered stump's walls all lean by the same angle,
    so the direction least along their normals is still its axis.
    """
    o = np.asarray(loc.frame.occlusal)
    c = np.asarray(loc.frame.center)
    rel = centres - c
    h = rel @ o
    r = np.linalg.norm(rel - h[:, None] * o, axis=1)
    c_h = float(c @ o)
    lo, hi = loc.margin_mm - c_h + 0.8, loc.margin_mm - c_h + loc.stump_mm - 0.8
    wall = (
        (r <= loc.radius_mm + WALL_MARGIN_MM) & (h >= lo) & (h <= hi) & (np.abs(normals @ o) < 0.7)
    )
    if areas[wall].sum() < 10.0:
        return None
    n = normals[wall] * np.sqrt(areas[wall])[:, None]
    _, vecs = np.linalg.eigh(n.T @ n)
    axis = vecs[:, 0]
    if axis @ o < np.cos(np.radians(25)):
        if -axis @ o < np.cos(np.radians(25)):
            return None
        axis = -axis
    return axis / np.linalg.norm(axis)


def _fmt(c: tuple[float, ...]) -> str:
    return ", ".join(f"{x:.1f}" for x in c)


def find_preparation(vertices: np.ndarray, faces: np.ndarray) -> CaseFrame:
    """Find the prepared tooth in a scan and return its case frame.

    The scan (mm, any rigid orientation) should hold the preparation with its neighbours and
    may hold the antagonist. The preparation is found as the tooth-sized basin lying deepest
    below its neighbours along the arch (see the module notes).

    Raises
    ------
    LocateError
        When the scan has no open jaw surface, or no tooth lies clearly below neighbours on both
        sides, or the deepest gap holds no stump (a missing tooth).
    """
    return locate(vertices, faces).frame


def propose_frame(
    vertices: np.ndarray, faces: np.ndarray, point: np.ndarray, *, radius_mm: float = 6.0
) -> CaseFrame:
    """Propose the case frame for a preparation the technician clicked at ``point`` (mm).

    The click only says which tooth: the preparation is searched within ``radius_mm`` of it (in
    the occlusal plane) and the frame is read from the geometry, centred where the crown model
    expects it (on the preparation's axis, halfway between margin and the crown's top), not at
    the click.

    Raises
    ------
    LocateError
        When the point is off the scan, or nothing near it lies below its neighbours.
    """
    return locate(vertices, faces, point, radius_mm=radius_mm).frame
