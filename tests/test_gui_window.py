"""The real window under Xvfb: open, run, review, decide, restart, cancel, switch, break."""

from __future__ import annotations

import csv
import sqlite3
import threading
from collections.abc import Callable

import numpy as np
import pytest
from gui_fixtures import *  # noqa: F403
from gui_fixtures import SPHERE_RADIUS_MM, wait_for
from PySide6 import QtCore, QtGui, QtWidgets

from app.core import case_run, qa_store, workspace
from app.core.errors import Cancelled
from app.core.qa_store import Decision

pytestmark = pytest.mark.gui


def run_and_wait(qtbot, w, name: str, timeout_ms: int = 120000) -> str:
    w.select_case(name)
    wait_for(qtbot, lambda: w._view_tag is None)
    with qtbot.waitSignal(w.run_finished, timeout=timeout_ms) as blocker:
        w.run_button.click()
    return blocker.args[1]


def sphere_centre(i: int) -> np.ndarray:
    return np.array([10.0 * i, -5.0 * i, 3.0])


def test_open_workspace_lists_cases_with_status_and_errors(make_window, fake_workspace):
    w = make_window(fake_workspace)
    assert w.case_list.names() == ["case_001", "case_002", "case_003", "case_bad", "no_scan"]
    assert w.case_list.status_text("case_001") == "new"
    assert w.case_list.status_text("no_scan") == "error"
    assert "no scan mesh" in w.case_list.tooltip("no_scan")
    assert w.current == "case_001"
    assert w.viewer3d.actor("scan") is not None
    assert w.viewer3d.actor("crown") is None
    assert len(w.viewer2d.entries) == 2
    assert w.provider_label.text() == "Provider: CPU"
    assert "cpu" in w.provider_label.toolTip()
    assert "Sphere crown" in w.models_label.text()
    assert not w.qa.approve.isEnabled()  # nothing to judge yet


def test_run_case_shows_crown_with_expected_bounds_and_overlay(make_window, fake_workspace, qtbot):
    w = make_window(fake_workspace)
    inputs_before = workspace.input_hash(w.cases["case_002"])
    assert run_and_wait(qtbot, w, "case_002") == "generated"
    assert w.case_list.status_text("case_002") == "generated"
    assert workspace.input_hash(w.cases["case_002"]) == inputs_before
    bounds = np.array(w.viewer3d.crown_bounds()).reshape(3, 2)
    c = sphere_centre(2)
    np.testing.assert_allclose(bounds[:, 0], c - SPHERE_RADIUS_MM, atol=0.6)
    np.testing.assert_allclose(bounds[:, 1], c + SPHERE_RADIUS_MM, atol=0.6)
    # the same actors after a second run (scan, crown, crop box, its axes): replaced, never piled up
    assert run_and_wait(qtbot, w, "case_002") == "generated"
    assert sorted(w.viewer3d.plotter.actors) == ["crown", "frame", "mesial", "occlusal", "scan"]
    # outputs
    case = w.cases["case_002"]
    assert case.crown_path.is_file() and case.outputs_present()
    assert case.overlay_path(case.images[0]).is_file()
    # the overlay: mask pixels are drawn in their class colours
    entry = w.viewer2d.current_entry()
    assert entry is not None and entry.labels is not None
    red = entry.labels == 1
    blue = entry.labels == 2
    assert red.sum() > 500 and blue.sum() > 500
    comp = w.viewer2d.composite.astype(int)
    raw = entry.rgb.astype(int)
    assert np.abs(comp[red] - raw[red]).sum(axis=1).mean() > 20
    np.testing.assert_array_equal(comp[entry.labels == 0], raw[entry.labels == 0])
    # hiding class 1 restores those pixels; contour mode changes fewer pixels than fill
    w.viewer2d.class_checks[1].setChecked(False)
    np.testing.assert_array_equal(w.viewer2d.composite[red], entry.rgb[red])
    w.viewer2d.class_checks[1].setChecked(True)
    fill_changed = (w.viewer2d.composite != entry.rgb).any(axis=2).sum()
    w.viewer2d.mode.setCurrentText("contour")
    contour_changed = (w.viewer2d.composite != entry.rgb).any(axis=2).sum()
    assert 0 < contour_changed < fill_changed


def test_approve_survives_restart(make_window, fake_workspace, qtbot):
    w = make_window(fake_workspace)
    run_and_wait(qtbot, w, "case_001")
    qtbot.keyClicks(w.qa.note, "margins fine")
    w.setFocus()
    w.qa.approve.click()
    assert w.case_list.status_text("case_001") == "approved"
    assert w.qa.saved_label.text().startswith("Saved: approved")
    # the record is already on disk (other connection) when the UI says saved
    db = sqlite3.connect(fake_workspace / qa_store.DB_NAME)
    row = db.execute(
        "SELECT decision, note, user, crown_model, crown_version, provider, input_hash"
        " FROM decisions"
    ).fetchone()
    db.close()
    case = w.cases["case_001"]
    assert row == (
        "approved",
        "margins fine",
        qa_store.current_user(),
        "sphere_crown",
        "7",
        "cpu",
        workspace.input_hash(case),
    )
    w.close()
    w2 = make_window(fake_workspace)
    assert w2.case_list.status_text("case_001") == "approved"
    assert w2.case_list.status_text("case_002") == "new"
    assert w2.current == "case_002"  # first pending case
    w2.select_case("case_001")
    wait_for(qtbot, lambda: w2._view_tag is None)
    assert w2.qa.history.count() == 1
    assert "approved" in w2.qa.history.item(0).text()
    assert "changed after the last decision" not in w2.qa.details.toPlainText()
    # an input edited after the decision is flagged: the record judged other inputs
    edit_input_and_reopen(qtbot, w2, fake_workspace, "case_001")
    assert "changed after the last decision" in w2.qa.details.toPlainText()


def edit_input_and_reopen(qtbot, w, workspace, name: str) -> None:
    """Append a byte to the case's first image, then reopen the workspace on that case."""
    img = w.cases[name].images[0]
    img.write_bytes(img.read_bytes() + b"\0")
    w.open_workspace(workspace)
    w.select_case(name)
    wait_for(qtbot, lambda: w._view_tag is None)


def test_approving_a_result_made_from_older_inputs_asks_first(
    make_window, fake_workspace, qtbot, monkeypatch, tmp_path
):
    """The run recorded the inputs it read; an image edited since makes Approve ask, the
    Details pane and the history say so, and the record and the report keep both hashes."""
    w = make_window(fake_workspace)
    run_and_wait(qtbot, w, "case_001")
    case = w.cases["case_001"]
    run_hash = case_run.read_run_info(case)["input_hash"]
    assert run_hash == workspace.input_hash(case)
    edit_input_and_reopen(qtbot, w, fake_workspace, "case_001")
    assert "changed after this result was generated" in w.qa.details.toPlainText()
    answers = [QtWidgets.QMessageBox.StandardButton.No, QtWidgets.QMessageBox.StandardButton.Yes]
    asked = []

    def warning(parent, title, text, *args):
        asked.append(text)
        return answers.pop(0)

    monkeypatch.setattr(QtWidgets.QMessageBox, "warning", staticmethod(warning))
    assert w.decisions.decide(Decision.APPROVED) is None
    assert w.store.history("case_001") == [] and w.case_list.status_text("case_001") != "approved"
    record = w.decisions.decide(Decision.APPROVED, "approved anyway")
    assert len(asked) == 2 and "case_001" in asked[0]
    assert (record.run_input_hash, record.input_hash) == (run_hash, workspace.input_hash(case))
    assert record.inputs_changed_since_run is True
    assert "inputs changed since the run" in w.qa.history.item(0).text()
    w.decisions.decide(Decision.REJECTED)  # only approving asks
    assert len(asked) == 2
    out = tmp_path / "qa.csv"
    w.decisions.export_report(out)
    (current,) = csv.DictReader(out.open(encoding="utf-8"))
    assert (current["decision"], current["inputs_changed_since_run"]) == ("rejected", "yes")
    history = qa_store.history_csv_path(out).open(encoding="utf-8")
    approved, rejected = csv.DictReader(history)
    assert (approved["run_input_hash"], approved["inputs_changed_since_run"]) == (run_hash, "yes")
    assert rejected["inputs_changed_since_run"] == "yes"


def _gated_run(monkeypatch, *, ignore_cancel: bool = False):
    """Make the window's run block inside its first progress report until ``release`` is set.

    With ``ignore_cancel`` the run then finishes and returns a result even if cancelled, as a
    worker that reacts late would: the window must still drop it.
    """
    entered, release = threading.Event(), threading.Event()
    real = case_run.run_case

    def gated(case, *a, cancel=None, progress=None, **kw):
        def hold(stage, frac):
            if not entered.is_set():
                entered.set()
                release.wait(30)
            if progress is not None:
                progress(stage, frac)

        token = None if ignore_cancel else cancel
        return real(case, *a, cancel=token, progress=hold, **kw)

    monkeypatch.setattr(case_run, "run_case", gated)
    return entered, release


def test_cancel_mid_run_leaves_case_as_it_was(make_window, fake_workspace, qtbot, monkeypatch):
    w = make_window(fake_workspace)
    assert run_and_wait(qtbot, w, "case_001") == "generated"
    case = w.cases["case_001"]
    before = {p.name: p.read_bytes() for p in case.output_dir.iterdir()}
    entered, release = _gated_run(monkeypatch)
    w.run_button.click()
    assert w.case_list.status_text("case_001") == "running"
    assert w.cancel_button.isEnabled()
    qtbot.waitUntil(entered.is_set, timeout=30000)
    with qtbot.waitSignal(w.run_finished) as blocker:
        w.cancel_button.click()
    release.set()
    assert blocker.args == ["case_001", "cancelled"]
    w.runner.shutdown()  # let the worker notice the cancel and stop
    qtbot.wait(50)
    after = {p.name: p.read_bytes() for p in case.output_dir.iterdir()}
    assert after == before
    assert w.case_list.status_text("case_001") == "generated"
    assert not w.cancel_button.isEnabled()


def test_cancel_before_first_output_leaves_new_case_untouched(
    make_window, fake_workspace, qtbot, monkeypatch
):
    w = make_window(fake_workspace)
    w.select_case("case_003")
    wait_for(qtbot, lambda: w._view_tag is None)
    entered, release = _gated_run(monkeypatch)
    w.run_button.click()
    qtbot.waitUntil(entered.is_set, timeout=30000)
    w.act_cancel.trigger()
    release.set()
    w.runner.shutdown()
    qtbot.wait(50)
    case = w.cases["case_003"]
    assert not case.output_dir.exists()
    assert w.case_list.status_text("case_003") == "new"
    assert w.viewer3d.actor("crown") is None


def test_switching_cases_mid_run_never_shows_old_result(
    make_window, fake_workspace, qtbot, monkeypatch
):
    w = make_window(fake_workspace)
    entered, release = _gated_run(monkeypatch, ignore_cancel=True)
    w.select_case("case_001")
    wait_for(qtbot, lambda: w._view_tag is None)
    w.run_button.click()
    qtbot.waitUntil(entered.is_set, timeout=30000)
    w.select_case("case_002")
    wait_for(qtbot, lambda: w._view_tag is None)
    assert w.case_list.status_text("case_001") == "new"  # the run was cancelled
    release.set()
    w.runner.shutdown()  # the late worker finishes and emits its (stale) result
    qtbot.wait(100)
    assert w.runner.dropped >= 1
    assert w.current == "case_002"
    assert w.viewer3d.actor("crown") is None
    scan_bounds = np.array(w.viewer3d.actor("scan").GetBounds()).reshape(3, 2).mean(axis=1)
    np.testing.assert_allclose(scan_bounds, sphere_centre(2), atol=0.5)
    assert all(e.labels is None for e in w.viewer2d.entries)
    assert w.case_list.status_text("case_001") != "running"


def test_broken_input_marks_error_and_window_keeps_working(make_window, fake_workspace, qtbot):
    w = make_window(fake_workspace)
    w.select_case("case_bad")
    wait_for(qtbot, lambda: w._view_tag is None)
    assert w.case_list.status_text("case_bad") == "error"
    assert "scan.ply" in w.case_list.tooltip("case_bad")
    assert "scan.ply" in w.qa.details.toPlainText()
    # running it anyway fails cleanly, is recorded, and survives a reopen
    assert run_and_wait(qtbot, w, "case_bad") == "error"
    assert w.case_list.status_text("case_bad") == "error"
    assert "scan.ply" in w.case_list.tooltip("case_bad")
    assert not (fake_workspace / "case_bad" / "output").exists()
    assert run_and_wait(qtbot, w, "case_003") == "generated"
    assert w.viewer3d.actor("crown") is not None
    w.open_workspace(fake_workspace)
    assert w.case_list.status_text("case_bad") == "error"
    assert w.case_list.status_text("case_003") == "generated"
    # the technician replaces the broken scan: the case loads and runs again
    good = fake_workspace / "case_001" / "scan.ply"
    (fake_workspace / "case_bad" / "scan.ply").write_bytes(good.read_bytes())
    assert run_and_wait(qtbot, w, "case_bad") == "generated"
    assert w.case_list.status_text("case_bad") == "generated"
    assert "Error" not in w.qa.details.toPlainText()


def press(qtbot, w, key) -> None:
    """A key press as the window system delivers it (so window shortcuts apply)."""
    qtbot.keyClick(w.windowHandle(), key)


def test_keyboard_review_flow(make_window, fake_workspace, qtbot):
    w = make_window(fake_workspace)
    run_and_wait(qtbot, w, "case_001")
    run_and_wait(qtbot, w, "case_002")
    w.select_case("case_001")
    wait_for(qtbot, lambda: w._view_tag is None)
    w.activateWindow()
    # typing in the note must not trigger the single-letter shortcuts
    w.qa.note.setFocus()
    for key in (QtCore.Qt.Key.Key_R, QtCore.Qt.Key.Key_A, QtCore.Qt.Key.Key_N):
        press(qtbot, w, key)
    assert w.qa.note.toPlainText().lower() == "ran"
    assert w.case_list.status_text("case_001") == "generated"
    assert w.current == "case_001"
    w.case_list.setFocus()
    press(qtbot, w, QtCore.Qt.Key.Key_R)
    assert w.case_list.status_text("case_001") == "rejected"
    assert w.store.latest_decisions()["case_001"].note.lower() == "ran"
    # N: next pending (case_002), W: needs rework, P: previous, Space: next pending
    press(qtbot, w, QtCore.Qt.Key.Key_N)
    assert w.current == "case_002"
    press(qtbot, w, QtCore.Qt.Key.Key_W)
    assert w.case_list.status_text("case_002") == "needs rework"
    press(qtbot, w, QtCore.Qt.Key.Key_P)
    assert w.current == "case_001"
    press(qtbot, w, QtCore.Qt.Key.Key_Space)
    assert w.current == "case_003"  # case_002 was judged, so the next pending one
    press(qtbot, w, QtCore.Qt.Key.Key_A)
    assert w.case_list.status_text("case_003") == "new"  # nothing to approve yet


def test_decision_refused_before_a_run(make_window, fake_workspace):
    w = make_window(fake_workspace)
    assert w.decisions.decide(Decision.APPROVED) is None
    assert w.store.history() == []
    assert w.case_list.status_text("case_001") == "new"
    # a note being written is kept per case while the technician looks elsewhere
    w.qa.note.setPlainText("check distal margin")
    w.select_case("case_002")
    assert w.qa.note.toPlainText() == ""
    w.select_case("case_001")
    assert w.qa.note.toPlainText() == "check distal margin"


def test_run_all_pending_and_export_report(make_window, fake_workspace, qtbot, tmp_path):
    w = make_window(fake_workspace)
    finished = []
    w.run_finished.connect(lambda c, o: finished.append((c, o)))
    w.run_all_button.click()
    assert "batch 0/4" in w.counts_label.text()
    wait_for(qtbot, lambda: len(finished) == 4, 180000)
    assert finished == [
        ("case_001", "generated"),
        ("case_002", "generated"),
        ("case_003", "generated"),
        ("case_bad", "error"),
    ]
    assert not w.runs.batch["active"]
    assert "3 generated" in w.counts_label.text()
    w.select_case("case_002")
    wait_for(qtbot, lambda: w._view_tag is None)
    assert w.viewer3d.actor("crown") is not None
    w.decisions.decide(Decision.APPROVED, "ok")
    w.select_case("case_003")
    w.decisions.decide(Decision.NEEDS_REWORK, "contact too tight")
    out = tmp_path / "qa.csv"
    assert w.decisions.export_report(out) == 2
    text = out.read_text(encoding="utf-8")
    assert "case_002,approved,ok" in text and "contact too tight" in text


def test_run_cancel_raises_between_batches(fake_models, fake_workspace):
    """The core run itself stops on a cancelled token and writes nothing (no Qt involved)."""
    from app.core.manifest import find_model
    from app.core.report import CancelToken
    from app.core.runtime import RuntimeConfig, SessionPool

    crown = find_model(None, "crown", fake_models)
    seg = find_model(None, "segmentation", fake_models)
    pool = SessionPool(RuntimeConfig(preference=("cpu",)))
    case = workspace.discover_cases(fake_workspace)[0]
    token = CancelToken()
    seen = []

    def progress(stage, frac):
        seen.append(stage)
        if stage.startswith("image"):
            token.cancel()

    with pytest.raises(Cancelled):
        case_run.run_case(case, crown, seg, pool, resolution=16, cancel=token, progress=progress)
    assert seen and not case.output_dir.exists()
    result = case_run.run_case(case, crown, seg, pool, resolution=16)
    assert {p.name for p in result.written} >= {"crown.stl", "image_1_mask.png", "run.json"}
    info = case_run.read_run_info(case)
    assert info["crown_model"] == "sphere_crown" and info["providers"] == ["cpu"]
    assert info["input_hash"] == workspace.input_hash(case)


def test_run_fails_when_an_input_changes_while_it_runs(fake_models, fake_workspace):
    """The hash in run.json must be of the inputs the run read: an image edited mid-run fails the
    run (naming the case) and nothing is written."""
    from app.core.errors import InputError
    from app.core.manifest import find_model
    from app.core.runtime import RuntimeConfig, SessionPool

    crown = find_model(None, "crown", fake_models)
    pool = SessionPool(RuntimeConfig(preference=("cpu",)))
    case = workspace.discover_cases(fake_workspace)[0]

    def touch_image(stage, frac):
        if stage.startswith("crown"):
            case.images[0].write_bytes(case.images[0].read_bytes() + b"\0")

    with pytest.raises(InputError, match="changed during the run") as err:
        case_run.run_case(case, crown, None, pool, resolution=16, progress=touch_image)
    assert str(case.folder) in str(err.value) and not case.output_dir.exists()


def test_next_case_is_prefetched_while_reviewing(make_window, fake_workspace, qtbot):
    w = make_window(fake_workspace)
    assert w.current == "case_001"
    wait_for(qtbot, lambda: "case_002" in w._cache, 30000)
    w.decisions.next_pending()
    assert w.current == "case_002"
    assert w._view_tag is None  # shown straight from the prefetched data, no load queued
    np.testing.assert_allclose(
        np.array(w.viewer3d.actor("scan").GetBounds()).reshape(3, 2).mean(axis=1),
        sphere_centre(2),
        atol=0.5,
    )
    assert len(w.viewer2d.entries) == 2
    # after a run the cached view is replaced, never served stale
    assert run_and_wait(qtbot, w, "case_002") == "generated"
    assert w._cache["case_002"].crown is not None


def test_closing_the_window_mid_run_stops_cleanly(make_window, fake_workspace, qtbot, monkeypatch):
    w = make_window(fake_workspace)
    entered, release = _gated_run(monkeypatch)
    w.run_button.click()
    qtbot.waitUntil(entered.is_set, timeout=30000)
    timer = threading.Timer(0.3, release.set)
    timer.start()
    w.close()  # cancels and waits for the worker, which resumes only after the close began
    timer.join()
    assert w.runner._pool.activeThreadCount() == 0
    assert not w.cases["case_001"].output_dir.exists()
    db = sqlite3.connect(fake_workspace / qa_store.DB_NAME)
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    db.close()


def test_settings_change_reloads_models_and_layout_modes(make_window, fake_workspace, tmp_path):
    import dataclasses

    w = make_window(fake_workspace)
    empty = tmp_path / "no_models"
    empty.mkdir()
    old_pool = w.pool
    w.apply_settings(dataclasses.replace(w.settings, models_dir=str(empty)))
    assert w.pool is not old_pool
    assert w.crown_model is None and "none" in w.models_label.text()
    assert not w.run_button.isEnabled()
    assert "no usable crown model" in w.models_label.toolTip()
    w.runs.run_current()  # refused with a message, no crash
    assert "No crown model" in w.message_label.text()
    # the setting was stored in this test's INI file, not the user's
    from app.ui.settings import load_settings

    assert load_settings(w.qsettings).models_dir == str(empty)
    w.set_layout("2d")
    assert w.viewer3d.isHidden() and not w.viewer2d.isHidden()
    w.set_layout("stacked")
    assert w.center.orientation() == QtCore.Qt.Orientation.Vertical
    assert not w.viewer3d.isHidden()


TILTED = (0.0, np.sqrt(0.5), np.sqrt(0.5))  # occlusal tipped 45° towards +y


def unit(v) -> np.ndarray:
    return np.asarray(v, float) / np.linalg.norm(v)


def assert_box_drawn(w, name: str) -> np.ndarray:
    """The drawn crop box is exactly the cube the next run of ``name`` will use."""
    expected = w.framing.frame_transform(name).corners_mm()
    np.testing.assert_allclose(w.viewer3d.frame_points("frame"), expected, atol=1e-6)
    return expected


def stored_frame(w, name: str):
    """The frame as the workspace database holds it (what the next run will read)."""
    return w.store.frames().get(name)


def locate_and_wait(qtbot, w, start: Callable[[], None], timeout_ms: int = 10000) -> str:
    with qtbot.waitSignal(w.frame_located, timeout=timeout_ms) as blocker:
        start()
    return blocker.args[1]


def framed_case(qtbot, w, fake_locate, occlusal=(0.0, 0.0, 1.0), mesial=(1.0, 0.0, 0.0)):
    """Give case_001 a proposed frame on its sphere's centre with the given directions."""
    fake_locate.proposal = (occlusal, mesial)
    assert (
        locate_and_wait(qtbot, w, lambda: w.framing.set_centre(tuple(sphere_centre(1))))
        == "proposed"
    )
    return stored_frame(w, "case_001")


def test_pick_proposes_a_turned_frame_and_the_run_uses_it(
    make_window, fake_workspace, qtbot, fake_locate
):
    w = make_window(fake_workspace)
    c = sphere_centre(1)
    t = w.framing.frame_transform("case_001")
    np.testing.assert_allclose(t.center, c, atol=1e-6)
    assert t.size_mm == pytest.approx(20.0)
    frame = np.array(w.viewer3d.actor("frame").GetBounds()).reshape(3, 2)
    np.testing.assert_allclose(frame[:, 0], c - 10, atol=1e-6)
    assert "model default" in w.qa.details.toPlainText()
    # the technician looks from above and clicks the middle of the scan: its top, 4 mm up
    fake_locate.proposal = (TILTED, (1.0, 0.0, 0.0))
    w.viewer3d.set_view("Occlusal")
    w.viewer3d.pick_action.setChecked(True)
    plot = w.viewer3d.plotter
    middle = QtCore.QPoint(plot.width() // 2, plot.height() // 2)
    with qtbot.waitSignal(w.frame_located, timeout=10000) as blocker:
        qtbot.mouseClick(plot, QtCore.Qt.MouseButton.LeftButton, pos=middle)
    assert blocker.args == ["case_001", "proposed"]
    (what, thread, point), *_ = fake_locate.calls
    assert what == "propose" and thread != threading.main_thread().ident
    np.testing.assert_allclose(point, c + np.array([0.0, 0.0, 4.0]), atol=0.5)
    wait_for(qtbot, lambda: not w.viewer3d.pick_action.isChecked(), 5000)
    proposed = stored_frame(w, "case_001")
    assert proposed == w.frames["case_001"]
    np.testing.assert_allclose(proposed.center, point, atol=1e-9)
    np.testing.assert_allclose(proposed.occlusal, TILTED, atol=1e-9)
    # shown at once: a turned box (not axis-aligned), the occlusal arrow, the mesial line
    corners = assert_box_drawn(w, "case_001")
    edge = corners[1] - corners[0]  # the cube's z edge runs along the occlusal direction
    np.testing.assert_allclose(unit(edge), TILTED, atol=1e-6)
    for actor in ("occlusal", "mesial", "centre"):
        assert w.viewer3d.actor(actor) is not None
    mesial_line = w.viewer3d.frame_points("mesial")
    np.testing.assert_allclose(unit(mesial_line[-1] - mesial_line[0]), (1, 0, 0), atol=1e-6)
    details = w.qa.details.toPlainText()
    assert "proposed from the picked point" in details
    assert "(+0.00, +0.71, +0.71)" in details and "(+1.00, +0.00, +0.00)" in details
    # the run reads the stored frame: the sphere crown sits on its centre, run.json names it
    assert run_and_wait(qtbot, w, "case_001") == "generated"
    bounds = np.array(w.viewer3d.crown_bounds()).reshape(3, 2)
    np.testing.assert_allclose(bounds.mean(axis=1), proposed.center, atol=0.6)
    assert case_run.read_run_info(w.cases["case_001"])["frame"] == proposed.to_dict()
    # remembered across a restart with where it came from, and can be cleared
    w.open_workspace(fake_workspace)
    w.select_case("case_001")
    wait_for(qtbot, lambda: w._view_tag is None)
    assert w.frames["case_001"] == proposed
    assert "proposed from the picked point" in w.qa.details.toPlainText()
    assert_box_drawn(w, "case_001")
    w.framing.clear_frame()
    assert "case_001" not in w.frames and stored_frame(w, "case_001") is None
    assert w.viewer3d.actor("centre") is None
    corners = assert_box_drawn(w, "case_001")
    np.testing.assert_allclose(unit(corners[1] - corners[0]), (0, 0, 1), atol=1e-9)


def test_a_late_proposal_never_lands_on_another_case(
    make_window, fake_workspace, qtbot, fake_locate
):
    w = make_window(fake_workspace)
    fake_locate.proposal = (TILTED, (1.0, 0.0, 0.0))
    fake_locate.gate = threading.Event()
    w.framing.set_centre(tuple(sphere_centre(1)))
    wait_for(qtbot, lambda: len(fake_locate.calls) == 1, 10000)
    w.select_case("case_002")
    wait_for(qtbot, lambda: w._view_tag is None)
    fake_locate.gate.set()
    w.runner.shutdown()  # the proposal finishes and reports; the window must drop it
    qtbot.wait(100)
    assert "case_002" not in w.frames and stored_frame(w, "case_002") is None
    assert w.frames["case_001"].occlusal is None  # only the picked centre was stored
    assert w.current == "case_002"
    corners = assert_box_drawn(w, "case_002")
    np.testing.assert_allclose(corners.mean(axis=0), sphere_centre(2), atol=1e-6)


def test_run_pressed_while_the_frame_is_proposed_waits_for_it(
    make_window, fake_workspace, qtbot, fake_locate
):
    w = make_window(fake_workspace)
    w.select_case("case_001")
    wait_for(qtbot, lambda: w._view_tag is None)
    fake_locate.proposal = (TILTED, (1.0, 0.0, 0.0))
    fake_locate.gate = threading.Event()
    w.framing.set_centre(tuple(sphere_centre(1)))
    wait_for(qtbot, lambda: len(fake_locate.calls) == 1, 10000)
    w.runs.run_current()
    assert w.runs.tag is None and "once the frame is proposed" in w.message_label.text()
    with qtbot.waitSignal(w.run_finished, timeout=120000) as blocker:
        fake_locate.gate.set()
    assert blocker.args[1] == "generated"
    info = case_run.read_run_info(w.cases["case_001"])
    assert info["frame"] == w.frames["case_001"].to_dict() and info["frame_source"] == "proposed"
    np.testing.assert_allclose(info["frame"]["occlusal"], unit(TILTED), atol=1e-6)


def test_frame_corrections_apply_at_once_from_the_keyboard(
    make_window, fake_workspace, qtbot, fake_locate
):
    w = make_window(fake_workspace)
    before = framed_case(qtbot, w, fake_locate)
    w.activateWindow()
    w.case_list.setFocus()
    ctrl, shift = (
        QtCore.Qt.KeyboardModifier.ControlModifier,
        QtCore.Qt.KeyboardModifier.ShiftModifier,
    )

    def key(k, mods=ctrl):
        qtbot.keyClick(w.windowHandle(), k, mods)

    key(QtCore.Qt.Key.Key_F, ctrl | shift)  # flip
    flipped = stored_frame(w, "case_001")
    np.testing.assert_allclose(flipped.occlusal, -np.array(before.occlusal), atol=1e-9)
    np.testing.assert_allclose(flipped.center, before.center)
    assert "flipped" in w.message_label.text()
    assert_box_drawn(w, "case_001")
    arrow_middle = w.viewer3d.frame_points("occlusal").mean(axis=0)
    np.testing.assert_allclose(unit(arrow_middle - flipped.center), flipped.occlusal, atol=0.05)
    m, b, o = w.framing.frame_axes("case_001")
    key(QtCore.Qt.Key.Key_Left)  # 90° counter-clockwise
    quarter = stored_frame(w, "case_001")
    np.testing.assert_allclose(quarter.mesial, b, atol=1e-9)
    np.testing.assert_allclose(quarter.occlusal, o, atol=1e-9)
    assert_box_drawn(w, "case_001")
    key(QtCore.Qt.Key.Key_Right)  # and back
    np.testing.assert_allclose(stored_frame(w, "case_001").mesial, m, atol=1e-9)
    key(QtCore.Qt.Key.Key_Right, ctrl | shift)  # 5° clockwise
    fine = stored_frame(w, "case_001")
    angle = np.degrees(np.arctan2(np.cross(m, fine.mesial) @ o, m @ fine.mesial))
    assert angle == pytest.approx(-5.0)
    assert "adjusted by hand" in w.qa.details.toPlainText()
    # align to view: occlusal := from the focal point towards the camera
    cam = w.viewer3d.plotter.camera
    cam.position = np.add(cam.focal_point, 50 * unit((1.0, -2.0, 2.0)))
    key(QtCore.Qt.Key.Key_V, ctrl | shift)
    aligned = stored_frame(w, "case_001")
    np.testing.assert_allclose(aligned.occlusal, unit((1.0, -2.0, 2.0)), atol=1e-9)
    np.testing.assert_allclose(aligned.occlusal, w.viewer3d.view_direction(), atol=1e-9)
    assert abs(np.dot(aligned.mesial, aligned.occlusal)) < 1e-9
    assert_box_drawn(w, "case_001")
    key(QtCore.Qt.Key.Key_Delete)  # clear
    assert stored_frame(w, "case_001") is None and "case_001" not in w.frames


def test_frame_shortcuts_are_unique_and_leave_review_keys_alone(make_window):
    w = make_window()
    owners: dict[str, list[str]] = {}
    for act in w.findChildren(QtGui.QAction):
        for seq in act.shortcuts():
            owners.setdefault(seq.toString(), []).append(act.text())
    clashes = {k: v for k, v in owners.items() if len(v) > 1}
    assert clashes == {}
    frame_menu = next(m for m in w.menuBar().findChildren(QtWidgets.QMenu) if "Fra" in m.title())
    texts = {a.text(): a.shortcut().toString() for a in frame_menu.actions() if a.text()}
    assert texts["F&lip occlusal direction"] == "Ctrl+Shift+F"
    assert texts["&Find preparation"] == "Ctrl+F"
    assert texts["&Clear case frame"] == "Ctrl+Del"
    assert sum("Turn box" in t for t in texts) == 4
    for review in ("A", "R", "W", "N", "P", "Space"):
        assert owners[review] and all("Fra" not in o for o in owners[review])


def test_named_views_follow_the_case_frame(make_window, fake_workspace, qtbot, fake_locate):
    w = make_window(fake_workspace)
    v = w.viewer3d
    v.set_view("Occlusal")
    np.testing.assert_allclose(v.view_direction(), (0, 0, 1), atol=1e-6)
    framed_case(qtbot, w, fake_locate, occlusal=TILTED, mesial=(1.0, 0.0, 0.0))
    m, b, o = w.framing.frame_axes("case_001")
    for name, expected in (
        ("Occlusal", o),
        ("Buccal", b),
        ("Lingual", -b),
        ("Mesial", m),
        ("Distal", -m),
    ):
        v.set_view(name)
        np.testing.assert_allclose(v.view_direction(), expected, atol=1e-6)
    v.set_view("Occlusal")
    np.testing.assert_allclose(v.view_direction(), TILTED, atol=1e-6)
    # another case without a frame: world axes again, also for the remembered view
    w.select_case("case_002")
    wait_for(qtbot, lambda: w._view_tag is None)
    np.testing.assert_allclose(v.view_direction(), (0, 0, 1), atol=1e-6)


def test_find_preparation_sets_the_frame_or_says_why_not(
    make_window, fake_workspace, qtbot, fake_locate
):
    from app.core.crown.frame import CaseFrame

    w = make_window(fake_workspace)
    before = framed_case(qtbot, w, fake_locate)
    fake_locate.error = "No preparation found: the scan shows no tooth stump"
    assert locate_and_wait(qtbot, w, w.framing.find_preparation) == "problem"
    assert "No preparation found" in w.message_label.text()
    assert "No preparation found" in w.qa.details.toPlainText()
    assert stored_frame(w, "case_001") == before == w.frames["case_001"]
    assert_box_drawn(w, "case_001")
    found = CaseFrame(tuple(sphere_centre(1) + 1.0), TILTED, (1.0, 0.0, 0.0))
    fake_locate.error, fake_locate.found = None, found
    assert locate_and_wait(qtbot, w, w.framing.find_preparation) == "found"
    assert stored_frame(w, "case_001") == found
    assert fake_locate.calls[-1][:1] == ("find",)
    assert "found automatically" in w.qa.details.toPlainText()
    assert_box_drawn(w, "case_001")


def test_case_filter_and_about(make_window, fake_workspace):
    w = make_window(fake_workspace)
    w.filter_edit.setText("error")
    visible = [n for n in w.case_list.names() if not w.case_list._items[n].isHidden()]
    assert visible == ["no_scan"]
    w.filter_edit.setText("case_00")
    visible = [n for n in w.case_list.names() if not w.case_list._items[n].isHidden()]
    assert visible == ["case_001", "case_002", "case_003"]
    w.filter_edit.clear()
    assert not any(w.case_list._items[n].isHidden() for n in w.case_list.names())
    about = w.models.about_text()
    assert "ONNX Runtime" in about and "in use: CPU" in about
    assert "sphere_crown.json" in about and "crownscan.ini" in about


def test_refresh_picks_up_new_cases_and_other_decisions(make_window, fake_workspace, qtbot):
    import shutil

    w = make_window(fake_workspace)
    run_and_wait(qtbot, w, "case_002")
    shutil.copytree(fake_workspace / "case_003", fake_workspace / "case_004")
    with qa_store.QaStore(fake_workspace) as other:  # another technician's window
        other.record_decision(
            qa_store.QaRecord("case_002", Decision.REJECTED, note="by a colleague")
        )
    w.refresh_workspace()
    assert "case_004" in w.case_list.names()
    assert w.case_list.status_text("case_002") == "rejected"
    assert w.current == "case_002"


def test_the_real_locator_on_a_scan_without_preparation_says_why(
    make_window, fake_workspace, qtbot
):
    """The real ``app.core.crown.locate`` in the window: a ball is no jaw, so both the search
    and a pick end in the module's own message, never an internal error or a changed frame."""
    w = make_window(fake_workspace)
    assert locate_and_wait(qtbot, w, w.framing.find_preparation, 60000) == "problem"
    text = w.message_label.text()
    assert "could not find the preparation" in text and "internal error" not in text
    assert "case_001" not in w.frames and stored_frame(w, "case_001") is None
    picked = tuple(sphere_centre(1) + [0.0, 0.0, 4.0])
    assert locate_and_wait(qtbot, w, lambda: w.framing.set_centre(picked), 60000) == "problem"
    assert "internal error" not in w.message_label.text()
    assert stored_frame(w, "case_001") == w.frames["case_001"]
    np.testing.assert_allclose(w.frames["case_001"].center, picked)


def test_crown_check_warnings_show_on_the_case(
    make_window, fake_workspace, qtbot, tmp_path, monkeypatch
):
    """The sphere crown is 12 mm across; a manifest that allows at most 10 mm makes every run
    of it implausible, and the window says so in the status bar and on the case. What the
    model lint finds (here made up) is kept with the run and shown on the case too."""
    import json

    from app.core.crown import pipeline

    lint = "node 'gs': align_corners=0; the manifest's sampling says true"
    monkeypatch.setattr(pipeline, "lint_model", lambda spec: [lint])

    from tests.gui_fixtures import build_colour_model, build_sphere_crown_model, write_manifest

    models = tmp_path / "strict_models"
    models.mkdir()
    manifest = build_sphere_crown_model(models)
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["checks"] = {"extent_max_mm": [10, 10, 10], "max_base_gap_mm": 100}
    manifest.write_text(json.dumps(data), encoding="utf-8")
    build_colour_model(models / "colour_seg.onnx")
    write_manifest(models, "colour_seg.onnx")
    w = make_window(fake_workspace, models=models)
    assert run_and_wait(qtbot, w, "case_001") == "generated"
    warnings = case_run.read_run_info(w.cases["case_001"])["warnings"]
    assert len(warnings) == 3 and all("–10 mm)" in x for x in warnings)
    assert "3 crown check(s) to look at" in w.message_label.text()
    details = w.qa.details.toPlainText()
    assert details.count("Check the crown:") == 3 and "mesio-distal" in details
    assert case_run.read_run_info(w.cases["case_001"])["model_lint"] == [lint]
    assert f"The model does not match its manifest: {lint}" in details


def test_a_model_that_fails_to_load_is_reported_and_runs_fail_cleanly(
    make_window, fake_workspace, fake_models, qtbot, tmp_path
):
    """A crown manifest whose ONNX file is garbage is skipped at load: the error list, About
    and the models label name it, Run is off and says why, nothing is written. With no crown
    manifest at all, the same."""
    import shutil

    models = shutil.copytree(fake_models, tmp_path / "models")
    (models / "sphere_crown.onnx").write_bytes(b"\x00 not an onnx model")
    for named in ("sphere_crown.onnx", None):
        if named is None:
            (models / "sphere_crown.json").unlink()
        w = make_window(fake_workspace, models=models)
        assert w.crown_model is None and w.model_errors
        if named is not None:
            assert any(named in e for e in w.model_errors) and named in w.models.about_text()
        assert "crown" in w.models_label.toolTip()
        assert not w.run_button.isEnabled() and not w.run_all_button.isEnabled()
        w.runs.run_current()
        assert w.message_label.text().startswith("No crown model")
        assert not w.cases["case_001"].output_dir.exists()
        w.close()


def test_a_case_view_that_fails_to_load_marks_the_case_and_the_next_one_shows(
    make_window, fake_workspace, qtbot, monkeypatch
):
    """An unexpected error while loading a case's view (not a bad file, which the view
    reports itself): the case shows the error, and other cases still load and show."""
    from app.ui import main_window

    real = main_window.load_case_view

    def failing(case, cancel=None):
        if case.name == "case_002":
            raise RuntimeError("view builder exploded")
        return real(case, cancel)

    monkeypatch.setattr(main_window, "load_case_view", failing)
    w = make_window(fake_workspace)
    w.select_case("case_002")
    wait_for(qtbot, lambda: w._view_tag is None and w.current == "case_002")
    assert w.case_list.status_text("case_002") == "error"
    assert "view builder exploded" in w.case_list.tooltip("case_002")
    assert "view builder exploded" in w.viewer2d.info.text()
    with qtbot.waitSignal(w.view_shown, timeout=60000) as shown:
        w.select_case("case_003")
    assert shown.args == ["case_003"] and w.viewer3d.actor("scan") is not None
    assert w.case_list.status_text("case_003") == "new"


def test_cancel_during_run_all_pending_stops_the_batch(
    make_window, fake_workspace, qtbot, monkeypatch
):
    """Cancel while the first queued case runs: it stays as it was, the queue is dropped, the
    other cases are never run, and the window is idle again."""
    w = make_window(fake_workspace)
    entered, release = _gated_run(monkeypatch)
    finished = []
    w.run_finished.connect(lambda c, o: finished.append((c, o)))
    w.run_all_button.click()
    qtbot.waitUntil(entered.is_set, timeout=30000)
    assert w.runs.batch["active"] and w.case_list.status_text("case_001") == "running"
    w.cancel_button.click()
    release.set()
    w.runner.shutdown()
    qtbot.wait(100)
    assert finished == [("case_001", "cancelled")]
    assert not w.runs.batch["active"] and w.runs.tag is None
    for name in ("case_001", "case_002", "case_003"):
        assert w.case_list.status_text(name) == "new"
        assert not w.cases[name].output_dir.exists()
    assert "batch" not in w.counts_label.text()
    assert w.run_all_button.isEnabled() and not w.cancel_button.isEnabled()
    # a single run afterwards runs that case only: the cancelled batch does not resume
    assert run_and_wait(qtbot, w, "case_003") == "generated"
    qtbot.wait(200)
    assert finished[1:] == [("case_003", "generated")] and w.runs.tag is None
    assert w.case_list.status_text("case_002") == "new"


def test_refresh_during_a_run_waits_and_the_run_completes(
    make_window, fake_workspace, qtbot, monkeypatch
):
    """Refresh while a case runs: the workspace is not re-read under the run (which would drop
    it), the run finishes and is shown; a refresh after it picks up what changed."""
    import shutil

    w = make_window(fake_workspace)
    entered, release = _gated_run(monkeypatch)
    w.select_case("case_001")
    wait_for(qtbot, lambda: w._view_tag is None)
    w.run_button.click()
    qtbot.waitUntil(entered.is_set, timeout=30000)
    shutil.copytree(fake_workspace / "case_003", fake_workspace / "case_004")
    w.refresh_workspace()
    assert "after the run" in w.message_label.text()
    assert "case_004" not in w.case_list.names()
    with qtbot.waitSignal(w.run_finished, timeout=120000) as blocker:
        release.set()
    assert blocker.args == ["case_001", "generated"]
    assert w.case_list.status_text("case_001") == "generated"
    assert w.viewer3d.actor("crown") is not None
    w.refresh_workspace()
    assert "case_004" in w.case_list.names() and w.current == "case_001"
