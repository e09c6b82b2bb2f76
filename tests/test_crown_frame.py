"""The oriented case frame: directions land on the model's canonical axes, the inverse is
exact, and what a caller asks for (the CLI's flags) resolves to the frame it should."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from app.core.crown import locate
from app.core.crown.frame import CaseFrame, FrameRequest, make_frame, orthonormal_axes
from app.core.manifest import Frame

RNG_SEEDS = (1, 2, 3)


def _random_rotation(seed: int) -> np.ndarray:
    return trimesh.transformations.random_rotation_matrix(np.random.default_rng(seed).random(3))[
        :3, :3
    ]


@pytest.mark.parametrize(
    ("model_occlusal", "model_mesial"), [("+z", "+x"), ("-y", "+z"), ("+x", "-y")]
)
@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_case_directions_land_on_the_model_axes(model_occlusal, model_mesial, seed) -> None:
    rot = _random_rotation(seed)
    occlusal, mesial = rot[:, 2], rot[:, 0]
    center = np.array([12.0, -40.0, 7.5])
    frame = Frame("fixed", 20.0, "bbox", model_occlusal, model_mesial)
    t = make_frame(np.zeros((1, 3)), frame, case=CaseFrame(tuple(center), occlusal, mesial))
    axis = {"x": 0, "y": 1, "z": 2}

    def unit(name: str) -> np.ndarray:
        e = np.zeros(3)
        e[axis[name[1]]] = 1.0 if name[0] == "+" else -1.0
        return e

    np.testing.assert_allclose(t.to_unit(center + 5.0 * occlusal), 0.25 * unit(model_occlusal),
                               atol=1e-12)  # fmt: skip
    np.testing.assert_allclose(t.to_unit(center + 5.0 * mesial), 0.25 * unit(model_mesial),
                               atol=1e-12)  # fmt: skip
    assert np.linalg.det(t.rotation) == pytest.approx(1.0)
    pts = np.random.default_rng(seed).normal(size=(50, 3)) * 10 + center
    np.testing.assert_allclose(t.to_mm(t.to_unit(pts)), pts, atol=1e-10)
    corners = t.corners_mm()
    assert np.allclose(np.linalg.norm(corners - center, axis=1), 10.0 * np.sqrt(3))


def test_case_frame_checks_and_normalises_its_directions() -> None:
    f = CaseFrame((1, 2, 3), (0, 0, 2), (1, 1, 0.5))
    assert np.linalg.norm(f.occlusal) == pytest.approx(1.0)
    axes = f.axes(Frame("fixed", 20.0, "bbox"))
    np.testing.assert_allclose(axes @ axes.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(axes[2], [0, 0, 1])
    with pytest.raises(ValueError, match="parallel"):
        CaseFrame((0, 0, 0), (0, 1, 0), (0, -3, 0))
    with pytest.raises(ValueError, match="zero vector"):
        CaseFrame((0, 0, 0), (0, 0, 0))
    with pytest.raises(ValueError, match="finite"):
        CaseFrame((np.nan, 0, 0))
    with pytest.raises(ValueError, match="parallel"):
        orthonormal_axes((1, 0, 0), (2, 0, 0))


def test_centre_only_frame_keeps_the_scan_axes() -> None:
    frame = Frame("fixed", 20.0, "bbox")
    t = make_frame(np.zeros((1, 3)), frame, case=CaseFrame((1.0, 2.0, 3.0)))
    np.testing.assert_allclose(t.rotation, np.eye(3))
    # an occlusal direction alone: the model's mesial axis, made perpendicular, fills the gap
    t = make_frame(np.zeros((1, 3)), frame, case=CaseFrame((0, 0, 0), (0, 1, 0)))
    np.testing.assert_allclose(t.to_unit([[0, 20, 0]]), [[0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(t.to_unit([[20, 0, 0]]), [[1, 0, 0]], atol=1e-12)
    t = make_frame(np.zeros((1, 3)), frame, case=CaseFrame((0, 0, 0), (1, 0, 0)))
    np.testing.assert_allclose(t.to_unit([[20, 0, 0]]), [[0, 0, 1]], atol=1e-12)


def test_bbox_frame_measures_the_turned_scan() -> None:
    """IF-Net's bbox normalisation scales by the longest side seen in the model's frame."""
    box = trimesh.creation.box([10.0, 4.0, 4.0])
    frame = Frame("bbox", 20.0, "bbox")
    diagonal = CaseFrame((0, 0, 0), (0, 0, 1), (1, 1, 0))
    assert make_frame(box.vertices, frame).scale == pytest.approx(1 / 10)
    turned = make_frame(box.vertices, frame, case=diagonal)
    assert turned.scale == pytest.approx(1 / ((10 + 4) / np.sqrt(2)))


def test_frame_request_resolves_what_was_given(monkeypatch) -> None:
    verts = trimesh.creation.box([4.0, 6.0, 8.0]).vertices + [10.0, 0.0, 0.0]
    faces = np.zeros((0, 3), dtype=np.int64)
    frame = Frame("fixed", 20.0, "bbox")
    assert FrameRequest().resolve(verts, faces, frame) == (None, "default")
    got, source = FrameRequest(occlusal=(0, 1, 0)).resolve(verts, faces, frame)
    assert source == "given" and got.center == (10.0, 0.0, 0.0) and got.occlusal == (0, 1, 0)

    proposal = CaseFrame((1.0, 1.0, 1.0), (0.0, 0.0, 1.0), (1.0, 0.0, 0.0))
    calls: list[str] = []

    def propose(v, f, point):
        calls.append(f"propose {tuple(point)}")
        return proposal

    def find(v, f):
        calls.append("find")
        return proposal

    monkeypatch.setattr(locate, "propose_frame", propose)
    monkeypatch.setattr(locate, "find_preparation", find)
    assert FrameRequest(auto=True).resolve(verts, faces, frame) == (proposal, "found")
    got, source = FrameRequest(pick=(5, 5, 5)).resolve(verts, faces, frame)
    assert (got, source) == (proposal, "proposed")
    # a centre is kept where it was given; only the directions are proposed there
    got, _ = FrameRequest(center=(7, 8, 9), auto=True).resolve(verts, faces, frame)
    assert got.center == (7.0, 8.0, 9.0) and got.occlusal == proposal.occlusal
    # an explicit direction wins over the proposal
    got, _ = FrameRequest(occlusal=(0, 1, 0), auto=True).resolve(verts, faces, frame)
    assert got.occlusal == (0.0, 1.0, 0.0) and got.mesial == (1.0, 0.0, 0.0)
    assert calls == ["find", "propose (5, 5, 5)", "propose (7, 8, 9)", "find"]
