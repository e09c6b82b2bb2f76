"""The window follows the files: F5 and the watcher, stale errors, panel resets, toolbar fit."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from gui_fixtures import *  # noqa: F403
from gui_fixtures import wait_for
from PySide6 import QtCore, QtWidgets

pytestmark = pytest.mark.gui

INPUTS_CHANGED = "inputs changed — re-run"


def run_and_wait(qtbot, w, name: str) -> str:
    w.select_case(name)
    wait_for(qtbot, lambda: w._view_tag is None)
    with qtbot.waitSignal(w.run_finished, timeout=120000) as blocker:
        w.run_button.click()
    return blocker.args[1]


def show(qtbot, w, name: str) -> None:
    w.select_case(name)
    wait_for(qtbot, lambda: w.current == name and w._view_tag is None)


def settled(qtbot, w) -> None:
    """Wait until the watcher's pending check (if any) has run and been applied."""
    wait_for(qtbot, lambda: not w.file_watch.timer.isActive() and w.file_watch.tag is None)
    wait_for(qtbot, lambda: w._view_tag is None)


def break_scan(workspace, name: str) -> bytes:
    """Empty the case's scan (a 0-byte file, as a failed copy leaves); return its bytes."""
    scan = workspace / name / "scan.ply"
    good = scan.read_bytes()
    scan.write_bytes(b"")
    return good


def fix_file(path, data: bytes) -> None:
    time.sleep(0.05)  # file times follow a coarse clock: the fix must come after the error
    path.write_bytes(data)


def scan_centre(w) -> np.ndarray:
    return np.asarray(w.viewer3d.actor("scan").GetCenter())


def failed_on_empty_scan(qtbot, w, workspace) -> bytes:
    """case_002's scan is emptied; its run fails and the error is recorded."""
    good = break_scan(workspace, "case_002")
    assert run_and_wait(qtbot, w, "case_002") == "error"
    assert w.case_list.status_text("case_002") == "error"
    settled(qtbot, w)
    w.open_workspace(workspace)  # the recorded error survives a reopen while the file is bad
    assert w.case_list.status_text("case_002") == "error"
    return good


def test_f5_after_fixing_a_file_clears_the_error_and_shows_the_new_scan(
    make_window, fake_workspace, qtbot
):
    w = make_window(fake_workspace)
    good = failed_on_empty_scan(qtbot, w, fake_workspace)
    show(qtbot, w, "case_002")
    assert w.viewer3d.actor("scan") is None
    w.file_watch.stop()  # F5 alone must do it
    fix_file(fake_workspace / "case_002" / "scan.ply", good)
    w.activateWindow()
    wait_for(qtbot, lambda: QtWidgets.QApplication.activeWindow() is w)  # shortcuts need it
    w.case_list.setFocus()
    with qtbot.waitSignal(w.view_shown, timeout=60000):
        qtbot.keyClick(w.case_list, QtCore.Qt.Key.Key_F5)
    assert w.current == "case_002"
    assert w.case_list.status_text("case_002") == "new"
    assert "Error" not in w.qa.details.toPlainText()
    assert "scan.ply" not in w.case_list.tooltip("case_002")
    np.testing.assert_allclose(scan_centre(w), [20.0, -10.0, 3.0], atol=0.5)


def test_the_watcher_clears_the_error_when_the_file_is_fixed(make_window, fake_workspace, qtbot):
    w = make_window(fake_workspace)
    good = failed_on_empty_scan(qtbot, w, fake_workspace)
    show(qtbot, w, "case_002")
    settled(qtbot, w)
    submitted = []
    real_submit = w.runner.submit
    w.runner.submit = lambda tag, fn: submitted.append(tag.kind) or real_submit(tag, fn)
    scan = fake_workspace / "case_002" / "scan.ply"
    fix_file(scan, good[:10])  # an editor's save: a burst of writes
    scan.write_bytes(good[:100])
    scan.write_bytes(good)
    with qtbot.waitSignal(w.view_shown, timeout=60000):
        pass
    assert submitted.count("inputs") == 1  # the burst was one check
    assert w.case_list.status_text("case_002") == "new"
    assert "Error" not in w.qa.details.toPlainText()
    np.testing.assert_allclose(scan_centre(w), [20.0, -10.0, 3.0], atol=0.5)


def test_a_result_from_other_inputs_shows_inputs_changed_until_re_run(
    make_window, fake_workspace, qtbot
):
    w = make_window(fake_workspace)
    assert run_and_wait(qtbot, w, "case_001") == "generated"
    settled(qtbot, w)
    show(qtbot, w, "case_003")
    image = fake_workspace / "case_001" / "image_1.png"
    with qtbot.waitSignal(w.file_watch.checked, timeout=60000):
        fix_file(image, image.read_bytes() + b"\0")
    assert w.case_list.status_text("case_001") == INPUTS_CHANGED
    assert w.case_list.status_text("case_003") == "new"
    show(qtbot, w, "case_001")
    details = w.qa.details.toPlainText()
    assert INPUTS_CHANGED in details and "changed after this result was generated" in details
    w.refresh_workspace()  # and again after F5, once the check has run
    settled(qtbot, w)
    assert w.case_list.status_text("case_001") == INPUTS_CHANGED
    assert run_and_wait(qtbot, w, "case_001") == "generated"
    result_view = w.shown
    settled(qtbot, w)
    assert w.case_list.status_text("case_001") == "generated"
    assert w.shown is result_view  # the run's own run.json is no reason to reload the case


def test_a_new_case_folder_is_listed_without_f5_and_drafts_are_kept(
    make_window, fake_workspace, qtbot
):
    w = make_window(fake_workspace)
    show(qtbot, w, "case_002")
    settled(qtbot, w)
    w.qa.note.setPlainText("margin looks short")
    with qtbot.waitSignal(w.file_watch.checked, timeout=60000):
        shutil.copytree(fake_workspace / "case_003", fake_workspace / "case_004")
    assert "case_004" in w.case_list.names()
    assert w.current == "case_002"
    assert w.qa.note.toPlainText() == "margin looks short"


def test_panels_reset_for_a_case_without_images_or_mesh(make_window, fake_workspace, qtbot):
    scan_only = fake_workspace / "scan_only"
    scan_only.mkdir()
    shutil.copy(fake_workspace / "case_001" / "scan.ply", scan_only / "scan.ply")
    w = make_window(fake_workspace)
    assert run_and_wait(qtbot, w, "case_001") == "generated"
    view = w.viewer2d.view
    view.zoom_by(6.0)
    QtWidgets.QApplication.processEvents()
    assert w.viewer2d.zoom_label.text() != "" and view.horizontalScrollBar().maximum() > 0
    show(qtbot, w, "scan_only")
    QtWidgets.QApplication.processEvents()
    assert w.viewer2d.zoom_label.text() == ""
    assert view.horizontalScrollBar().maximum() == 0 and view.verticalScrollBar().maximum() == 0
    assert view.scale_factor() == 1.0 and w.viewer2d.strip.count() == 0
    assert w.viewer3d.actor("crown") is None and w.viewer3d.actor("scan") is not None
    show(qtbot, w, "case_001")
    show(qtbot, w, "no_scan")  # images but no mesh: nothing of case_001 in 3D
    assert w.viewer3d.actor("scan") is None and w.viewer3d.actor("crown") is None
    assert w.viewer2d.strip.count() == 1


def toolbar_overflow(w) -> dict[str, list[str]]:
    """Per toolbar, the actions hidden behind its » extension button."""
    out = {}
    for bar in w.findChildren(QtWidgets.QToolBar):
        hidden = [
            a.text() or a.toolTip() or type(bar.widgetForAction(a)).__name__
            for a in bar.actions()
            if not a.isSeparator() and not bar.widgetForAction(a).isVisible()
        ]
        ext = bar.findChild(QtWidgets.QToolButton, "qt_toolbar_ext_button")
        if hidden or (ext is not None and ext.isVisible()):
            out[bar.windowTitle()] = hidden
    return out


def test_the_toolbars_fit_at_1280x720(make_window, fake_workspace, qtbot):
    w = make_window(fake_workspace, models=Path(__file__).resolve().parents[1] / "models")
    w.resize(1280, 720)
    wait_for(qtbot, lambda: w.width() == 1280)
    QtWidgets.QApplication.processEvents()
    assert w.viewer2d.class_checks, "the legend must be filled for the check to mean something"
    assert toolbar_overflow(w) == {}
    v3 = w.viewer3d
    tools = v3.tools_toolbar
    shot = next(a for a in tools.actions() if "screenshot" in a.toolTip())
    for widget in (
        v3.frame_check,
        tools.widgetForAction(v3.pick_action),
        tools.widgetForAction(shot),
        v3.view_buttons["Occlusal"],
    ):
        assert widget.isVisible()
