"""Fixtures for the GUI tests: isolated settings, small models and workspaces, a window
factory, and a leak check that fails a test leaving VTK objects, plotters, top-level widgets
or threads behind.

Import with ``from gui_fixtures import *`` in a GUI test module.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from seg_builders import build_colour_model, write_manifest

# pyvistaqt needs X11 (Xvfb from pytest-xvfb); Qt would pick Wayland on a Wayland desktop.
os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

SPHERE_RADIUS_MM = 6.0
FRAME_MM = 20.0
RED = (250, 60, 60)
BLUE = (60, 60, 250)
GREY = (128, 128, 128)

__all__ = [
    "BLUE",
    "RED",
    "SPHERE_RADIUS_MM",
    "FakeLocate",
    "build_sphere_crown_model",
    "fake_locate",
    "fake_models",
    "fake_workspace",
    "isolated_qsettings",
    "leak_check",
    "leaked_objects",
    "make_window",
    "make_workspace",
    "wait_for",
]


# --- models -----------------------------------------------------------------------------------


def build_sphere_crown_model(folder: Path, *, voxel_resolution: int = 16) -> Path:
    """A crown "model" whose occupancy is a sphere of ``SPHERE_RADIUS_MM`` at the frame centre.

    out = 40 * (r^2 - |p|^2) with p in IF-Net feed units (2 * unit cube), so the generated crown
    is known exactly: a sphere of 6 mm radius centred on the scan's bounding-box centre.
    """
    r_feed = 2.0 * SPHERE_RADIUS_MM / FRAME_MM
    nodes = [
        helper.make_node("Mul", ["p", "p"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "axes"], ["d2"], keepdims=0),
        helper.make_node("Sub", ["r2", "d2"], ["diff"]),
        helper.make_node("Mul", ["diff", "k"], ["out"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([-1], np.int64), "axes"),
        numpy_helper.from_array(np.array(r_feed**2, np.float32), "r2"),
        numpy_helper.from_array(np.array(40.0, np.float32), "k"),
    ]
    r = voxel_resolution
    graph = helper.make_graph(
        nodes,
        "sphere_crown",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, r, r, r]),
            helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, "n", 3]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "n"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "sphere_crown.onnx"))
    manifest = {
        "kind": "crown",
        "name": "Sphere crown (test)",
        "version": "7",
        "onnx": "sphere_crown.onnx",
        "inputs": {"voxels": "x", "points": "p"},
        "output": "out",
        "output_kind": "logits",
        "voxel_resolution": r,
        "voxelization": "solid",
        "frame": {"mode": "fixed", "size_mm": FRAME_MM, "center": "bbox"},
        "point_convention": "ifnet",
        "generation": {"resolution": 24, "threshold": 0.5, "batch_points": 4000},
        "smoothing": {"method": "none", "iterations": 0},
    }
    path = folder / "sphere_crown.json"
    path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def fake_models(tmp_path_factory) -> Path:
    """A models folder with the sphere crown model and the analytic colour segmentation model."""
    folder = tmp_path_factory.mktemp("models")
    build_sphere_crown_model(folder)
    build_colour_model(folder / "colour_seg.onnx")
    write_manifest(folder, "colour_seg.onnx")
    return folder


# --- workspaces -------------------------------------------------------------------------------


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """Grey background (class 0), a red block (class 1) and a blue block (class 2)."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = GREY
    o = seed * 4
    img[10 + o : 40 + o, 12:50] = RED
    img[50:80, 60 + o : 110 + o] = BLUE
    return img


def make_workspace(root: Path, *, broken: bool = True, n: int = 3) -> Path:
    """``n`` cases (spheres around different centres, two small images each), plus a case
    whose scan is garbage and one with images but no scan when ``broken``."""
    import pyvista as pv

    ws = root / "workspace"
    ws.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        case = ws / f"case_{i:03d}"
        case.mkdir(exist_ok=True)
        centre = (10.0 * i, -5.0 * i, 3.0)
        sphere = pv.Sphere(radius=4.0, center=centre, theta_resolution=16, phi_resolution=16)
        sphere.save(case / "scan.ply")
        for k in (1, 2):
            Image.fromarray(_image(96, 128, i + k)).save(case / f"image_{k}.png")
    if broken:
        bad = ws / "case_bad"
        bad.mkdir(exist_ok=True)
        (bad / "scan.ply").write_bytes(b"ply\nformat nonsense\n\x00\x01garbage")
        Image.fromarray(_image(96, 128, 0)).save(bad / "image_1.png")
        noscan = ws / "no_scan"
        noscan.mkdir(exist_ok=True)
        Image.fromarray(_image(96, 128, 0)).save(noscan / "image_1.png")
    return ws


@pytest.fixture
def fake_workspace(tmp_path) -> Path:
    return make_workspace(tmp_path)


# --- locating the preparation -----------------------------------------------------------------


class FakeLocate:
    """Stands in for ``app.core.crown.locate``: answers with set frames or a ``LocateError``.

    ``proposal`` (directions only; the centre is the clicked point) and ``found`` are what the
    two functions return; ``error`` makes both raise; ``gate`` (an Event), when set by a test,
    holds each call until it is set. ``calls`` records (function, thread id, point).
    """

    def __init__(self, error_type: type[Exception]) -> None:
        self.error_type = error_type
        self.proposal: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
        self.found = None
        self.error: str | None = None
        self.gate: threading.Event | None = None
        self.calls: list[tuple[str, int, tuple | None]] = []

    def _enter(self, what: str, vertices, faces, point) -> None:
        assert vertices.ndim == 2 and vertices.shape[1] == 3 and faces.shape[1] == 3
        self.calls.append((what, threading.get_ident(), point))
        if self.gate is not None:
            self.gate.wait(30)
        if self.error is not None:
            raise self.error_type(self.error)

    def propose_frame(self, vertices, faces, point):
        from app.core.crown.frame import CaseFrame

        self._enter("propose", vertices, faces, tuple(point))
        occlusal, mesial = self.proposal or (None, None)
        return CaseFrame(tuple(point), occlusal, mesial)

    def find_preparation(self, vertices, faces):
        self._enter("find", vertices, faces, None)
        return self.found


@pytest.fixture
def fake_locate(monkeypatch) -> FakeLocate:
    """Patch the locate module's two functions with a :class:`FakeLocate`."""
    from app.core.crown import locate

    fake = FakeLocate(locate.LocateError)
    monkeypatch.setattr(locate, "propose_frame", fake.propose_frame)
    monkeypatch.setattr(locate, "find_preparation", fake.find_preparation)
    return fake


# --- settings ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated_qsettings(tmp_path) -> Iterator[Path]:
    """Point every QSettings of this test at a temp folder (INI), never the user's settings."""
    from PySide6 import QtCore

    folder = tmp_path / "qsettings"
    folder.mkdir()
    QtCore.QSettings.setDefaultFormat(QtCore.QSettings.Format.IniFormat)
    for fmt in (QtCore.QSettings.Format.IniFormat, QtCore.QSettings.Format.NativeFormat):
        for scope in (QtCore.QSettings.Scope.UserScope, QtCore.QSettings.Scope.SystemScope):
            QtCore.QSettings.setPath(fmt, scope, str(folder))
    yield folder


# --- leaks ------------------------------------------------------------------------------------


def _vtk_ids() -> dict[int, str]:
    from vtkmodules.vtkCommonCore import vtkObjectBase

    return {id(o): type(o).__name__ for o in gc.get_objects() if isinstance(o, vtkObjectBase)}


def _flush_qt() -> None:
    from PySide6 import QtCore, QtWidgets

    app = QtWidgets.QApplication.instance()
    if app is None:
        return
    for _ in range(3):
        QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
        app.processEvents()
    gc.collect()


def _snapshot() -> dict:
    from PySide6 import QtWidgets
    from pyvista.plotting import plotter as pv_plotter

    _flush_qt()
    return {
        "vtk": _vtk_ids(),
        "widgets": {id(w): type(w).__name__ for w in QtWidgets.QApplication.topLevelWidgets()},
        "plotters": len(pv_plotter._ALL_PLOTTERS),
        "threads": {t.ident: t.name for t in threading.enumerate()},
    }


def leaked_objects(before: dict, after: dict) -> list[str]:
    """What ``after`` holds that ``before`` did not: VTK objects, top-level widgets, plotters,
    Python threads. Empty when nothing leaked."""
    problems = []
    vtk_new = sorted(v for k, v in after["vtk"].items() if k not in before["vtk"])
    if vtk_new:
        problems.append(f"{len(vtk_new)} VTK objects leaked: {vtk_new[:12]}")
    w_new = sorted(v for k, v in after["widgets"].items() if k not in before["widgets"])
    if w_new:
        problems.append(f"top-level widgets leaked: {w_new}")
    if after["plotters"] > before["plotters"]:
        problems.append(f"{after['plotters'] - before['plotters']} pyvista plotters not closed")
    t_new = sorted(v for k, v in after["threads"].items() if k not in before["threads"])
    if t_new:
        problems.append(f"threads left running: {t_new}")
    return problems


@pytest.fixture
def leak_check(qapp) -> Iterator[None]:
    """Fail the test if it leaves VTK objects, widgets, plotters or threads behind."""
    before = _snapshot()
    yield
    problems = leaked_objects(before, _snapshot())
    if problems:
        pytest.fail("leak after GUI test: " + "; ".join(problems), pytrace=False)


# --- windows ----------------------------------------------------------------------------------


def wait_for(qtbot, condition: Callable[[], bool], timeout_ms: int = 60000) -> None:
    qtbot.waitUntil(condition, timeout=timeout_ms)


@pytest.fixture
def make_window(qapp, qtbot, leak_check, tmp_path, fake_models) -> Iterator[Callable]:
    """``make_window(workspace=None, models=None, resolution=24)`` -> a shown MainWindow with
    settings in a temp INI file; every window is closed and deleted after the test (before the
    leak check runs)."""
    from PySide6 import QtCore

    from app.ui.main_window import MainWindow
    from app.ui.settings import load_settings
    from app.ui.style import apply_style

    apply_style(qapp)
    windows = []
    ini = tmp_path / "crownscan.ini"

    def make(workspace: Path | None = None, models: Path | None = None, resolution: int = 24):
        store = QtCore.QSettings(str(ini), QtCore.QSettings.Format.IniFormat)
        settings = load_settings(store)
        settings.models_dir = str(models or fake_models)
        settings.resolution = resolution
        settings.providers = ("cpu",)
        settings.cpu_threads = 1
        w = MainWindow(settings, store)
        windows.append(w)
        w.resize(1280, 800)
        w.show()
        qtbot.waitExposed(w)
        wait_for(qtbot, lambda: not w.provider_label.text().endswith("loading…"))
        if workspace is not None:
            w.open_workspace(workspace)
            wait_for(qtbot, lambda: w._view_tag is None)
        return w

    yield make
    for w in windows:
        w.close()
        idle = w.runner._pool.activeThreadCount() == 0
        w.deleteLater()
        assert idle, "worker threads still running after the window closed"
    windows.clear()
    _flush_qt()


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
