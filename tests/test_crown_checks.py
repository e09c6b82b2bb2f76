"""Post-processing (which parts of the crown to keep) and the plausibility checks."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from app.core.crown.checks import base_gap, check_crown, clipped_faces
from app.core.crown.components import choose_parts, split_parts, submesh
from app.core.crown.frame import CaseFrame, make_frame
from app.core.manifest import Checks, Frame


def _boxes(*specs: tuple[float, tuple[float, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    verts, faces = [], []
    for edge, centre in specs:
        b = trimesh.creation.box([edge] * 3)
        faces.append(np.asarray(b.faces) + sum(len(v) for v in verts))
        verts.append(np.asarray(b.vertices) + centre)
    return np.concatenate(verts), np.concatenate(faces)


def test_parts_are_split_measured_and_chosen_by_rule() -> None:
    v, f = _boxes((4.0, (0, 0, 0)), (1.0, (0, 0, 6)), (2.0, (9, 0, 0)))
    parts = split_parts(v, f)
    assert [round(p.volume, 6) for p in parts] == [64.0, 8.0, 1.0]
    np.testing.assert_allclose(parts[1].centroid, [9, 0, 0])
    kept, removed = choose_parts(parts, "largest", 0.0, np.zeros(3), np.array([0, 0, 1.0]))
    assert kept == [parts[0]] and removed == parts[1:]
    # the part whose centroid is nearest the occlusal axis through (9, 0, 0)
    kept, _ = choose_parts(parts, "over_preparation", 0.0, np.array([9, 0, -5.0]), [0, 0, 1])
    assert kept == [parts[1]]
    # ... unless it is below the volume floor: then the one next nearest the axis
    kept, _ = choose_parts(parts, "over_preparation", 10.0, np.array([9, 0, -5.0]), [0, 0, 1])
    assert kept == [parts[0]]
    kept, removed = choose_parts(parts, "all", 2.0, np.zeros(3), [0, 0, 1])
    assert kept == parts[:2] and removed == [parts[2]]
    sv, sf = submesh(v, f, kept)
    assert len(sf) == 24 and len(sv) == 16 and sf.max() == 15
    assert [round(p.volume, 6) for p in split_parts(sv, sf)] == [64.0, 8.0]


def test_clipped_faces_are_named_in_the_case_frame() -> None:
    values = np.full((9, 9, 9), -1.0, np.float32)
    values[3:6, 3:6, 3:9] = 1.0  # reaches the +z face of the cube
    assert clipped_faces(values, 0.0, Frame("fixed", 20.0, "bbox")) == ["occlusal (top)"]
    # a model whose occlusal axis is -z sees the same face as its cervical one
    turned = Frame("fixed", 20.0, "bbox", occlusal="-z", mesial="+y")
    assert clipped_faces(values, 0.0, turned) == ["cervical (bottom)"]
    values[0, 4, 4] = 1.0
    assert clipped_faces(values, 0.0, turned) == ["buccal or lingual", "cervical (bottom)"]
    values[4, 0, 4] = 1.0
    assert "mesial or distal" in clipped_faces(values, 0.0, turned)
    assert clipped_faces(np.zeros((5, 5, 5)), 0.5, turned) == []


def _check(crown, scan, case, **kw):
    frame = Frame("fixed", 20.0, "bbox")
    t = make_frame(scan, frame, case=case)
    args = {"components": (1, 1), "removed_volume_mm3": 0.0, "clipped": [],
            "gap_mm": base_gap(crown.vertices, scan, t, frame)} | kw  # fmt: skip
    return check_crown(crown.vertices, crown.volume, crown.is_watertight, t, frame, Checks(),
                       **args)  # fmt: skip


def test_a_plausible_crown_passes_and_each_fault_is_named() -> None:
    # a 10 x 8 x 7 mm crown (mesio-distal along y, occlusal along -x) on a flat preparation
    crown = trimesh.creation.box([7.0, 10.0, 8.0])
    crown.apply_translation([-3.5, 0, 0])
    prep = np.stack(np.meshgrid([0.2], np.linspace(-6, 6, 25), np.linspace(-6, 6, 25)), -1)
    scan = prep.reshape(-1, 3)
    case = CaseFrame((-3.5, 0, 0), occlusal=(-1, 0, 0), mesial=(0, 1, 0))
    good = _check(crown, scan, case)
    assert good.warnings == []
    assert good.extents_mm == pytest.approx((10.0, 8.0, 7.0))
    assert good.base_gap_mm == pytest.approx(0.2, abs=0.05)

    # the same crown seen with the wrong occlusal direction: its base is its top, far away
    wrong = _check(crown, scan, CaseFrame((-3.5, 0, 0), occlusal=(1, 0, 0), mesial=(0, 1, 0)))
    assert any("does not sit on the preparation" in w for w in wrong.warnings)

    tall = trimesh.creation.box([16.0, 10.0, 8.0])
    tall.apply_translation([-8.0, 0, 0])
    res = _check(tall, scan, case)
    assert any("16.0 mm occlusal" in w and "3–12 mm" in w for w in res.warnings)

    res = _check(crown, scan, case, components=(5, 1), removed_volume_mm3=90.0,
                 clipped=["occlusal (top)"])  # fmt: skip
    text = " ".join(res.warnings)
    assert (
        "5 separate parts; 4 removed" in text and "cut by the frame's occlusal (top) face" in text
    )
    assert res.as_dict()["components_before"] == 5
    # small specks removed are normal: no warning for them
    assert _check(crown, scan, case, components=(5, 1), removed_volume_mm3=5.0).warnings == []
