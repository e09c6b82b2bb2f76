"""Screenshot regression tests of the two panels (see ``screenshot_cache`` for regenerating)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from distance_cases import gap_case
from PySide6 import QtGui
from screenshot_cache import MAX_ERROR, REFERENCES, check_screenshot, image_error

from app.core import distances
from app.core.distances import DistanceLimits

pytestmark = pytest.mark.gui

CAMERA = [(24.0, -22.0, 14.0), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0)]
SIZE_3D = (360, 300)


@pytest.fixture
def viewer3d(qapp, qtbot) -> Iterator:
    from app.ui.viewer3d import Viewer3D

    v = Viewer3D()
    qtbot.addWidget(v)
    v.show()
    v.plotter.setFixedSize(*SIZE_3D)
    qtbot.waitExposed(v)
    yield v
    v.shutdown()


def render_gap_case(viewer) -> np.ndarray:
    from app.ui.viewer3d import mesh_to_polydata

    case = gap_case(distal_gap=0.3, mesial_gap=0.05, occlusal_gap=1.5)
    viewer.set_scan(mesh_to_polydata(case.scan), reset=False)
    viewer.set_crown(mesh_to_polydata(case.crown))
    viewer.scan_opacity.setValue(35)
    viewer.plotter.camera_position = CAMERA
    viewer.plotter.reset_camera_clipping_range()
    return viewer.render_image()


def distance_map_image(viewer, qtbot) -> np.ndarray:
    from app.ui.distance_map import DistanceMap

    dmap = DistanceMap(viewer, DistanceLimits)
    render_gap_case(viewer)
    with qtbot.waitSignal(dmap.computed, timeout=60000):
        dmap.set_mode("proximal")
    return viewer.render_image()


def test_3d_panel_scan_and_crown(viewer3d):
    check_screenshot("viewer3d_scan_crown", render_gap_case(viewer3d))


def test_3d_panel_distance_map_with_legend(viewer3d, qtbot):
    check_screenshot("viewer3d_contacts", distance_map_image(viewer3d, qtbot))


def test_2d_panel_overlay_and_roi(qapp, qtbot):
    from app.ui.viewer2d import ImageEntry, Viewer2D

    v = Viewer2D()
    qtbot.addWidget(v)
    v.show()
    v.view.setFixedSize(320, 240)
    qtbot.waitExposed(v)
    yy, xx = np.mgrid[0:120, 0:160]
    rgb = np.stack([xx * 1.5, yy * 2.0, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    labels = np.zeros((120, 160), np.uint8)
    labels[(xx - 60) ** 2 + (yy - 60) ** 2 < 35**2] = 1
    labels[20:50, 100:150] = 2
    v.set_classes(["background", "tooth", "gum"], [(0, 0, 0), (240, 230, 120), (210, 60, 60)])
    v.set_images([ImageEntry(Path("synthetic.png"), rgb, labels, roi_box=(10, 10, 150, 110))])
    v.view.fit()
    qtbot.waitUntil(lambda: "tooth: " in v.info.text(), timeout=10000)  # the overlay is drawn
    qtbot.wait(50)
    img = v.view.viewport().grab().toImage().convertToFormat(QtGui.QImage.Format.Format_RGB888)
    rows = np.frombuffer(img.constBits(), np.uint8).reshape(img.height(), img.bytesPerLine())
    arr = rows[:, : 3 * img.width()].reshape(img.height(), img.width(), 3)
    check_screenshot("viewer2d_overlay", arr)


def test_a_changed_colour_map_fails_the_comparison(viewer3d, qtbot, monkeypatch):
    """The tolerance forgives renderer noise, not a visual change: recolour the contact band."""
    reference = REFERENCES / "viewer3d_contacts.png"
    if not reference.is_file():
        pytest.fail(f"{reference.name} missing: regenerate the references first")
    from PIL import Image

    bands = distances.proximal_bands

    def recoloured(limits):
        return [
            distances.Band(b.low, b.high, b.label, (b.color[2], b.color[0], b.color[1]))
            for b in bands(limits)
        ]

    monkeypatch.setattr("app.ui.distance_map.proximal_bands", recoloured)
    actual = distance_map_image(viewer3d, qtbot)
    assert image_error(np.asarray(Image.open(reference).convert("RGB")), actual) > MAX_ERROR
