"""The QA aids in the panels: the distance map, the measuring tool and the mask brush."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from distance_cases import facing, gap_case
from gui_fixtures import *  # noqa: F403
from gui_fixtures import wait_for

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

    viewer.plotter.render()  # the mapper reads its input when drawn
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
    assert dmap.button.text() == "Clearance"  # the toolbar names the map shown
    too_close = occlusal_bands(limits)[1]
    assert {tuple(c) for c in crown_rgb(viewer3d)[side["top"]]} == {too_close.color}
    legend = viewer3d.legend.text()
    assert viewer3d.legend.isVisible() and "antagonist" in legend and "too close (0–1 mm)" in legend
    assert "overlap (&lt; 0 mm)" in legend  # escaped, not read as a tag
    dmap.set_mode(None)
    viewer3d.plotter.render()
    assert viewer3d.actor("crown").GetMapper().GetInput().GetPointData().GetScalars() is None
    assert not viewer3d.legend.isVisible()
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
        assert viewer3d.actor("measure_label-labels") is None
        tool.add_point((-4.0, 3.0, 3.0))
    assert got.args[0] == pytest.approx(np.sqrt(64 + 9 + 9))
    assert viewer3d.actor("measure_label-labels") is not None
    viewer3d.plotter.render()
    marks = viewer3d.actor("measure").GetMapper().GetInput()
    assert marks.GetNumberOfLines() == 1
    np.testing.assert_allclose(np.array(marks.GetPoints().GetData()), [[4, 0, 0], [-4, 3, 3]])
    tool.add_point((0.0, 0.0, 0.0))  # a third click starts over
    assert tool.distance is None and viewer3d.actor("measure_label-labels") is None
    viewer3d.plotter.render()
    assert viewer3d.actor("measure").GetMapper().GetInput().GetNumberOfLines() == 0
    viewer3d.pick_action.setChecked(True)  # the two pickers never run together
    assert not tool.action.isChecked() and not tool.points
    viewer3d.pick_action.setChecked(False)


PALETTE = [(0, 0, 0), (230, 220, 190), (200, 60, 60)]


@pytest.fixture
def mask_panel(qapp, qtbot, tmp_path):
    """A 2D panel showing one 64 x 48 image with an all-background model mask on disk."""
    from app.core.segment.imageio import save_label_png
    from app.ui.mask_editor import MaskEditor
    from app.ui.viewer2d import ImageEntry, Viewer2D

    image = tmp_path / "img.png"
    image.write_bytes(b"stand-in input")
    model_mask = tmp_path / "output" / "img_mask.png"
    model_mask.parent.mkdir()
    labels = np.zeros((48, 64), np.uint8)
    labels[:, 56:] = 1
    save_label_png(model_mask, labels, PALETTE)
    v = Viewer2D()
    v.resize(640, 560)
    qtbot.addWidget(v)
    v.show()
    v.set_classes(["background", "tooth", "gum"], PALETTE)
    rgb = np.full((48, 64, 3), 90, np.uint8)
    v.set_images([ImageEntry(image, rgb, labels.copy())])
    editor = MaskEditor(v, lambda img: model_mask, lambda: [image])
    return v, editor, model_mask


def drag(view, points, qtbot) -> None:
    """Press, move through and release at image positions (pixel centres), as a mouse would."""
    from PySide6 import QtCore, QtGui, QtWidgets

    vp = view.viewport()
    left, none = QtCore.Qt.MouseButton.LeftButton, QtCore.Qt.MouseButton.NoButton
    kinds = (
        [QtCore.QEvent.Type.MouseButtonPress]
        + [QtCore.QEvent.Type.MouseMove] * (len(points) - 1)
        + [QtCore.QEvent.Type.MouseButtonRelease]
    )
    for kind, (x, y) in zip(kinds, [*points, points[-1]], strict=True):
        pos = QtCore.QPointF(view.mapFromScene(QtCore.QPointF(x + 0.5, y + 0.5)))
        button = none if kind == QtCore.QEvent.Type.MouseMove else left
        buttons = none if kind == QtCore.QEvent.Type.MouseButtonRelease else left
        event = QtGui.QMouseEvent(
            kind, pos, vp.mapToGlobal(pos), button, buttons, QtCore.Qt.KeyboardModifier.NoModifier
        )
        QtWidgets.QApplication.sendEvent(vp, event)
    qtbot.wait(10)


def test_brush_stroke_saved_and_reloaded_as_class_ids(mask_panel, qtbot):
    from app.core.segment.imageio import read_label_palette, read_label_png

    v, editor, model_mask = mask_panel
    model_bytes = model_mask.read_bytes()
    editor.radius_spin.setValue(3)
    editor.class_combo.setCurrentIndex(2)
    editor.brush_action.trigger()
    drag(v.view, [(10, 20), (25, 20), (40, 20)], qtbot)
    labels = v.current_entry().labels
    assert np.all(labels[18:23, 10:41] == 2)  # the stroke, its full width, no gaps
    assert np.all(labels[:16, :56] == 0) and np.all(labels[25:, :56] == 0)
    assert np.all(labels[:, 56:] == 1)  # the model's other class is untouched
    shown = v.composite[20, 25]
    assert shown[0] > shown[1]  # the overlay shows the new class (reddish) at once
    # the eraser paints background; undo takes back that whole stroke
    before_erase = labels.copy()
    editor.eraser_action.trigger()
    assert not editor.brush_action.isChecked()
    drag(v.view, [(20, 20), (30, 20)], qtbot)
    assert np.all(v.current_entry().labels[20, 20:31] == 0)
    editor.undo_action.trigger()
    np.testing.assert_array_equal(v.current_entry().labels, before_erase)
    path = editor.save()
    assert path == model_mask.with_name("img_mask_corrected.png")
    np.testing.assert_array_equal(read_label_png(path), before_erase)
    assert read_label_palette(path) == read_label_palette(model_mask)
    assert model_mask.read_bytes() == model_bytes  # the model's mask is kept as it was
    assert not editor.save_action.isEnabled()
    # a second undo goes back to the model's mask
    editor.undo_action.trigger()
    assert not v.current_entry().labels[:, :56].any()
    assert editor.save_action.isEnabled()


def test_mask_save_never_writes_an_input(mask_panel, qtbot):
    v, editor, model_mask = mask_panel
    target = model_mask.with_name("img_mask_corrected.png")
    target.write_bytes(b"an input that happens to sit there")
    editor.inputs = lambda: [target]
    editor.brush_action.trigger()
    drag(v.view, [(5, 5), (6, 5)], qtbot)
    with qtbot.waitSignal(editor.failed) as why:
        assert editor.save() is None
    assert target.read_bytes() == b"an input that happens to sit there"
    assert "NOT saved" in editor.state.text() and "input" in why.args[0]
    editor.brush_action.trigger()  # off: the view pans again
    assert v.view.dragMode() == v.view.DragMode.ScrollHandDrag


def test_corrected_mask_is_recorded_with_the_decision(make_window, fake_workspace, qtbot, tmp_path):
    from app.core.qa_store import Decision, QaStore
    from app.core.segment.imageio import read_label_png

    w = make_window(fake_workspace)
    w.select_case("case_001")
    wait_for(qtbot, lambda: w._view_tag is None)
    with qtbot.waitSignal(w.run_finished, timeout=120000):
        w.run_button.click()
    wait_for(qtbot, lambda: w.viewer2d.current_entry() is not None)
    wait_for(qtbot, lambda: w.viewer2d.current_entry().labels is not None)
    menu_texts = [a.text() for m in w.menuBar().actions() if m.menu() for a in m.menu().actions()]
    assert {"Contacts", "Clearance", "Measure"} <= set(menu_texts)
    case, entry, editor = w.cases["case_001"], w.viewer2d.current_entry(), w.aids.masks
    model_mask = case.mask_path(entry.path)
    editor.class_combo.setCurrentIndex(1)
    editor.radius_spin.setValue(4)
    editor.brush_action.trigger()
    drag(w.viewer2d.view, [(20, 20), (60, 20)], qtbot)
    saved = editor.save()
    assert saved == model_mask.with_name(f"{model_mask.stem}_corrected.png")
    assert np.all(read_label_png(saved)[20, 20:61] == 1)
    record = w.decisions.decide(Decision.REJECTED, "mask misses the margin")
    expected = (f"output/{saved.name}",)
    assert record.corrected_masks == expected
    with QaStore(fake_workspace) as store:
        assert store.history("case_001")[-1].corrected_masks == expected
    report = tmp_path / "qa.csv"
    w.decisions.export_report(report)
    assert expected[0] in report.read_text()
    # a re-run replaces the model's masks: the old correction no longer belongs to the result
    w.runs.confirm_rerun = lambda name: True
    with qtbot.waitSignal(w.run_finished, timeout=120000):
        w.run_button.click()
    assert w.decisions.decide(Decision.APPROVED).corrected_masks == ()


def test_distance_limits_are_settings(isolated_qsettings, qapp):
    from app.ui.settings import AppSettings, SettingsDialog, load_settings, qsettings, save_settings

    save_settings(AppSettings(contact_max_mm=0.2, clearance_min_mm=1.5))
    assert load_settings(qsettings()).distance_limits() == DistanceLimits(0.2, 1.5)
    qsettings().setValue("contact_max_mm", -1)  # out of range: back to the defaults
    assert load_settings(qsettings()).distance_limits() == DistanceLimits()
    dlg = SettingsDialog(AppSettings())
    dlg.contact_spin.setValue(0.05)
    dlg.clearance_spin.setValue(2.0)
    assert dlg.result_settings().distance_limits() == DistanceLimits(0.05, 2.0)
    dlg.deleteLater()


def test_a_database_from_before_corrected_masks_gains_the_column(tmp_path):
    import sqlite3

    from app.core.qa_store import DB_NAME, Decision, QaRecord, QaStore

    with QaStore(tmp_path) as store:
        store.record_decision(QaRecord("old", Decision.APPROVED))
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("ALTER TABLE decisions DROP COLUMN corrected_masks")  # as the table shipped
    db.commit()
    db.close()
    masks = ("output/a_mask_corrected.png", "output/b;c_mask_corrected.png")
    with QaStore(tmp_path) as store:
        assert store.history("old")[0].corrected_masks == ()
        store.record_decision(QaRecord("new", Decision.REJECTED, corrected_masks=masks))
    with QaStore(tmp_path) as store:
        assert store.latest_decisions()["new"].corrected_masks == masks
