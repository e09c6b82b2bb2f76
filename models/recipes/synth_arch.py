"""Synthetic dental arch geometry: a stone model of teeth on a gingiva base, on a scanner plate.

Used only to render training images for the demo segmentation model. Units are millimetres;
the model stands on the plate at z = 0 with the incisors towards +y. The geometry is plausible,
not anatomical: a horseshoe base swept along a parabola-like arch form, with 10 to 14 teeth
(incisors, canines, premolars, molars, occasionally a prepared stump or a gap) on its ridge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyvista as pv

# Mesio-distal width, labio-lingual depth, crown height (mm) and kind, midline outwards.
_TOOTH_TYPES: tuple[tuple[float, float, float, str], ...] = (
    (8.5, 7.0, 10.5, "incisor"),
    (6.5, 6.2, 9.0, "incisor"),
    (7.5, 8.0, 10.0, "canine"),
    (7.0, 8.5, 8.5, "premolar"),
    (6.8, 8.5, 8.0, "premolar"),
    (10.5, 10.5, 7.5, "molar"),
    (9.5, 10.0, 7.0, "molar"),
)


@dataclass(frozen=True)
class Arch:
    """One stone model: the gingiva base and the teeth as separate surfaces (class per mesh)."""

    gingiva: pv.PolyData
    teeth: pv.PolyData
    center: np.ndarray
    radius: float


def _arch_curve(rng: np.random.Generator, half_length: float) -> tuple[np.ndarray, np.ndarray]:
    """Points and unit outward normals of an arch form, sampled uniformly by arc length.

    The curve is ``y = depth * (1 - |u|^p)`` scaled so that each half is ``half_length`` long.
    """
    p = rng.uniform(1.7, 2.6)
    ratio = rng.uniform(0.9, 1.5)
    u = np.linspace(-1.0, 1.0, 801)
    pts = np.stack([u, ratio * (1.0 - np.abs(u) ** p)], axis=1)
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    pts *= 2.0 * half_length / arc[-1]
    arc *= 2.0 * half_length / arc[-1]
    s = np.linspace(0.0, arc[-1], 241)
    curve = np.stack([np.interp(s, arc, pts[:, 0]), np.interp(s, arc, pts[:, 1])], axis=1)
    tangent = np.gradient(curve, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    return curve, normal


def _base(
    curve: np.ndarray, normal: np.ndarray, width: float, wall: float, ridge: float
) -> pv.PolyData:
    """Sweep a closed cross-section (flat bottom, vertical walls, rounded ridge) along the arch."""
    t = np.linspace(-1.0, 1.0, 19)
    top_n = t * width / 2
    top_z = wall + ridge * np.sqrt(np.clip(1.0 - t**2, 0.0, 1.0)) ** 0.7
    prof_n = np.concatenate([[-width / 2, -width / 2], top_n, [width / 2, width / 2, 0.0]])
    prof_z = np.concatenate([[0.0, wall - 0.6], top_z, [wall - 0.6, 0.0, 0.0]])
    m = len(prof_n)
    n_along = len(curve)
    pts = np.empty((n_along, m, 3))
    pts[:, :, 0] = curve[:, None, 0] + prof_n[None, :] * normal[:, None, 0]
    pts[:, :, 1] = curve[:, None, 1] + prof_n[None, :] * normal[:, None, 1]
    pts[:, :, 2] = prof_z[None, :]
    faces = []
    for i in range(n_along - 1):
        for j in range(m):
            a, b = i * m + j, i * m + (j + 1) % m
            c, d = (i + 1) * m + (j + 1) % m, (i + 1) * m + j
            faces.append([4, a, b, c, d])
    flat = pts.reshape(-1, 3)
    caps = []
    for i in (0, n_along - 1):
        caps.append([m, *range(i * m, i * m + m)])
    cells = np.concatenate([np.asarray(faces).ravel(), np.concatenate(caps)])
    return pv.PolyData(flat, cells).triangulate()


def _palate(curve: np.ndarray, normal: np.ndarray, width: float, height: float) -> pv.PolyData:
    """A slab filling the inside of the horseshoe (an upper model's palate)."""
    inner = curve - normal * (width / 2 - 0.3)
    inner = inner[3:-3]
    n = len(inner)
    top = np.column_stack([inner, np.full(n, height)])
    centroid = np.append(inner.mean(axis=0), height)
    pts = np.vstack([top, centroid, np.column_stack([inner[[0, -1]], [0.0, 0.0]])])
    faces = [[3, i, i + 1, n] for i in range(n - 1)]
    faces.append([3, n - 1, 0, n])
    faces.append([4, 0, n - 1, n + 2, n + 1])
    return pv.PolyData(pts, np.concatenate([np.asarray(f) for f in faces]))


def _tooth(
    rng: np.random.Generator, md: float, bl: float, h: float, kind: str, stump: bool
) -> pv.PolyData:
    """One crown in its local frame (x mesio-distal, y labio-lingual, z up), base at z = 0."""
    sph = pv.Sphere(radius=1.0, theta_resolution=28, phi_resolution=22)
    p = sph.points.astype(np.float64)
    e = {"incisor": 0.8, "canine": 0.85, "premolar": 0.7, "molar": 0.6}[kind]
    q = np.sign(p) * np.abs(p) ** e
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    zt = np.clip(z, 0.0, 1.0)
    if kind == "incisor":
        y = y * (1.0 - 0.65 * zt)
    elif kind == "canine":
        x = x * (1.0 - 0.55 * zt)
        y = y * (1.0 - 0.35 * zt)
    if stump:
        x = x * (1.0 - 0.35 * zt)
        y = y * (1.0 - 0.35 * zt)
        z = np.minimum(z, 0.55)
    else:
        if kind in ("premolar", "molar"):
            cusps = (
                [(0.0, 0.5), (0.0, -0.5)]
                if kind == "premolar"
                else [(0.45, 0.45), (-0.45, 0.45), (0.45, -0.45), (-0.45, -0.45)]
            )
            bump = np.zeros_like(z)
            for cx, cy in cusps:
                bump += np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.08)
            z = z + zt * (0.22 * bump - 0.18)
    pts = np.column_stack([x * md / 2, y * bl / 2, (z + 0.75) * h / 1.75])
    return pv.PolyData(pts, sph.faces)


def make_arch(rng: np.random.Generator) -> Arch:
    """Generate one random stone model.

    Parameters
    ----------
    rng
        Source of all randomness, so a seed gives the same arch every time.
    """
    n_side = int(rng.integers(5, 8))
    sizes = [
        (md * rng.uniform(0.9, 1.1), bl * rng.uniform(0.9, 1.1), h * rng.uniform(0.85, 1.15), k)
        for md, bl, h, k in _TOOTH_TYPES[:n_side]
    ]
    teeth_len = sum(s[0] for s in sizes) * rng.uniform(0.95, 1.02)
    half_length = teeth_len + rng.uniform(3.0, 9.0)
    curve, normal = _arch_curve(rng, half_length)
    width = max(s[1] for s in sizes) + rng.uniform(3.0, 7.0)
    wall = rng.uniform(10.0, 20.0)
    ridge = rng.uniform(3.0, 6.0)
    parts = [_base(curve, normal, width, wall, ridge)]
    if rng.random() < 0.5:
        parts.append(_palate(curve, normal, width, wall + ridge * rng.uniform(-0.6, 0.2)))
    gingiva = pv.merge(parts)

    n_pts = len(curve)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    mid = arc[-1] / 2
    scale = teeth_len / sum(s[0] for s in sizes)
    teeth = []
    missing = int(rng.integers(0, 2 * n_side)) if rng.random() < 0.3 else -1
    stump = int(rng.integers(0, 2 * n_side)) if rng.random() < 0.4 else -1
    idx = 0
    for side in (-1.0, 1.0):
        pos = 0.0
        for md, bl, h, kind in sizes:
            w = md * scale
            centre_s = mid + side * (pos + w / 2)
            pos += w
            idx += 1
            if idx - 1 == missing:
                continue
            i = int(np.clip(np.searchsorted(arc, centre_s), 1, n_pts - 2))
            c = curve[i] + normal[i] * rng.uniform(-0.6, 0.6)
            t = curve[i + 1] - curve[i - 1]
            ang = np.degrees(np.arctan2(t[1], t[0])) + rng.uniform(-8.0, 8.0)
            tooth = _tooth(rng, w * 0.97, bl, h, kind, idx - 1 == stump)
            tooth.rotate_x(
                rng.uniform(-8.0, 8.0) + (8.0 if kind == "incisor" else 0.0), inplace=True
            )
            tooth.rotate_y(rng.uniform(-6.0, 6.0), inplace=True)
            tooth.rotate_z(ang, inplace=True)
            z0 = wall + ridge * rng.uniform(0.55, 0.8)
            tooth.translate((c[0], c[1], z0 - 0.25 * h), inplace=True)
            teeth.append(tooth)
    teeth_mesh = pv.merge(teeth)
    all_pts = np.vstack([gingiva.points, teeth_mesh.points])
    lo, hi = all_pts.min(axis=0), all_pts.max(axis=0)
    center = (lo + hi) / 2
    radius = float(np.linalg.norm(hi - lo) / 2)
    return Arch(gingiva=gingiva, teeth=teeth_mesh, center=center, radius=radius)
