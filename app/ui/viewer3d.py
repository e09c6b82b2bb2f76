"""The 3D panel: one QtInteractor for the window's life, the scan and the crown as named actors.

Meshes arrive as ready ``pyvista.PolyData`` built in a worker (:func:`mesh_to_polydata`);
this widget only adds, replaces and removes actors on the GUI thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyvista as pv
from PySide6 import QtCore, QtGui, QtWidgets
from pyvistaqt import QtInteractor

STONE_COLOR = (0.70, 0.69, 0.66)
TOOTH_COLOR = (0.98, 0.93, 0.78)
BACKGROUND = ((0.17, 0.19, 0.22), (0.36, 0.40, 0.45))

# Camera direction (focal point -> camera) and view-up, for a scan in the usual scanner frame:
# occlusal plane ~ XY with +Z towards the occlusal surface, +Y buccal, +X distal.
VIEWS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "Occlusal": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "Buccal": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "Lingual": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "Mesial": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "Distal": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
}


def mesh_to_polydata(mesh) -> pv.PolyData:
    """A triangle mesh (``vertices`` (V,3), ``faces`` (F,3)) as PolyData with point normals.

    Runs in workers: building the VTK object and its normals is the slow part of showing a mesh.
    """
    faces = np.asarray(mesh.faces, dtype=np.int64)
    cells = np.hstack([np.full((len(faces), 1), 3, dtype=np.int64), faces]).ravel()
    poly = pv.PolyData(np.asarray(mesh.vertices, dtype=np.float64), cells)
    if poly.n_cells:
        poly = poly.compute_normals(
            cell_normals=False,
            split_vertices=False,
            auto_orient_normals=False,
            consistent_normals=False,
        )
    return poly


class Viewer3D(QtWidgets.QWidget):
    """Scan (stone colour) and crown (tooth colour) with toggles, opacity, views, screenshot."""

    screenshot_saved = QtCore.Signal(str)
    centre_picked = QtCore.Signal(object)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.plotter = QtInteractor(self, auto_update=False)
        self.plotter.set_background(BACKGROUND[0], top=BACKGROUND[1])
        self._meshes: dict[str, pv.PolyData] = {}
        self._smooth = True
        self._render_pending = False
        self._tuned = False
        self.software_gl = False
        self.current_view: str | None = None

        self.scan_check = QtWidgets.QCheckBox("Scan")
        self.scan_check.setChecked(True)
        self.scan_opacity = self._slider(100)
        self.crown_check = QtWidgets.QCheckBox("Crown")
        self.crown_check.setChecked(True)
        self.crown_opacity = self._slider(100)
        self.smooth_check = QtWidgets.QCheckBox("Smooth")
        self.smooth_check.setToolTip("Smooth shading (off: flat, shows the facets)")
        self.smooth_check.setChecked(True)
        self.view_buttons: dict[str, QtWidgets.QToolButton] = {}
        top = QtWidgets.QToolBar("3D display")
        top.setIconSize(QtCore.QSize(12, 12))
        for label, check, slider, color in (
            ("scan", self.scan_check, self.scan_opacity, STONE_COLOR),
            ("crown", self.crown_check, self.crown_opacity, TOOTH_COLOR),
        ):
            pm = QtGui.QPixmap(12, 12)
            pm.fill(QtGui.QColor(*(int(c * 255) for c in color)))
            check.setIcon(QtGui.QIcon(pm))
            check.setToolTip(f"show the {label}")
            slider.setToolTip(f"{label} opacity")
            top.addWidget(check)
            top.addWidget(slider)
            top.addSeparator()
        top.addWidget(self.smooth_check)
        self.frame_check = QtWidgets.QCheckBox("Crop box")
        self.frame_check.setChecked(True)
        self.frame_check.setToolTip("Show the region the crown model sees (its frame)")
        self.frame_check.toggled.connect(lambda on: self._set_visible("frame", on))
        top.addWidget(self.frame_check)
        views = QtWidgets.QToolBar("3D views")
        for name in VIEWS:
            act = views.addAction(name)
            act.setToolTip(f"{name} view")
            act.triggered.connect(lambda _=False, n=name: self.set_view(n))
            self.view_buttons[name] = views.widgetForAction(act)
        act = views.addAction("Reset")
        act.setToolTip("Reset camera")
        act.triggered.connect(self.reset_camera)
        views.addSeparator()
        self.pick_action = views.addAction("Pick centre")
        self.pick_action.setCheckable(True)
        self.pick_action.setToolTip(
            "Click the preparation on the scan to centre the crown model's frame there"
        )
        self.pick_action.toggled.connect(self._set_picking)
        act = views.addAction(
            self.style().standardIcon(QtWidgets.QStyle.StandardPixmap.SP_DialogSaveButton), "PNG"
        )
        act.setToolTip("Save the 3D view as a PNG (screenshot)")
        act.triggered.connect(self._ask_screenshot)
        views.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextOnly)
        views.widgetForAction(act).setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonIconOnly)

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(top)
        lay.addWidget(views)
        lay.addWidget(self.plotter, 1)

        self.scan_check.toggled.connect(lambda on: self._set_visible("scan", on))
        self.crown_check.toggled.connect(lambda on: self._set_visible("crown", on))
        self.scan_opacity.valueChanged.connect(lambda v: self._set_opacity("scan", v / 100))
        self.crown_opacity.valueChanged.connect(lambda v: self._set_opacity("crown", v / 100))
        self.smooth_check.toggled.connect(self._set_smooth)

    @staticmethod
    def _slider(value: int) -> QtWidgets.QSlider:
        s = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        s.setRange(0, 100)
        s.setValue(value)
        s.setFixedWidth(72)
        return s

    # --- content ---------------------------------------------------------------------------

    def actor(self, name: str):
        return self.plotter.actors.get(name)

    def set_mesh(self, name: str, poly: pv.PolyData | None, *, reset: bool = False) -> None:
        """Show ``poly`` as actor ``name`` (replacing the old one), or remove it when None."""
        if poly is None or poly.n_points == 0:
            self._meshes.pop(name, None)
            self.plotter.remove_actor(name, render=False)
        else:
            self._meshes[name] = poly
            color, check, slider = (
                (STONE_COLOR, self.scan_check, self.scan_opacity)
                if name == "scan"
                else (TOOTH_COLOR, self.crown_check, self.crown_opacity)
            )
            actor = self.plotter.add_mesh(
                poly,
                name=name,
                color=color,
                opacity=slider.value() / 100,
                smooth_shading=False,
                specular=0.35 if name == "crown" else 0.1,
                specular_power=20,
                diffuse=0.85,
                ambient=0.15,
                reset_camera=False,
                render=False,
                show_scalar_bar=False,
                scalars=None,
            )
            actor.SetVisibility(check.isChecked())
            self._apply_shading(actor)
        if reset:
            self.reset_camera()
        else:
            self.render()

    def set_scan(self, poly: pv.PolyData | None, *, reset: bool = True) -> None:
        self.set_mesh("scan", poly, reset=reset)

    def set_crown(self, poly: pv.PolyData | None) -> None:
        self.set_mesh("crown", poly, reset=False)

    def clear(self) -> None:
        for name in ("scan", "crown"):
            self._meshes.pop(name, None)
        self.plotter.remove_actor(["scan", "crown", "frame", "centre", "message"], render=False)
        self.render()

    def set_message(self, text: str | None) -> None:
        """A line of text in the 3D view (why nothing is shown), or none."""
        self.plotter.remove_actor("message", render=False)
        if text:
            self.plotter.add_text(
                text, position="upper_left", font_size=11, color=(0.95, 0.55, 0.5), name="message"
            )
        self.render()

    def set_frame(
        self, centre: tuple[float, float, float] | None, size_mm: float, picked: bool = False
    ) -> None:
        """Outline the cube the crown model sees; mark the centre when it was picked."""
        self.plotter.remove_actor(["frame", "centre"], render=False)
        if centre is not None and size_mm > 0:
            c = np.asarray(centre, dtype=float)
            h = size_mm / 2
            box = pv.Box(bounds=(c[0] - h, c[0] + h, c[1] - h, c[1] + h, c[2] - h, c[2] + h))
            frame = self.plotter.add_mesh(
                box.outline(),
                name="frame",
                color=(0.35, 0.75, 1.0),
                line_width=1.5,
                reset_camera=False,
                render=False,
                pickable=False,
            )
            frame.SetVisibility(self.frame_check.isChecked())
            if picked:
                marker = pv.Sphere(radius=max(0.3, size_mm / 60), center=c)
                self.plotter.add_mesh(
                    marker,
                    name="centre",
                    color=(1.0, 0.35, 0.3),
                    reset_camera=False,
                    render=False,
                    pickable=False,
                )
        self.render()

    def _set_picking(self, on: bool) -> None:
        if on:
            self.plotter.enable_surface_point_picking(
                callback=self._picked,
                show_message=False,
                show_point=False,
                left_clicking=True,
                pickable_window=False,
            )
        else:
            self.plotter.disable_picking()

    def _picked(self, point) -> None:
        if point is None:
            return
        self.centre_picked.emit(tuple(float(v) for v in np.asarray(point).ravel()[:3]))
        QtCore.QTimer.singleShot(0, lambda: self.pick_action.setChecked(False))

    def crown_bounds(self) -> tuple[float, ...] | None:
        a = self.actor("crown")
        return None if a is None else tuple(a.GetBounds())

    # --- display state -----------------------------------------------------------------------

    def _apply_shading(self, actor) -> None:
        prop = actor.GetProperty()
        if self._smooth:
            prop.SetInterpolationToPhong()
        else:
            prop.SetInterpolationToFlat()

    def _set_smooth(self, on: bool) -> None:
        self._smooth = on
        for name in self._meshes:
            a = self.actor(name)
            if a is not None:
                self._apply_shading(a)
        self.render()

    def _set_visible(self, name: str, on: bool) -> None:
        a = self.actor(name)
        if a is not None:
            a.SetVisibility(on)
            self.render()

    def _set_opacity(self, name: str, value: float) -> None:
        a = self.actor(name)
        if a is not None:
            a.GetProperty().SetOpacity(value)
            self.render()

    def set_view(self, name: str) -> None:
        """Look from a standard direction; the choice is kept for the next case shown."""
        self.current_view = name
        direction, up = VIEWS[name]
        self.plotter.view_vector(direction, viewup=up, render=False)
        self.reset_camera()

    def reset_camera(self) -> None:
        if self._meshes:
            self.plotter.reset_camera(render=False)
            self.plotter.camera.zoom(1.15)
        self.render()

    def show_new_case(self) -> None:
        """Frame a newly shown case from the last standard view the technician chose."""
        if self.current_view is not None:
            direction, up = VIEWS[self.current_view]
            self.plotter.view_vector(direction, viewup=up, render=False)
        self.reset_camera()

    def render(self) -> None:
        """Ask for a render; several requests in one pass of the event loop render once
        (software OpenGL needs ~0.2 s per frame for a full scan)."""
        if not self._render_pending:
            self._render_pending = True
            QtCore.QTimer.singleShot(0, self._render_now)

    def _render_now(self) -> None:
        self._render_pending = False
        if not getattr(self.plotter, "_closed", True):
            self._tune_for_renderer()
            self.plotter.render()

    def _tune_for_renderer(self) -> None:
        """Drop multisampling on a software OpenGL (Mesa llvmpipe: 4x MSAA makes every frame
        3-4x slower there); keep it on real GPUs."""
        if self._tuned:
            return
        self._tuned = True
        rw = self.plotter.render_window
        try:
            caps = rw.ReportCapabilities().lower()
        except Exception:  # no context yet on some platforms: keep the defaults
            return
        self.software_gl = any(k in caps for k in ("llvmpipe", "softpipe", "swrast"))
        if self.software_gl:
            rw.SetMultiSamples(0)

    # --- pictures ----------------------------------------------------------------------------

    def render_image(self) -> np.ndarray:
        """The current 3D view as an RGB array (rendered now, so never a stale or black frame)."""
        self._tune_for_renderer()
        self.plotter.render()
        return self.plotter.screenshot(return_img=True)

    def save_screenshot(self, path: str | Path) -> None:
        from PIL import Image

        from app.core.fileio import atomic_write

        img = self.render_image()
        atomic_write(Path(path), lambda tmp: Image.fromarray(img).save(tmp, format="PNG"))
        self.screenshot_saved.emit(str(path))

    def _ask_screenshot(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(
            self, "Save 3D view", "crownscan-3d.png", "PNG image (*.png)"
        )
        if path:
            self.save_screenshot(path)

    def shutdown(self) -> None:
        """Close the plotter for good (finalizes the render window); call once at window close."""
        self._meshes.clear()
        if not getattr(self.plotter, "_closed", True):
            if self.pick_action.isChecked():
                self.pick_action.setChecked(False)
            self.plotter.clear()
            self.plotter.close()
