"""Panels on their own, settings isolation, the leak check itself, and the smoke command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gui_fixtures import *  # noqa: F403
from gui_fixtures import _snapshot, leaked_objects, make_workspace, wait_for
from PIL import Image
from PySide6 import QtCore, QtWidgets

pytestmark = pytest.mark.gui
ROOT = Path(__file__).resolve().parents[1]


def test_leak_check_catches_vtk_objects_widgets_and_plotters(qapp):
    import pyvista as pv
    from pyvistaqt import QtInteractor

    before = _snapshot()
    kept = [pv.Sphere(), QtWidgets.QLabel("left open")]
    plotter = QtInteractor()
    problems = leaked_objects(before, _snapshot())
    text = "; ".join(problems)
    assert "VTK objects leaked" in text and "PolyData" in text
    assert "QLabel" in text
    assert "plotters not closed" in text
    plotter.close()
    plotter.deleteLater()
    kept[1].deleteLater()
    del kept, plotter
    assert leaked_objects(before, _snapshot()) == []


def test_settings_round_trip_in_temp_ini_not_user_settings(isolated_qsettings, qapp):
    from app.ui.settings import AppSettings, load_settings, qsettings, save_settings

    s = AppSettings(resolution=48, providers=("cpu",), roi="off", overlay_mode="contour")
    s.add_recent("/some/where")
    save_settings(s)
    written = list(isolated_qsettings.rglob("*.ini"))
    assert written and "Crownscan" in str(written[0])
    got = load_settings(qsettings())
    assert (got.resolution, got.providers, got.roi, got.overlay_mode) == (
        48,
        ("cpu",),
        "off",
        "contour",
    )
    assert got.recent_workspaces == [str(Path("/some/where").resolve())]
    assert got.roi_flag() is False and got.resolution_or_none() == 48
    assert got.runtime_config().preference == ("cpu",)
    # malformed values fall back to defaults instead of breaking the window
    qs = qsettings()
    qs.setValue("resolution", "lots")
    qs.setValue("providers", ["warp-drive"])
    qs.sync()
    bad = load_settings(qsettings())
    assert bad.resolution == 48 or bad.resolution == AppSettings().resolution
    assert bad.providers == AppSettings().providers


def test_settings_dialog_edits_a_copy(qapp, qtbot):
    from app.ui.settings import AppSettings, SettingsDialog

    s = AppSettings()
    dlg = SettingsDialog(s)
    qtbot.addWidget(dlg)
    dlg.resolution_spin.setValue(64)
    dlg.provider_combo.setCurrentText("CPU only")
    dlg.roi_combo.setCurrentText("on")
    out = dlg.result_settings()
    assert (out.resolution, out.providers, out.roi) == (64, ("cpu",), "on")
    assert s.resolution == 0 and s.providers == ("tensorrt", "cuda", "cpu")


def test_settings_choose_the_triton_server(isolated_qsettings, qapp, qtbot, monkeypatch):
    from app.core.remote import ENV_VAR, RemotePool
    from app.core.runtime import SessionPool
    from app.ui.settings import AppSettings, SettingsDialog, load_settings, qsettings, save_settings

    monkeypatch.delenv(ENV_VAR, raising=False)
    save_settings(AppSettings(server="gpu-server", server_fallback=True, server_timeout_s=5))
    got = load_settings(qsettings())
    pool = got.session_pool()
    assert isinstance(pool, RemotePool)
    assert (pool.server.url, pool.server.fallback, pool.server.timeout_s) == (
        "grpc://gpu-server:8001", True, 5.0
    )  # fmt: skip
    qs = qsettings()
    qs.setValue("server", "ftp://nowhere")
    qs.sync()
    assert load_settings(qsettings()).server == ""
    monkeypatch.setenv(ENV_VAR, "http://lab-gpu")
    assert AppSettings().session_pool().server.url == "http://lab-gpu:8000"
    monkeypatch.setenv(ENV_VAR, "ftp://lab-gpu")
    assert type(AppSettings().session_pool()) is SessionPool

    dlg = SettingsDialog(AppSettings())
    qtbot.addWidget(dlg)
    dlg.server_edit.setText("grpcs://gpu-server:9001")
    dlg.fallback_check.setChecked(True)
    out = dlg.result_settings()
    assert (out.server, out.server_fallback) == ("grpcs://gpu-server:9001", True)


def test_viewer2d_zoom_fit_and_roi(qapp, qtbot):
    from app.ui.viewer2d import ImageEntry, Viewer2D

    v = Viewer2D()
    qtbot.addWidget(v)
    v.resize(600, 500)
    v.show()
    qtbot.waitExposed(v)
    rgb = np.full((300, 400, 3), 90, np.uint8)
    labels = np.zeros((300, 400), np.uint8)
    labels[100:200, 100:300] = 1
    v.set_classes(["background", "tooth"], [(0, 0, 0), (240, 230, 140)])
    v.set_images([ImageEntry(Path("a.png"), rgb, labels, roi_box=(80, 60, 320, 240))])
    fit = v.view.scale_factor()
    assert 0 < fit < 2
    v.view.one_to_one()
    assert v.view.scale_factor() == pytest.approx(1.0)
    v.view.zoom_by(2.0)
    assert v.view.scale_factor() == pytest.approx(2.0)
    v.view.fit()
    assert v.view.scale_factor() == pytest.approx(fit)
    # wheel zoom keeps the image point under the cursor in place
    from PySide6 import QtGui

    vp = v.view.viewport()
    at = QtCore.QPoint(vp.width() // 3, vp.height() // 3)
    before_pt = v.view.mapToScene(at)
    wheel = QtGui.QWheelEvent(
        QtCore.QPointF(at),
        QtCore.QPointF(vp.mapToGlobal(at)),
        QtCore.QPoint(0, 0),
        QtCore.QPoint(0, 480),
        QtCore.Qt.MouseButton.NoButton,
        QtCore.Qt.KeyboardModifier.NoModifier,
        QtCore.Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QtWidgets.QApplication.sendEvent(vp, wheel)
    assert v.view.scale_factor() == pytest.approx(fit * 1.25**4)
    after_pt = v.view.mapToScene(at)
    assert abs(after_pt.x() - before_pt.x()) < 2 and abs(after_pt.y() - before_pt.y()) < 2
    v.view.fit()
    assert v.view.roi_item.isVisible()
    assert v.view.roi_item.rect().getCoords() == (80.0, 60.0, 320.0, 240.0)
    assert "ROI" in v.info.text()
    v.opacity.setValue(0)
    np.testing.assert_array_equal(v.composite, rgb)
    v.opacity.setValue(100)
    np.testing.assert_array_equal(v.composite[150, 150], (240, 230, 140))


def test_viewer3d_views_toggles_and_opacity(make_window, fake_workspace, qtbot):
    w = make_window(fake_workspace)
    v = w.viewer3d
    scan = v.actor("scan")
    v.set_view("Occlusal")
    cam = v.plotter.camera
    d = np.subtract(cam.position, cam.focal_point)
    assert d[2] > 0 and abs(d[0]) < 1e-6 * np.linalg.norm(d) + 1e-6
    v.set_view("Mesial")
    d = np.subtract(cam.position, cam.focal_point)
    assert d[0] < 0
    v.set_view("Buccal")
    assert np.subtract(cam.position, cam.focal_point)[1] > 0
    v.scan_check.setChecked(False)
    assert not scan.GetVisibility()
    v.scan_check.setChecked(True)
    v.scan_opacity.setValue(40)
    assert scan.GetProperty().GetOpacity() == pytest.approx(0.4)
    v.smooth_check.setChecked(False)
    assert scan.GetProperty().GetInterpolationAsString() == "Flat"
    img = v.render_image()
    assert img.std() > 5  # something drawn, not a flat (or black) frame
    shot = fake_workspace.parent / "view.png"
    v.save_screenshot(shot)
    assert Image.open(shot).size[0] > 100


def test_frame_overlay_is_a_turned_box_with_its_axes(make_window, fake_workspace):
    from scipy.spatial.transform import Rotation

    from app.ui.viewer3d import box_outline, frame_views

    w = make_window(fake_workspace)
    v = w.viewer3d
    rot = Rotation.from_euler("xyz", [30, -20, 50], degrees=True).as_matrix()
    centre, size = np.array([3.0, -4.0, 5.0]), 12.0
    unit_corners = np.array(
        [[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)]
    )
    corners = size * unit_corners @ rot + centre
    mesial, occlusal = rot[0], rot[2]
    v.set_frame(corners, occlusal=occlusal, mesial=mesial, marked=True)
    np.testing.assert_allclose(v.frame_points("frame"), corners)
    outline = box_outline(corners)
    ends = outline.lines.reshape(-1, 3)[:, 1:]
    lengths = np.linalg.norm(corners[ends[:, 0]] - corners[ends[:, 1]], axis=1)
    assert len(ends) == 12 and np.allclose(lengths, size)
    line = v.frame_points("mesial")
    np.testing.assert_allclose(
        line[[0, -1]], [centre - mesial * size / 2, centre + mesial * size / 2]
    )
    arrow = v.frame_points("occlusal") - centre
    reach = arrow @ occlusal
    assert reach.max() == pytest.approx(0.75 * size, rel=1e-3) and reach.min() > -0.1
    off_axis = np.linalg.norm(arrow - np.outer(reach, occlusal), axis=1)
    assert off_axis.max() < 0.1 * size
    np.testing.assert_allclose(v.frame_points("centre").mean(axis=0), centre, atol=0.05)
    # the crop-box toggle hides and shows the whole overlay
    v.frame_check.setChecked(False)
    assert not any(v.actor(n).GetVisibility() for n in ("frame", "occlusal", "mesial", "centre"))
    v.frame_check.setChecked(True)
    assert all(v.actor(n).GetVisibility() for n in ("frame", "occlusal", "mesial", "centre"))
    # views follow given axes (right-handed rows m, b, o), world axes without
    views = frame_views(rot)
    assert set(views) == {"Occlusal", "Buccal", "Lingual", "Mesial", "Distal"}
    v.set_view_axes(rot)
    v.set_view("Mesial")
    np.testing.assert_allclose(v.view_direction(), mesial, atol=1e-6)
    v.set_view_axes(None)
    v.set_view("Mesial")
    np.testing.assert_allclose(v.view_direction(), (-1, 0, 0), atol=1e-6)
    v.set_frame(None)
    assert all(v.actor(n) is None for n in ("frame", "occlusal", "mesial", "centre"))


def test_window_screenshot_has_the_3d_view(make_window, fake_workspace, qtbot):
    w = make_window(fake_workspace)
    img = w.grab_window()
    plot = w.viewer3d.plotter
    pos = plot.mapTo(w, QtCore.QPoint(0, 0))
    region = img.copy(pos.x(), pos.y(), plot.width(), plot.height())
    ptr = region.constBits()
    arr = (
        np.frombuffer(ptr, np.uint8, region.sizeInBytes())
        .reshape(region.height(), region.bytesPerLine())[:, : 3 * region.width()]
        .reshape(region.height(), region.width(), 3)
    )
    assert arr.mean() > 30  # not black
    assert arr.std() > 10  # the scan is drawn on the gradient


def _smoke(args: list[str], tmp_path: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args, "--settings", str(tmp_path / "smoke.ini")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_smoke_command_runs_a_case_and_writes_a_screenshot(tmp_path, fake_models):
    ws = make_workspace(tmp_path, broken=False, n=1)
    png = tmp_path / "shot.png"
    proc = _smoke(
        [
            "--workspace", str(ws), "--case", "case_001", "--run", "--screenshot", str(png),
            "--quit", "--models", str(fake_models), "--resolution", "20", "--size", "1200x760",
        ],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (ws / "case_001" / "output" / "crown.stl").is_file()
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[:2] == (760, 1200)
    middle = img[150:600, 300:700]
    assert middle.mean() > 30 and middle.std() > 10


def test_smoke_command_errors_print_one_line_and_exit_non_zero(tmp_path, fake_models):
    proc = _smoke(["--workspace", str(tmp_path / "missing"), "--quit"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "missing" in proc.stderr
    ws = make_workspace(tmp_path, broken=True, n=1)
    proc = _smoke(["--workspace", str(ws), "--case", "nope", "--quit"], tmp_path)
    assert proc.returncode == 2 and "nope" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0
    proc = _smoke(
        [
            "--workspace", str(ws), "--case", "case_bad", "--run", "--quit",
            "--models", str(fake_models),
        ],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 4
    assert proc.stderr.strip().startswith("error:") and "scan.ply" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_sample_workspace_with_bundled_models(make_window, tmp_path, qtbot):
    """The shipped sample workspace and demo models, end to end (on a copy: never write into
    the repository)."""
    import shutil

    from app.core.crown.meshio import load_mesh
    from app.core.paths import bundled_models_dir, sample_workspace_dir

    samples = sample_workspace_dir()
    models = bundled_models_dir()
    assert list(samples.glob("*/scan.*")), f"no sample cases in {samples}"
    assert len(list(models.glob("*.onnx"))) >= 2, f"demo models missing from {models}"
    ws = shutil.copytree(samples, tmp_path / "samples")
    w = make_window(ws, models=models, resolution=32)
    name = w.order[0]
    w.select_case(name)
    wait_for(qtbot, lambda: w._view_tag is None)
    with qtbot.waitSignal(w.run_finished, timeout=240000) as blocker:
        w.runs.run_current()
    assert blocker.args == [name, "generated"], w.error_of(name)
    case = w.cases[name]
    crown = load_mesh(case.crown_path)
    bounds = np.array(w.viewer3d.crown_bounds()).reshape(3, 2)
    np.testing.assert_allclose(bounds[:, 0], crown.vertices.min(axis=0), atol=1e-3)
    np.testing.assert_allclose(bounds[:, 1], crown.vertices.max(axis=0), atol=1e-3)
    scan = load_mesh(case.scan)
    centre = (scan.vertices.min(axis=0) + scan.vertices.max(axis=0)) / 2
    size = w.crown_model.frame.size_mm
    assert np.all(bounds[:, 0] >= centre - size / 2 - 1e-3)
    assert np.all(bounds[:, 1] <= centre + size / 2 + 1e-3)
    entry = w.viewer2d.current_entry()
    assert entry is not None and entry.labels is not None
    shown = (w.viewer2d.composite != entry.rgb).any(axis=2)
    assert shown.sum() > 0
    assert np.all(entry.labels[shown] > 0)


def test_sample_workspace_is_opened_from_a_writable_copy(qapp, tmp_path, monkeypatch):
    from app.ui import settings as ui_settings

    bundled = make_workspace(tmp_path / "bundle", broken=False, n=2)
    (bundled / "case_001" / "output").mkdir()
    (bundled / "case_001" / "output" / "crown.stl").write_bytes(b"stale")
    (bundled / "crownscan-qa.sqlite").write_bytes(b"not copied")
    monkeypatch.setattr("app.core.paths.sample_workspace_dir", lambda: bundled)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    copy = ui_settings.sample_workspace_copy()
    assert copy != bundled and str(copy).startswith(str(tmp_path / "data"))
    assert sorted(p.name for p in copy.iterdir()) == ["case_001", "case_002"]
    assert not (copy / "case_001" / "output").exists()
    (copy / "case_001" / "note.txt").write_text("technician's")
    assert ui_settings.sample_workspace_copy() == copy
    assert (copy / "case_001" / "note.txt").read_text() == "technician's"


def test_task_runner_tags_results_and_drops_cancelled_work(qapp, qtbot):
    import threading as th

    from app.core.errors import InputError
    from app.ui.workers import Tag, TaskRunner

    runner = TaskRunner(threads=2)
    got: list = []
    runner.done.connect(lambda t, r: got.append(("done", t, r)))
    runner.failed.connect(lambda t, e, tb: got.append(("failed", t, type(e).__name__)))
    runner.cancelled.connect(lambda t: got.append(("cancelled", t)))
    gate = th.Event()

    def slow(token, progress):
        progress("waiting", 0.5)
        gate.wait(10)
        return "late result"  # ignores the token on purpose

    def broken(token, progress):
        raise InputError("scan.ply", "not a mesh")

    def polite(token, progress):
        gate.wait(10)
        token.check()
        return "never"

    a, b, c = Tag("run", "a", 1), Tag("run", "b", 2), Tag("run", "c", 3)
    runner.submit(a, slow)
    runner.submit(b, broken)
    qtbot.waitUntil(lambda: any(g[0] == "failed" for g in got), timeout=5000)
    runner.submit(c, polite)
    assert runner.cancel(a) and runner.cancel(c)
    gate.set()
    assert runner.shutdown(10000)
    qtbot.wait(50)
    assert got == [("failed", b, "InputError")]
    assert runner.dropped == 2 and runner.active() == []
    runner.deleteLater()


def test_smoke_command_without_a_display_says_so_in_one_line(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "QT_QPA_PLATFORM")}
    proc = subprocess.run(
        [sys.executable, "-m", "app", "--quit", "--settings", str(tmp_path / "s.ini")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no X display") and proc.stderr.count("\n") == 1
