"""Work that would stall the window happens off the GUI thread, and a window closed during a
run says "stopping…" and goes without waiting for the model to finish its step. (States and
threads are asserted, not times: the stalls are measured by benchmarks/gui_latency.py.)"""

from __future__ import annotations

import sqlite3
import sys
import threading

import pytest
from gui_fixtures import *  # noqa: F403
from gui_fixtures import wait_for
from PySide6 import QtCore

from app.core import case_run, qa_store

pytestmark = pytest.mark.gui


class _HideSpy(QtCore.QObject):
    """Calls ``on_hide()`` when the watched window is hidden (that is, when it closes)."""

    def __init__(self, window, on_hide) -> None:
        super().__init__()
        self.on_hide = on_hide
        window.installEventFilter(self)

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 (Qt name)
        if event.type() == QtCore.QEvent.Type.Hide and not event.spontaneous():
            self.on_hide()
        return False


def test_quit_during_a_run_says_stopping_and_closes_before_the_model_step_ends(
    make_window, fake_workspace, qtbot, monkeypatch
):
    w = make_window(fake_workspace)
    in_step, step_may_end = threading.Event(), threading.Event()
    real = case_run.run_case

    def long_model_step(case, *a, cancel=None, **kw):
        in_step.set()
        step_may_end.wait(60)  # inside a model call: the cancel is seen only after it
        return real(case, *a, cancel=cancel, **kw)

    monkeypatch.setattr(case_run, "run_case", long_model_step)
    at_hide: list[tuple[str, str, bool, int]] = []

    def hidden() -> None:
        at_hide.append(
            (w.message_label.text(), w.progress.format(), step_may_end.is_set(), w.runner.running())
        )
        step_may_end.set()

    spy = _HideSpy(w, hidden)
    w.run_button.click()
    wait_for(qtbot, in_step.is_set, 30000)
    w.close()
    assert at_hide, "the window was not hidden"
    message, progress_text, step_over, running = at_hide[0]
    assert message == "stopping…" and progress_text == "stopping…"
    assert not step_over and running == 1  # gone while the worker was still in its step
    assert w.runner.running() == 0  # ... and the worker was waited for after that
    assert not w.cases["case_001"].output_dir.exists()
    db = sqlite3.connect(fake_workspace / qa_store.DB_NAME)
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    db.close()
    del spy


def test_meshes_become_polydata_in_workers_and_arrive_ready(
    make_window, fake_workspace, qtbot, monkeypatch
):
    from app.ui import case_view

    threads: list[int] = []
    real = case_view.mesh_to_polydata

    def recording(mesh):
        threads.append(threading.get_ident())
        return real(mesh)

    monkeypatch.setattr(case_view, "mesh_to_polydata", recording)
    w = make_window(fake_workspace)
    with qtbot.waitSignal(w.run_finished, timeout=120000) as blocker:
        w.run_button.click()
    assert blocker.args == ["case_001", "generated"]
    w.select_case("case_002")
    wait_for(qtbot, lambda: w.shown is not None and w.shown.case == "case_002")
    assert len(threads) >= 3  # two scans loaded, one crown made by the run
    assert threading.main_thread().ident not in threads
    shown = w.viewer3d.actor("scan").GetMapper().GetInput()
    assert shown.GetPointData().GetNormals() is not None  # the GUI thread only swaps actors


def test_the_overlay_is_composed_off_the_gui_thread(qapp, qtbot, monkeypatch):
    import numpy as np

    from app.ui import viewer2d

    threads: list[int] = []
    real = viewer2d.compose

    def recording(*args):
        threads.append(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(viewer2d, "compose", recording)
    v = viewer2d.Viewer2D()
    v.resize(500, 400)
    v.show()
    rgb = np.full((300, 400, 3), 90, np.uint8)
    labels = np.zeros((300, 400), np.uint8)
    labels[100:200, 100:300] = 1
    v.set_classes(["background", "tooth"], [(0, 0, 0), (240, 230, 140)])
    v.set_images([viewer2d.ImageEntry(viewer2d.Path("a.png"), rgb, labels)])
    assert v.view.pixmap_item.pixmap().width() == 400  # the photo shows before its overlay
    v.opacity.setValue(100)
    np.testing.assert_array_equal(v.composite[150, 150], (240, 230, 140))
    np.testing.assert_array_equal(v.composite[50, 50], (90, 90, 90))
    wait_for(qtbot, lambda: "tooth: " in v.info.text())
    assert threads and threading.main_thread().ident not in threads
    v.shutdown()
    v.deleteLater()


def test_progress_reaches_the_window_throttled_with_the_latest_report(qapp, qtbot):
    from app.ui.workers import Tag, TaskRunner

    runner = TaskRunner(threads=1)
    seen: list[tuple[str, float]] = []
    runner.progress.connect(lambda tag, stage, fraction: seen.append((stage, fraction)))
    reported, finish = threading.Event(), threading.Event()

    def chatty(token, progress):
        for k in range(1, 31):
            progress(f"step {k}", k / 30)
        reported.set()
        finish.wait(30)
        return "done"

    runner.submit(Tag("run", "a", 1), chatty)
    wait_for(qtbot, reported.is_set, 30000)
    wait_for(qtbot, lambda: bool(seen) and seen[-1] == ("step 30", 1.0), 30000)
    assert len(seen) < 30  # coalesced: the window repaints a few times, not per report
    finish.set()
    assert runner.shutdown(10000)
    runner.deleteLater()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice values are Linux's")
def test_workers_and_the_threads_they_start_give_way_to_the_gui_thread(qapp, qtbot):
    """On two cores a run's threads and software OpenGL share the CPUs: workers are niced, and
    so are threads they start (ONNX Runtime's pool), while the GUI thread keeps its priority."""
    import os

    from app.ui.workers import BACKGROUND_NICE, Tag, TaskRunner

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    gui = nice()
    runner = TaskRunner(threads=1)
    seen: list[tuple[int, int]] = []

    def task(token, progress):
        inner: list[int] = []
        t = threading.Thread(target=lambda: inner.append(nice()))
        t.start()
        t.join()
        return nice(), inner[0]

    runner.done.connect(lambda tag, result: seen.append(result))
    runner.submit(Tag("run", "a", 1), task)
    wait_for(qtbot, lambda: bool(seen), 30000)
    assert seen[0] == (min(19, gui + BACKGROUND_NICE),) * 2
    assert nice() == gui
    assert runner.shutdown(10000)
    runner.deleteLater()
