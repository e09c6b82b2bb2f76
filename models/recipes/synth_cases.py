"""Synthetic crown cases: a prepared tooth, its neighbours, the antagonist and the target crown.

Every shape is an implicit field (negative inside, roughly millimetres) built from
superellipse cross-sections with cusp bumps, so booleans are plain ``max``/``min`` and the
crown's occupancy is exact at any point. Surfaces come from marching cubes. The context is
meshed on a world-aligned grid over a crop box around the preparation, so it is open wherever
the crop cuts it (gum bottoms, far neighbours, antagonist root), as a cropped intraoral scan is.
The crown is meshed on its own fine grid and is closed. Deterministic from the seed; numpy,
scikit-image and trimesh only (no torch, no network).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import trimesh
from skimage.measure import marching_cubes

TOOTH_TYPES = ("molar", "premolar", "incisor")

Field = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Case:
    """One synthetic case, all in world millimetres.

    ``context``: merged, open scan mesh (prep + neighbours + antagonist + gum stubs, cropped).
    ``crown``: closed target restoration. ``prep_center``: the preparation's centre (on its
    axis, halfway between margin and original cusp tips). ``crown_inside(points_mm)`` gives exact
    occupancy of the crown for any points. ``axes`` holds the case's mesio-distal (along the
    row), bucco-lingual and occlusal directions as columns. ``margin_center`` is the
    point of the preparation's axis at the margin height: what a technician can see on a scan
    (it carries no information about the crown's height, unlike ``prep_center``).
    """

    context: trimesh.Trimesh
    crown: trimesh.Trimesh
    prep_center: np.ndarray
    tooth_type: str
    seed: int
    margin: str
    crown_inside: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    margin_center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    crop_center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    crop_half: float = 10.5
    axes: np.ndarray = field(default_factory=lambda: np.eye(3))  # columns: row, bucco-lingual, up


@dataclass(frozen=True)
class ToothParams:
    """Shape of one natural tooth in its own frame (x mesio-distal, y bucco-lingual, z occlusal;
    z = 0 at the cemento-enamel junction)."""

    kind: str
    a: float  # half mesio-distal width at the height of contour
    b: float  # half bucco-lingual width
    hc: float  # crown height from CEJ to cusp tips
    n: float  # superellipse exponent of the cross-section
    cusps: tuple[tuple[float, float, float, float], ...]  # (x, y, height, sigma), mm
    edge: float  # drop of the occlusal table towards the rim (rounding)
    fossa: float  # depth of the central fossa


def _smax(p: np.ndarray, q: np.ndarray, k: float) -> np.ndarray:
    """Smooth maximum (rounded intersection) with blend width ``k`` mm."""
    return 0.5 * (p + q + np.sqrt((p - q) ** 2 + k * k))


def _superellipse_rho(x, y, ax, by, n):
    return (np.abs(x / ax) ** n + np.abs(y / by) ** n) ** (1.0 / n)


def _profile(p: ToothParams, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half widths (A, B) of the cross-section at height ``z``: narrow at the CEJ, widest at
    about a third of the crown height, tapering along the root; incisors form a wedge."""
    zmax = 0.35 * p.hc
    sa = np.where(
        z < 0,
        0.78 * (1.0 + 0.25 * np.maximum(z, -12.0) / 12.0),
        np.where(
            z < zmax,
            0.78 + 0.22 * np.sin(0.5 * np.pi * np.clip(z / zmax, 0, 1)),
            1.0 - 0.08 * np.clip((z - zmax) / (p.hc - zmax), 0, 1.5) ** 2,
        ),
    )
    if p.kind == "incisor":
        t = np.clip((z - zmax) / (p.hc - zmax), 0, 1.3)
        sb = np.where(z < zmax, sa, 1.0 - 0.72 * t)
        sb = np.maximum(sb, 0.12)
    else:
        sb = sa
    return p.a * sa, p.b * sb


def _top(p: ToothParams, x: np.ndarray, y: np.ndarray, cusp_scale: float = 1.0) -> np.ndarray:
    """Occlusal height field: cusp bumps on a table that rounds off towards the rim."""
    rho = _superellipse_rho(x, y, p.a, p.b, p.n)
    if p.kind == "incisor":
        t = p.hc - 0.35 - 0.8 * np.abs(x / p.a) ** 3
        for cx, _cy, h, s in p.cusps:
            t = t + cusp_scale * h * np.exp(-((x - cx) ** 2) / (2 * s * s))
        return t
    hmax = max(c[2] for c in p.cusps)
    t = p.hc - hmax - p.fossa * np.exp(-(x * x / (p.a * 0.5) ** 2 + y * y / (p.b * 0.4) ** 2))
    for cx, cy, h, s in p.cusps:
        t = t + cusp_scale * h * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
    return t - p.edge * np.clip(rho, 0, 1.6) ** 4


def tooth_field(p: ToothParams, pts: np.ndarray) -> np.ndarray:
    """Implicit field of a natural tooth (crown + root running down to -inf)."""
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    A, B = _profile(p, z)
    side = (_superellipse_rho(x, y, A, B, p.n) - 1.0) * np.minimum(A, B)
    return _smax(side, z - _top(p, x, y), 0.7)


@dataclass(frozen=True)
class PrepParams:
    zm: float  # margin height at the tooth's axis (mean level)
    w: float  # margin width (mm)
    margin: str  # "chamfer" | "shoulder"
    taper: float  # mm of narrowing per mm of height, per side
    red: float  # occlusal reduction (mm)
    tilt_x: float = 0.0  # margin rise at the distal (+x) face, fall at the mesial one (mm)
    tilt_y: float = 0.0  # the same bucco-lingually
    scallop: float = 0.0  # rise of the proximal faces against the buccal and lingual ones (mm)


def margin_height(p: ToothParams, q: PrepParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height of the margin above (x, y): ``zm``, tilted and scalloped as real finish lines
    follow the gum (higher between the teeth). Constant ``zm`` when the shape terms are 0;
    beyond the tooth's outline the height of its nearest face holds."""
    u = np.clip(x / p.a, -1.0, 1.0)
    v = np.clip(y / p.b, -1.0, 1.0)
    proximal = u * u / (u * u + v * v + 1e-6)
    return q.zm + q.tilt_x * u + q.tilt_y * v + q.scallop * (proximal - 0.5)


def stump_field(p: ToothParams, q: PrepParams, pts: np.ndarray) -> np.ndarray:
    """Implicit field of the prepared stump above the margin (tapered, rounded top)."""
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    zm = margin_height(p, q, x, y)
    A, B = _profile(p, z)
    Am, Bm = _profile(p, zm)
    dz = np.maximum(z - zm, 0.0)
    As = np.minimum(Am - q.taper * dz, A)
    Bs = np.minimum(Bm - q.taper * dz, B)
    if q.margin == "chamfer":
        t = np.clip(dz / q.w, 0, 1)
        cut = q.w * np.sqrt(np.clip(1.0 - (1.0 - t) ** 2, 0, 1))
    else:
        cut = np.full_like(z, q.w)
    As = np.maximum(As - cut, 0.9)
    Bs = np.maximum(Bs - cut, 0.9)
    side = (_superellipse_rho(x, y, As, Bs, p.n) - 1.0) * np.minimum(As, Bs)
    top = np.maximum(_top(p, x, y, cusp_scale=0.6) - q.red, zm + 2.5)
    return _smax(side, z - top, 0.9)


def crown_field(p: ToothParams, q: PrepParams, pts: np.ndarray) -> np.ndarray:
    """The restoration: original anatomy above the margin, minus the stump."""
    zm = margin_height(p, q, pts[:, 0], pts[:, 1])
    return np.maximum.reduce([tooth_field(p, pts), zm - pts[:, 2], -stump_field(p, q, pts)])


def prep_field(p: ToothParams, q: PrepParams, pts: np.ndarray) -> np.ndarray:
    """The prepared tooth: natural below the margin, stump above."""
    zm = margin_height(p, q, pts[:, 0], pts[:, 1])
    return np.maximum(tooth_field(p, pts), np.minimum(pts[:, 2] - zm, stump_field(p, q, pts)))


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def random_tooth(rng: np.random.Generator, kind: str) -> ToothParams:
    """Draw one tooth of the given kind with randomized size and cusp layout."""
    if kind == "molar":
        a, b, hc, n = _u(rng, 4.6, 5.6), _u(rng, 4.6, 5.5), _u(rng, 5.6, 7.0), _u(rng, 2.6, 3.6)
        cusps = []
        for sx in (-1, 1):
            for sy in (-1, 1):
                cusps.append(
                    (
                        sx * a * _u(rng, 0.38, 0.52),
                        sy * b * _u(rng, 0.38, 0.52),
                        _u(rng, 1.0, 1.8),
                        _u(rng, 0.32, 0.45) * min(a, b),
                    )
                )
        if rng.random() < 0.5:
            cusps.append(
                (_u(rng, 0.55, 0.7) * a * rng.choice([-1, 1]), 0.0, _u(rng, 0.6, 1.1), 1.2)
            )
        edge, fossa = _u(rng, 1.2, 2.0), _u(rng, 0.3, 0.8)
    elif kind == "premolar":
        a, b, hc, n = _u(rng, 3.3, 3.9), _u(rng, 4.0, 4.8), _u(rng, 6.5, 8.0), _u(rng, 2.2, 2.9)
        hb = _u(rng, 1.3, 2.0)
        cusps = [
            (_u(rng, -0.3, 0.3), b * _u(rng, 0.38, 0.5), hb, _u(rng, 0.45, 0.6) * a),
            (_u(rng, -0.3, 0.3), -b * _u(rng, 0.38, 0.5), hb * _u(rng, 0.6, 1.0), 0.5 * a),
        ]
        edge, fossa = _u(rng, 1.2, 2.0), _u(rng, 0.2, 0.6)
    elif kind == "incisor":
        a, b, hc, n = _u(rng, 2.7, 4.3), _u(rng, 3.0, 3.6), _u(rng, 8.5, 10.5), _u(rng, 2.0, 2.6)
        cusps = tuple((cx * a, 0.0, _u(rng, 0.0, 0.25), 0.35 * a) for cx in (-0.5, 0.0, 0.5))
        edge, fossa = 0.0, 0.0
    else:
        raise ValueError(f"unknown tooth kind {kind!r}")
    return ToothParams(kind, a, b, hc, n, tuple(cusps), edge, fossa)


def _rotation(rng: np.random.Generator, yaw_deg: float, tilt_deg: float) -> np.ndarray:
    yaw = np.radians(_u(rng, -yaw_deg, yaw_deg))
    tx, ty = np.radians(rng.uniform(-tilt_deg, tilt_deg, 2))
    cz, sz = np.cos(yaw), np.sin(yaw)
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(tx), -np.sin(tx)], [0, np.sin(tx), np.cos(tx)]])
    ry = np.array([[np.cos(ty), 0, np.sin(ty)], [0, 1, 0], [-np.sin(ty), 0, np.cos(ty)]])
    return rz @ rx @ ry


def _mesh_field(fn: Field, lo: np.ndarray, hi: np.ndarray, h: float) -> trimesh.Trimesh:
    """Marching cubes of ``fn`` < 0 on a grid from ``lo`` to ``hi`` with spacing ``h``.

    Surfaces are open where the shape runs through the grid boundary.
    """
    axes = [np.arange(lo[i], hi[i] + 0.5 * h, h) for i in range(3)]
    gx, gy, gz = np.meshgrid(*axes, indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel(), gz.ravel()], axis=1)
    vol = fn(pts).reshape(gx.shape).astype(np.float32)
    verts, faces, _, _ = marching_cubes(vol, level=0.0, spacing=(h, h, h))
    verts = verts + lo
    return trimesh.Trimesh(verts, faces, process=True)


def _culled(fn: Field, pts: np.ndarray, half_x: float, half_y: float, top: float) -> np.ndarray:
    """Evaluate a tooth field only inside a box that holds the tooth plus a margin; points
    outside it are far outside the tooth and get a positive constant."""
    keep = (np.abs(pts[:, 0]) < half_x) & (np.abs(pts[:, 1]) < half_y) & (pts[:, 2] < top)
    out = np.full(len(pts), 3.0)
    if keep.any():
        out[keep] = fn(pts[keep])
    return out


def _tooth_box(p: ToothParams) -> tuple[float, float, float]:
    return p.a + 2.0, p.b + 2.0, p.hc + 3.0


def _neighbour_kind(rng: np.random.Generator, kind: str) -> str:
    if kind == "incisor":
        return "incisor"
    if kind == "molar":
        return str(rng.choice(["molar", "premolar"], p=[0.7, 0.3]))
    return str(rng.choice(["premolar", "molar"], p=[0.7, 0.3]))


# Salt of the second random stream that draws the margin's shape (``make_case(...,
# margin_shape=True)``): separate from the case's own stream, so that the option leaves every
# other draw of a seed as it was.
MARGIN_SALT = 5813


def random_margin_shape(seed: int, q: PrepParams, p: ToothParams) -> PrepParams:
    """``q`` with a tilted and scalloped margin drawn from case ``seed``'s own stream: in 4 of
    5 cases a tilt of 0-2.5 mm (rise at one face, fall at the opposite one) in a uniform
    direction and proximal faces 0-2 mm above the buccal and lingual ones, scaled down where
    the highest point would pass half the crown's height; else flat."""
    rng = np.random.default_rng(np.random.SeedSequence([MARGIN_SALT, int(seed)]))
    if rng.random() >= 0.8:
        return q
    tilt, angle, scallop = _u(rng, 0.0, 2.5), _u(rng, 0.0, 2.0 * np.pi), _u(rng, 0.0, 2.0)
    rise = 1.2 * tilt + 0.5 * scallop
    scale = min(1.0, max(0.5 * p.hc - q.zm, 0.0) / rise) if rise > 0 else 1.0
    return replace(
        q,
        tilt_x=scale * tilt * float(np.cos(angle)),
        tilt_y=scale * tilt * float(np.sin(angle)),
        scallop=scale * scallop,
    )


def make_case(
    seed: int,
    *,
    tooth_type: str | None = None,
    margin_shape: bool = False,
    crop_half: float = 10.5,
    context_spacing: float = 0.25,
    crown_spacing: float = 0.12,
    offset_range: float = 20.0,
    build_meshes: bool = True,
) -> Case:
    """Build one deterministic synthetic case from ``seed``.

    ``build_meshes=False`` skips the (slow) meshing and returns empty ``context`` and ``crown``
    meshes with every other field as in the full case: the cheap way to get a case's layout.

    ``tooth_type`` forces molar/premolar/incisor (default: drawn). The context is cropped to an
    axis-aligned cube of half size ``crop_half`` mm around the preparation (with a small random
    shift, as a technician's crop would have), meshed at ``context_spacing`` mm.

    ``margin_shape=True`` tilts and scallops the margin (:func:`random_margin_shape`, its own
    random stream) and lets the gum follow it; every other draw is as with the flat margin.
    """
    rng = np.random.default_rng(np.random.SeedSequence([7321, int(seed)]))
    kind = tooth_type or str(rng.choice(TOOTH_TYPES, p=[0.45, 0.3, 0.25]))
    tooth = random_tooth(rng, kind)
    margin = str(rng.choice(["chamfer", "shoulder"]))
    prep = PrepParams(
        zm=_u(rng, -0.5, 0.6),
        w=_u(rng, 0.6, 1.0) if margin == "chamfer" else _u(rng, 0.8, 1.2),
        margin=margin,
        taper=float(np.tan(np.radians(_u(rng, 3.0, 8.0)))),
        red=_u(rng, 1.5, 2.1),
    )
    if margin_shape:
        prep = random_margin_shape(seed, prep, tooth)

    # Neighbours: mesial (-x) and distal (+x), touching or with a small gap, slightly shifted.
    parts: list[tuple[ToothParams, np.ndarray]] = []
    for side in (-1, 1):
        nb = random_tooth(rng, _neighbour_kind(rng, kind))
        gap = _u(rng, -0.15, 0.9)
        offset = np.array([side * (tooth.a + nb.a + gap), _u(rng, -0.6, 0.6), _u(rng, -0.5, 0.5)])
        parts.append((nb, offset))

    # Antagonist: same family, upside down above the crown, shifted half a cusp or so.
    ant = random_tooth(rng, kind)
    top_prep = float(tooth.hc + 0.3)
    ant_gap = _u(rng, 0.2, 1.0)
    ant_off = np.array([_u(rng, -2.0, 2.0), _u(rng, -0.8, 0.8), top_prep + ant_gap + ant.hc + 0.3])
    gum_w = max(tooth.b, *(nb.b for nb, _ in parts)) + _u(rng, 1.0, 2.0)
    gum_drop = _u(rng, 0.3, 1.2)
    ant_gum_w = ant.b + _u(rng, 1.0, 2.0)
    ant_gum_bottom = ant_off[2] + _u(rng, 0.3, 1.2)

    def lower_field(pts: np.ndarray) -> np.ndarray:
        f = _culled(lambda q: prep_field(tooth, prep, q), pts, *_tooth_box(tooth))
        for nb, off in parts:
            f = np.minimum(
                f, _culled(lambda q, nb=nb: tooth_field(nb, q), pts - off, *_tooth_box(nb))
            )
        y, z = pts[:, 1], pts[:, 2]
        gum_top = margin_height(tooth, prep, pts[:, 0], y) - gum_drop
        gum = _smax(np.abs(y) - gum_w, z - (gum_top - 2.0 * (y / gum_w) ** 2), 1.0)
        return np.minimum(f, gum)

    def upper_field(pts: np.ndarray) -> np.ndarray:
        local = pts - ant_off
        local = local * np.array([1.0, 1.0, -1.0])
        f = _culled(lambda q: tooth_field(ant, q), local, *_tooth_box(ant))
        y, z = pts[:, 1] - ant_off[1], pts[:, 2]
        gum = _smax(np.abs(y) - ant_gum_w, (ant_gum_bottom + 2.0 * (y / ant_gum_w) ** 2) - z, 1.0)
        return np.minimum(f, gum)

    rot = _rotation(rng, yaw_deg=30.0, tilt_deg=8.0)
    shift = rng.uniform(-offset_range, offset_range, 3)
    center_local = np.array([0.0, 0.0, prep.zm + 0.5 * (tooth.hc - prep.zm)])
    prep_center = rot @ center_local + shift
    crop_center = prep_center + rng.uniform(-1.0, 1.0, 3)

    def to_local(world: np.ndarray) -> np.ndarray:
        return (world - shift) @ rot

    def context_field(world: np.ndarray) -> np.ndarray:
        local = to_local(world)
        return np.minimum(lower_field(local), upper_field(local))

    lowest = prep.zm - abs(prep.tilt_x) - abs(prep.tilt_y) - 0.5 * prep.scallop
    lo = np.array([-tooth.a - 0.6, -tooth.b - 0.6, lowest - 0.4])
    hi = np.array([tooth.a + 0.6, tooth.b + 0.6, tooth.hc + 1.0])
    if build_meshes:
        context = _mesh_field(
            context_field, crop_center - crop_half, crop_center + crop_half, context_spacing
        )
        crown_local = _mesh_field(lambda q: crown_field(tooth, prep, q), lo, hi, crown_spacing)
        crown_world = trimesh.Trimesh(crown_local.vertices @ rot.T + shift, crown_local.faces)
    else:
        context, crown_world = trimesh.Trimesh(), trimesh.Trimesh()

    def crown_inside(points_mm: np.ndarray) -> np.ndarray:
        local = to_local(np.asarray(points_mm, float).reshape(-1, 3))
        keep = np.all((local >= lo) & (local <= hi), axis=1)
        out = np.zeros(len(local), dtype=bool)
        out[keep] = crown_field(tooth, prep, local[keep]) < 0.0
        return out

    return Case(
        context=context,
        crown=crown_world,
        prep_center=prep_center,
        margin_center=rot @ np.array([0.0, 0.0, prep.zm]) + shift,
        tooth_type=kind,
        seed=int(seed),
        margin=margin,
        crown_inside=crown_inside,
        crop_center=crop_center,
        crop_half=crop_half,
        axes=rot,
    )
