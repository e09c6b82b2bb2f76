"""Starting the app: a GPU provider that cannot start is named, and a bug in a slot is logged
and shown without taking the window down."""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from gui_fixtures import *  # noqa: F403
from gui_fixtures import wait_for
from PySide6 import QtCore, QtWidgets

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _drop_log_handler():
    """Starting the app points the root logger at a test's log file: undo that afterwards."""
    yield
    from app.core.logfile import stop_logging

    stop_logging()


def _loads(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def test_app_started_with_cuda_and_no_cuda_libraries_names_the_missing(tmp_path, fake_workspace):
    from app.core.gpu_libs import missing_gpu_library
    from app.core.runtime import available_providers

    if "cuda" not in available_providers():
        pytest.skip("this ONNX Runtime build has no CUDA provider (CPU-only package)")
    if missing_gpu_library("cuda") is None:
        pytest.skip("the CUDA libraries load on this machine: nothing is missing")
    ini = tmp_path / "settings.ini"
    store = QtCore.QSettings(str(ini), QtCore.QSettings.Format.IniFormat)
    store.setValue("providers", ["cuda", "cpu"])
    store.sync()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    proc = subprocess.run(
        [sys.executable, "-m", "app", "--workspace", str(fake_workspace),
         "--settings", str(ini), "--quit"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    status = [line for line in proc.stdout.splitlines() if line.startswith("Provider:")]
    assert len(status) == 1 and status[0].startswith("Provider: CPU; status: Running on CPU: ")
    named = re.search(r"cuda: could not be initialised: (\S+) not found", status[0])
    assert named, status[0]
    assert not _loads(named[1]), f"{named[1]} is named missing but loads"
    log = tmp_path / "state" / "Crownscan" / "log" / "crownscan.log"
    assert f"{named[1]} not found" in log.read_text(encoding="utf-8")


@pytest.mark.qt_no_exception_capture
def test_bug_in_a_slot_is_logged_shown_and_the_window_goes_on(
    make_window, fake_workspace, qtbot, tmp_path, monkeypatch
):
    from app.core.logfile import setup_logging
    from app.ui.launch import unexpected_error_hook

    log = setup_logging(tmp_path / "logs")
    w = make_window()
    monkeypatch.setattr(sys, "excepthook", unexpected_error_hook(w, log))
    button = QtWidgets.QPushButton("buggy", w)

    def buggy() -> None:
        raise ZeroDivisionError("boom in a slot")

    button.clicked.connect(buggy)
    button.click()
    box = w._unexpected_error_box
    wait_for(qtbot, box.isVisible)
    assert str(log) in box.text() and "ZeroDivisionError: boom in a slot" in box.text()
    assert box.windowModality() == QtCore.Qt.WindowModality.NonModal
    assert str(log) in w.message_label.text()
    text = log.read_text(encoding="utf-8")
    assert "Traceback" in text and "ZeroDivisionError: boom in a slot" in text
    assert "in buggy" in text

    button.click()
    assert w._unexpected_error_box is box
    assert log.read_text(encoding="utf-8").count("ZeroDivisionError: boom in a slot") == 2

    w.open_workspace(fake_workspace)
    wait_for(qtbot, lambda: w._view_tag is None)
    assert w.isVisible() and len(w.cases) > 0
    box.close()
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):  # set by PyErr_Print: the frames would keep the window alive
            setattr(sys, name, None)


def test_start_after_upgrade_opens_the_moved_sample_workspace(qapp, monkeypatch, tmp_path):
    """Settings of an older release still point at the doubled Crownscan/Crownscan folder: the
    app must move that workspace (with what the technician did there) and open the new one."""
    from app.core import paths
    from app.ui.launch import main

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    old = paths.legacy_user_data_dir() / "sample-workspace"
    old.mkdir(parents=True)
    (old / "technician-notes.txt").write_text("kept")
    ini = tmp_path / "settings.ini"
    store = QtCore.QSettings(str(ini), QtCore.QSettings.Format.IniFormat)
    store.setValue("last_workspace", str(old))
    store.setValue("providers", ["cpu"])
    store.sync()
    del store
    assert main(["--settings", str(ini), "--quit"]) == 0
    new = paths.user_data_dir() / "sample-workspace"
    assert (new / "technician-notes.txt").read_text() == "kept"
    assert not old.exists()
    reread = QtCore.QSettings(str(ini), QtCore.QSettings.Format.IniFormat)
    assert reread.value("last_workspace") == str(new.resolve())
