"""The QA aids in the panels: the distance map, the measuring tool and the mask brush."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from distance_cases import facing, gap_case

from app.core.distances import DistanceLimits, occlusal_bands, proximal_bands

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer3d(qapp, qtbot) -> Iterator:
    from app.ui.viewer3d import Viewer3D

    v = Viewer3D()
    v.resize(480, 400)
    qtbot.addWidget(v)
    v.show()
    yield v
    v.shutdown()


def show_gap_case(viewer, **gaps):
    from app.ui.viewer3d import mesh_to_polydata

    case = gap_case(**gaps)
    viewer.set_scan(mesh_to_polydata(case.scan))
    viewer.set_crown(mesh_to_polydata(case.crown))
    return case


def crown_rgb(viewer) -> np.ndarray:
    from vtk.util.numpy_support import vtk_to_numpy

    scalars = viewer.actor("crown").GetMapper().GetInput().GetPointData().GetScalars()
    return vtk_to_numpy(scalars)


def test_distance_map_shows_the_known_gaps(viewer3d, qtbot):
    from app.ui.distance_map import DistanceMap

    limits = DistanceLimits(contact_max_mm=0.1, clearance_min_mm=1.0)
    dmap = DistanceMap(viewer3d, lambda: limits)
    case = show_gap_case(viewer3d, distal_gap=0.3, mesial_gap=0.05, occlusal_gap=0.8)
    side = facing(case.crown)
    with qtbot.waitSignal(dmap.computed, timeout=60000):
        dmap.actions["proximal"].trigger()
    crown = viewer3d.mesh("crown")
    np.testing.assert_allclose(crown.point_data["proximal_mm"][side["distal"]], 0.3, atol=1e-6)
    np.testing.assert_allclose(crown.point_data["proximal_mm"][side["mesial"]], 0.05, atol=1e-6)
    np.testing.assert_allclose(crown.point_data["occlusal_mm"][side["top"]], 0.8, atol=1e-6)
    contact, opened = proximal_bands(limits)[1:3]
    rgb = crown_rgb(viewer3d)
    assert {tuple(c) for c in rgb[side["mesial"]]} == {contact.color}
    assert {tuple(c) for c in rgb[side["distal"]]} == {opened.color}
    # clearance: the same crown, recoloured from the distances already computed
    dmap.actions["occlusal"].trigger()
    assert not dmap.actions["proximal"].isChecked()
    too_close = occlusal_bands(limits)[1]
    assert {tuple(c) for c in crown_rgb(viewer3d)[side["top"]]} == {too_close.color}
    assert viewer3d.plotter.legend is not None
    dmap.set_mode(None)
    assert viewer3d.actor("crown").GetMapper().GetInput().GetPointData().GetScalars() is None
    assert viewer3d.plotter.legend is None
    # a new crown drops the old distances and, with the map on, computes its own
    dmap.set_mode("proximal")
    with qtbot.waitSignal(dmap.computed, timeout=60000):
        show_gap_case(viewer3d, distal_gap=0.6, mesial_gap=0.05, occlusal_gap=0.8)
    np.testing.assert_allclose(dmap.distances.proximal[side["distal"]], 0.6, atol=1e-6)
    dmap.shutdown()


def test_measure_two_picked_points(viewer3d, qtbot):
    from app.ui.measure_tool import MeasureTool

    tool = MeasureTool(viewer3d)
    show_gap_case(viewer3d)
    tool.action.trigger()
    viewer3d.pick_action.setChecked(False)
    with qtbot.waitSignal(tool.measured) as got:
        tool.add_point((4.0, 0.0, 0.0))
        assert viewer3d.actor("measure_line") is None
        tool.add_point((-4.0, 3.0, 3.0))
    assert got.args[0] == pytest.approx(np.sqrt(64 + 9 + 9))
    assert viewer3d.actor("measure_line") is not None
    line = viewer3d.actor("measure_line").GetMapper().GetInput()
    np.testing.assert_allclose(
        np.array(line.GetPoints().GetData())[[0, -1]], [[4, 0, 0], [-4, 3, 3]]
    )
    tool.add_point((0.0, 0.0, 0.0))  # a third click starts over
    assert tool.distance is None and viewer3d.actor("measure_line") is None
    viewer3d.pick_action.setChecked(True)  # the two pickers never run together
    assert not tool.action.isChecked() and not tool.points
    viewer3d.pick_action.setChecked(False)
