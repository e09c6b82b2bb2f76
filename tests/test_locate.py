"""Case-frame location: the preparation found with and without a click, on synthetic cases
under random rigid moves and on the real VBCD scan (when the internal samples are present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from app.core.crown.frame import CaseFrame
from app.core.crown.locate import LocateError, find_preparation, propose_frame
from models.recipes.synth_cases import make_case

# measured on 40 synthetic cases under random moves (37 right, 2 refused, 1 wrong tooth):
# occlusal mean 2.0 deg (max 4.3), mesial mean 1.8 deg (max 4.4), centre mean 0.5 mm, along
# the occlusal axis -0.12 +- 0.35 mm (max 0.8); thresholds carry margin and still fail on a
# wrong tooth, a flipped direction, a centre at the click or a centre read off the gum
OCCLUSAL_DEG = 10.0
MESIAL_DEG = 10.0
CENTER_MM = 1.5
HEIGHT_MM = 1.0

SYNTH_SEEDS = (3, 4, 16)  # a molar, an incisor and a premolar

VBCD_CENTER = np.array([23.76, -5.09, 13.41])  # bounding-box centre of the true crown
VBCD_OCCLUSAL = np.array([0.0, 1.0, 0.0])


def _rigid(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return Rotation.random(random_state=seed).as_matrix(), rng.uniform(-40.0, 40.0, 3)


def _angle(a, b, sign_free: bool = False) -> float:
    c = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return float(np.degrees(np.arccos(np.clip(abs(c) if sign_free else c, -1.0, 1.0))))


@pytest.fixture(scope="module")
def synth_cases():
    return {seed: make_case(seed) for seed in SYNTH_SEEDS}


def _moved_case(case, seed: int):
    rot, shift = _rigid(seed)
    vertices = np.asarray(case.context.vertices) @ rot.T + shift
    truth = {
        "center": rot @ case.prep_center + shift,
        "occlusal": rot @ case.axes[:, 2],
        "mesial": rot @ case.axes[:, 0],
    }
    return vertices, np.asarray(case.context.faces), truth


def _check(frame: CaseFrame, truth: dict) -> None:
    assert isinstance(frame, CaseFrame)
    assert _angle(frame.occlusal, truth["occlusal"]) < OCCLUSAL_DEG
    assert _angle(frame.mesial, truth["mesial"], sign_free=True) < MESIAL_DEG
    offset = np.asarray(frame.center) - truth["center"]
    assert np.linalg.norm(offset) < CENTER_MM
    assert abs(offset @ truth["occlusal"]) < HEIGHT_MM


@pytest.mark.parametrize("seed", SYNTH_SEEDS)
def test_find_preparation_recovers_a_moved_synthetic_case(synth_cases, seed):
    vertices, faces, truth = _moved_case(synth_cases[seed], 500 + seed)
    _check(find_preparation(vertices, faces), truth)


@pytest.mark.parametrize("seed", SYNTH_SEEDS)
def test_propose_frame_from_a_click_on_the_stump_side(synth_cases, seed):
    vertices, faces, truth = _moved_case(synth_cases[seed], 900 + seed)
    # click on the prep's wall: the scan point nearest a spot 2.5 mm beside the axis
    side = np.cross(truth["occlusal"], truth["mesial"])
    target = truth["center"] + 2.5 * side / np.linalg.norm(side)
    point = vertices[int(np.argmin(np.linalg.norm(vertices - target, axis=1)))]
    frame = propose_frame(vertices, faces, point)
    _check(frame, truth)
    # the centre comes from the geometry, not from the click
    error = np.linalg.norm(np.asarray(frame.center) - truth["center"])
    assert error < 0.5 * np.linalg.norm(point - truth["center"])


def test_a_click_off_the_scan_is_a_locate_error(synth_cases):
    case = synth_cases[SYNTH_SEEDS[0]]
    far = np.asarray(case.context.vertices).max(axis=0) + 50.0
    with pytest.raises(LocateError, match="not on the scan"):
        propose_frame(case.context.vertices, case.context.faces, far)


def test_a_scan_without_a_preparation_is_a_locate_error():
    # a closed box has no open jaw surface: no biting direction and no preparation
    import trimesh

    box = trimesh.creation.box((10.0, 10.0, 10.0))
    with pytest.raises(LocateError):
        find_preparation(box.vertices, box.faces)
    with pytest.raises(LocateError, match="empty"):
        find_preparation(np.zeros((0, 3)), np.zeros((0, 3), dtype=int))


def test_locate_error_is_a_value_error():
    assert issubclass(LocateError, ValueError)


def _load(folder: Path, name: str):
    from app.core.crown.meshio import load_mesh

    return load_mesh(folder / name)


@pytest.fixture(scope="module")
def vbcd(dental_samples):
    return _load(dental_samples, "vbcd_1723719_pna.ply")


# measured: centre 0.95-0.98 mm off (in the occlusal plane; along it -0.10 to -0.22 mm),
# occlusal 7.2-7.8 deg off +y, as is and under three random moves
@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_find_preparation_on_the_real_vbcd_scan(vbcd, seed):
    rot, shift = (np.eye(3), np.zeros(3)) if seed is None else _rigid(seed)
    frame = find_preparation(vbcd.vertices @ rot.T + shift, vbcd.faces)
    center = (np.asarray(frame.center) - shift) @ rot
    assert np.linalg.norm(center - VBCD_CENTER) < 1.5
    assert abs((center - VBCD_CENTER) @ VBCD_OCCLUSAL) < 0.6
    assert _angle(np.asarray(frame.occlusal) @ rot, VBCD_OCCLUSAL) < 12.0


def test_a_click_on_the_antagonist_proposes_the_preparation_below(vbcd):
    # clicking straight down the occlusal axis hits the opposing jaw first: take the point of
    # the antagonist (pieces facing -y) nearest to 6 mm above the true centre
    from app.core.crown.locate import _face_labels, _vector_areas

    vertices, faces = np.asarray(vbcd.vertices), np.asarray(vbcd.faces)
    k, labels = _face_labels(vertices, faces)
    piece_va = np.zeros((k, 3))
    np.add.at(piece_va, labels, _vector_areas(vertices, faces))
    on_antagonist = np.unique(faces[(piece_va @ VBCD_OCCLUSAL)[labels] < 0])
    target = VBCD_CENTER + 6.0 * VBCD_OCCLUSAL
    near = on_antagonist[np.argmin(np.linalg.norm(vertices[on_antagonist] - target, axis=1))]
    point = vertices[near]
    assert (point - VBCD_CENTER) @ VBCD_OCCLUSAL > 3.0
    frame = propose_frame(vertices, faces, point)
    assert np.linalg.norm(np.asarray(frame.center) - VBCD_CENTER) < 1.5
    assert _angle(frame.occlusal, VBCD_OCCLUSAL) < 12.0


@pytest.mark.parametrize(
    "name", ["alsheghri_Upper001C_labeled.vtp", "alsheghri_Upper024C_missing_11_17.vtp"]
)
def test_a_full_natural_arch_holds_no_preparation(dental_samples, name):
    # natural upper arches (one with missing teeth): the lowest tooth touches its neighbours
    # instead of standing free above a margin
    arch = _load(dental_samples, name)
    with pytest.raises(LocateError, match="no preparation found.*natural tooth"):
        find_preparation(arch.vertices, arch.faces)


@pytest.mark.parametrize("name", ["szu_patient10_b_u_11.stl", "szu_patient11_b_l_41.stl"])
def test_a_single_tooth_holds_no_preparation(dental_samples, name):
    tooth = _load(dental_samples, name)
    with pytest.raises(LocateError, match="no preparation found"):
        find_preparation(tooth.vertices, tooth.faces)
