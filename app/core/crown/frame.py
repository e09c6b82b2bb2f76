"""The rigid map between scan millimetres and the model's unit cube [-0.5, 0.5]^3.

A crown model is trained on crops aligned to the tooth: its occlusal and mesio-distal
directions lie along fixed unit-cube axes (the manifest's ``frame.occlusal`` and
``frame.mesial``). A scan arrives in whatever orientation the scanner wrote, so a case carries
its own :class:`CaseFrame` (centre, occlusal and mesio-distal directions in scan millimetres),
and :func:`make_frame` turns both into one :class:`FrameTransform` that maps the scan into the
cube and the crown back by the exact inverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from app.core.manifest import Frame

AXES = {"+x": (1, 0, 0), "-x": (-1, 0, 0), "+y": (0, 1, 0), "-y": (0, -1, 0),
        "+z": (0, 0, 1), "-z": (0, 0, -1)}  # fmt: skip
"""The unit-cube directions a manifest may name for its canonical occlusal and mesial axes."""


def unit_vector(v: Sequence[float], what: str = "direction") -> np.ndarray:
    """``v`` scaled to length one; a zero, non-finite or wrongly sized vector is a ValueError."""
    a = np.asarray(v, dtype=np.float64).reshape(-1)
    if a.shape != (3,) or not np.isfinite(a).all():
        raise ValueError(f"{what} must be three finite numbers, got {list(np.atleast_1d(v))}")
    n = float(np.linalg.norm(a))
    if n < 1e-9:
        raise ValueError(f"{what} must not be the zero vector")
    return a / n


def orthonormal_axes(occlusal: Sequence[float], mesial: Sequence[float]) -> np.ndarray:
    """Rows (mesial, buccolingual, occlusal): ``mesial`` made perpendicular to ``occlusal``,
    the third row completing a right-handed basis. Parallel directions are a ValueError."""
    o = unit_vector(occlusal, "occlusal direction")
    m = np.asarray(unit_vector(mesial, "mesio-distal direction"))
    m = m - o * float(m @ o)
    n = float(np.linalg.norm(m))
    if n < 1e-6:
        raise ValueError("the mesio-distal direction must not be parallel to the occlusal one")
    m = m / n
    return np.stack([m, np.cross(o, m), o])


@dataclass(frozen=True)
class CaseFrame:
    """Where the crown goes in one case's scan: a centre and two directions, all in scan mm.

    ``occlusal`` points from the preparation towards the biting surface; ``mesial`` runs along
    the arch (its sign is free: crown models see mesial and distal mirrored in training). Either
    direction may be None, meaning the model's own axis taken as a scan axis (no rotation), which
    is how a centre picked before frames had an orientation is read.
    """

    center: tuple[float, float, float]
    occlusal: tuple[float, float, float] | None = None
    mesial: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        c = np.asarray(self.center, dtype=np.float64).reshape(-1)
        if c.shape != (3,) or not np.isfinite(c).all():
            raise ValueError(f"frame centre must be three finite numbers, got {self.center!r}")
        object.__setattr__(self, "center", tuple(float(x) for x in c))
        for name in ("occlusal", "mesial"):
            value = getattr(self, name)
            if value is not None:
                u = unit_vector(value, f"{name} direction")
                object.__setattr__(self, name, tuple(float(x) for x in u))
        if self.occlusal is not None and self.mesial is not None:
            orthonormal_axes(self.occlusal, self.mesial)

    def axes(self, frame: Frame) -> np.ndarray:
        """Rows (mesial, buccolingual, occlusal) in scan mm, the model's axes filling gaps."""
        model_m = np.array(AXES[frame.mesial], dtype=np.float64)
        model_o = np.array(AXES[frame.occlusal], dtype=np.float64)
        o = model_o if self.occlusal is None else np.array(self.occlusal)
        if self.mesial is not None:
            return orthonormal_axes(o, self.mesial)
        # no mesial direction: the model's mesial axis, or the next one when it is parallel
        for candidate in (model_m, np.cross(model_o, model_m), model_o):
            if np.linalg.norm(candidate - o * float(candidate @ o)) > 1e-3:
                return orthonormal_axes(o, candidate)
        raise AssertionError("unreachable: three perpendicular candidates")

    def _with_axes(self, mesial: np.ndarray, occlusal: np.ndarray) -> CaseFrame:
        axes = orthonormal_axes(occlusal, mesial)
        return CaseFrame(self.center, tuple(axes[2]), tuple(axes[0]))

    def flipped(self, frame: Frame) -> CaseFrame:
        """The frame upside down: the occlusal direction reversed, the arch kept."""
        m, _, o = self.axes(frame)
        return self._with_axes(m, -o)

    def turned(self, frame: Frame, degrees: float) -> CaseFrame:
        """The frame turned about its occlusal axis, counter-clockwise seen from above."""
        m, _, o = self.axes(frame)
        return self._with_axes(rotate_about(m, o, degrees), o)

    def with_occlusal(self, frame: Frame, direction: Sequence[float]) -> CaseFrame:
        """The frame with a new occlusal direction (e.g. the view's), keeping as mesio-distal
        whichever old axis lies most across it."""
        d = unit_vector(direction, "occlusal direction")
        keep = max(self.axes(frame), key=lambda c: float(np.linalg.norm(c - d * (c @ d))))
        return self._with_axes(keep, d)

    def to_dict(self) -> dict:
        return {"center": list(self.center), "occlusal": _opt(self.occlusal),
                "mesial": _opt(self.mesial)}  # fmt: skip


def rotate_about(v: np.ndarray, axis: np.ndarray, degrees: float) -> np.ndarray:
    """``v`` turned by ``degrees`` about the unit ``axis``, counter-clockwise seen from its tip
    (Rodrigues' formula)."""
    a = np.radians(degrees)
    k = np.asarray(axis, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    return v * np.cos(a) + np.cross(k, v) * np.sin(a) + k * float(k @ v) * (1.0 - np.cos(a))


def _opt(v: tuple[float, ...] | None) -> list[float] | None:
    return None if v is None else [round(float(x), 6) for x in v]


@dataclass(frozen=True)
class FrameTransform:
    """``unit = rotation @ (mm - center) * scale``; ``scale`` is unit-cube lengths per mm.

    ``rotation`` is a proper rotation whose rows are the scan directions of the unit cube's
    x, y and z axes; the identity keeps the scan's axes.
    """

    center: np.ndarray
    scale: float
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def to_unit(self, points_mm: np.ndarray) -> np.ndarray:
        p = np.asarray(points_mm, dtype=np.float64) - self.center
        return (p @ self.rotation.T) * self.scale

    def to_mm(self, points_unit: np.ndarray) -> np.ndarray:
        u = np.asarray(points_unit, dtype=np.float64) / self.scale
        return u @ self.rotation + self.center

    def direction_to_mm(self, direction_unit: Sequence[float]) -> np.ndarray:
        """A unit-cube direction as a scan direction (the rotation alone)."""
        return np.asarray(direction_unit, dtype=np.float64) @ self.rotation

    @property
    def size_mm(self) -> float:
        """Edge length of the unit cube in millimetres."""
        return 1.0 / self.scale

    def corners_mm(self) -> np.ndarray:
        """The cube's eight corners in scan mm, in (x, y, z) binary order of the unit cube."""
        c = np.array([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)])
        return self.to_mm(c)


def bbox_center(vertices_mm: np.ndarray) -> np.ndarray:
    v = np.asarray(vertices_mm, dtype=np.float64).reshape(-1, 3)
    return (v.min(axis=0) + v.max(axis=0)) / 2.0


def model_rotation(frame: Frame, case_axes: np.ndarray) -> np.ndarray:
    """The rotation taking the case's (mesial, buccolingual, occlusal) scan directions onto the
    model's own mesial and occlusal unit-cube axes (and their cross product)."""
    m, o = np.array(AXES[frame.mesial], float), np.array(AXES[frame.occlusal], float)
    model_axes = np.stack([m, np.cross(o, m), o])
    return model_axes.T @ case_axes


def make_frame(
    vertices_mm: np.ndarray,
    frame: Frame,
    center: Sequence[float] | None = None,
    case: CaseFrame | None = None,
) -> FrameTransform:
    """Build the map a manifest asks for, placed and turned by the case.

    ``fixed``: a cube of ``frame.size_mm``; ``bbox``: IF-Net's normalisation (scale by one over
    the longest bounding-box side). The centre is ``case.center`` (or ``center``) when given,
    else ``frame.center`` when it is a point, else the bounding-box centre. With a case whose
    directions are set, the scan is turned so they land on the model's canonical axes.
    """
    v = np.asarray(vertices_mm, dtype=np.float64).reshape(-1, 3)
    if v.size == 0 or not np.isfinite(v).all():
        raise ValueError("frame needs at least one finite vertex")
    if case is not None:
        c = np.asarray(case.center, dtype=np.float64)
    elif center is not None:
        c = np.asarray(center, dtype=np.float64).reshape(3)
    elif frame.center != "bbox":
        c = np.asarray(frame.center, dtype=np.float64).reshape(3)
    else:
        c = bbox_center(v)
    if not np.isfinite(c).all():
        raise ValueError(f"frame centre must be finite, got {c.tolist()}")
    rotation = np.eye(3) if case is None else model_rotation(frame, case.axes(frame))
    if frame.mode == "fixed":
        scale = 1.0 / float(frame.size_mm)
    else:
        turned = (v - c) @ rotation.T
        longest = float((turned.max(axis=0) - turned.min(axis=0)).max())
        if longest <= 0:
            raise ValueError("bbox frame needs a mesh with a non-zero extent")
        scale = 1.0 / longest
    return FrameTransform(center=c, scale=scale, rotation=rotation)


@dataclass(frozen=True)
class FrameRequest:
    """What a caller asked for (the CLI's flags): explicit values win, ``auto`` fills the rest.

    ``pick`` is a point clicked on the preparation: centre and directions are proposed from
    it, as in the window. With ``auto`` and no pick, a given ``center`` keeps its place and only
    the directions are proposed there; with neither, the preparation is found in the scan.
    Without ``auto`` or ``pick``, unset directions stay the model's axes (no rotation).
    """

    center: tuple[float, float, float] | None = None
    occlusal: tuple[float, float, float] | None = None
    mesial: tuple[float, float, float] | None = None
    pick: tuple[float, float, float] | None = None
    auto: bool = False

    @property
    def empty(self) -> bool:
        return not self.auto and all(
            v is None for v in (self.center, self.occlusal, self.mesial, self.pick)
        )

    def resolve(
        self, vertices_mm: np.ndarray, faces: np.ndarray, frame: Frame
    ) -> tuple[CaseFrame | None, str]:
        """The case frame for this scan and where it came from: ``default``, ``given``,
        ``proposed`` (from a pick or a centre) or ``found`` (no point given).

        Raises ``app.core.crown.locate.LocateError`` when the scan gives no answer.
        """
        if self.empty:
            return None, "default"
        if self.pick is None and not self.auto:
            center = self.center
            if center is None:
                center = tuple(make_frame(vertices_mm, frame).center)
            return CaseFrame(center, self.occlusal, self.mesial), "given"
        from app.core.crown.locate import find_preparation, propose_frame

        point = self.pick if self.pick is not None else self.center
        if point is not None:
            found, source = propose_frame(vertices_mm, faces, point), "proposed"
        else:
            found, source = find_preparation(vertices_mm, faces), "found"
        if self.occlusal is not None:
            # an explicit occlusal makes the proposed mesial a hint only
            found = CaseFrame(found.center, self.occlusal, self.mesial or found.mesial)
        elif self.mesial is not None:
            found = CaseFrame(found.center, found.occlusal, self.mesial)
        if self.center is not None and self.pick is None:
            found = CaseFrame(self.center, found.occlusal, found.mesial)
        return found, source
