"""The 3D panel: one QtInteractor for the window's life, the scan and the crown as named actors.

Meshes arrive as ready ``pyvista.PolyData`` built in a worker (:func:`mesh_to_polydata`);
on the GUI thread this widget only swaps them into the actors it keeps (made once) and asks
for one paint per change. pyvista and the interactor are made on first use
(:meth:`Viewer3D.make_plotter`, or after a background import with ``make_plotter_soon``), not
at import: they take longer to load than the rest of the window, which can show first.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

if TYPE_CHECKING:
    import pyvista as pv
    from pyvistaqt import QtInteractor

STONE_COLOR = (0.70, 0.69, 0.66)
TOOTH_COLOR = (0.98, 0.93, 0.78)
BACKGROUND = ((0.17, 0.19, 0.22), (0.36, 0.40, 0.45))
RENDER_BREAK_MS = 15
FRAME_COLOR = (0.35, 0.75, 1.0)
OCCLUSAL_COLOR = (0.45, 0.9, 0.45)
MESIAL_COLOR = (1.0, 0.62, 0.2)
CENTRE_COLOR = (1.0, 0.35, 0.3)
FRAME_ACTORS = ("frame", "occlusal", "mesial", "centre")

# Camera direction (focal point -> camera) and view-up, for a scan in the usual scanner frame:
# occlusal plane ~ XY with +Z towards the occlusal surface, +Y buccal, +X distal.
VIEWS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "Occlusal": ((0.0, 0.0, 1.0), (0.0, 1.0, 0.0)),
    "Buccal": ((0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "Lingual": ((0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    "Mesial": ((-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
    "Distal": ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
}


def frame_views(axes: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The named views (camera direction, view-up) along a case frame's axes.

    ``axes`` has rows (mesial, buccolingual, occlusal) in scan mm: the occlusal view looks down
    the occlusal axis onto the tooth, the side views look along the other two with the
    occlusal direction up.
    """
    m, b, o = (np.asarray(a, dtype=float) for a in axes)
    return {
        "Occlusal": (o, b),
        "Buccal": (b, o),
        "Lingual": (-b, o),
        "Mesial": (m, o),
        "Distal": (-m, o),
    }


def box_outline(corners: np.ndarray) -> pv.PolyData:
    """The 12 edges of a box given its 8 corners in (x, y, z) binary order, as line cells."""
    import pyvista as pv

    edges = [(i, i | bit) for i in range(8) for bit in (1, 2, 4) if not i & bit]
    lines = np.array([(2, i, j) for i, j in edges], dtype=np.int64).ravel()
    return pv.PolyData(np.asarray(corners, dtype=float), lines=lines)


def pose_matrix(centre: np.ndarray, direction: np.ndarray, scale: float) -> np.ndarray:
    """4x4 map of a shape along +x at the origin onto ``direction`` at ``centre``, ``scale``
    times larger (the arrow and the dot are made once and placed with it)."""
    d = np.asarray(direction, dtype=float)
    d = d / np.linalg.norm(d)
    helper = np.eye(3)[int(np.argmin(np.abs(d)))]
    side = np.cross(d, helper)
    side /= np.linalg.norm(side)
    m = np.eye(4)
    m[:3, :3] = scale * np.column_stack([d, side, np.cross(d, side)])
    m[:3, 3] = centre
    return m


def mesh_to_polydata(mesh) -> pv.PolyData:
    """A triangle mesh (``vertices`` (V,3), ``faces`` (F,3)) as PolyData with point normals.

    Runs in workers: building the VTK object and its normals is the slow part of showing a mesh
    (the normals come from numpy, which lets the GUI thread run meanwhile).
    """
    import pyvista as pv

    from app.core.crown.meshio import vertex_normals

    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    cells = np.hstack([np.full((len(faces), 1), 3, dtype=np.int64), faces]).ravel()
    poly = pv.PolyData(vertices, cells)
    if poly.n_cells:
        poly.point_data.active_normals = vertex_normals(vertices, faces).astype(np.float32)
    return poly


def preload_qtpy() -> None:
    """Import qtpy, the Qt layer pyvistaqt is written on; call before the window shows.

    Its modules wrap PySide6's enums and static methods as they load: 0.35 s of the GUI thread
    holding the interpreter, which froze the window when pyvistaqt came after it was up. Not on
    a thread: qtpy binds PySide6's modules while the GUI thread builds the window with them.
    """
    import qtpy.QtCore  # noqa: F401
    import qtpy.QtGui  # noqa: F401
    import qtpy.QtWidgets  # noqa: F401


class Viewer3D(QtWidgets.QWidget):
    """Scan (stone colour) and crown (tooth colour) with toggles, opacity, views, screenshot."""

    screenshot_saved = QtCore.Signal(str)
    centre_picked = QtCore.Signal(object)
    meshes_changed = QtCore.Signal()
    closing = QtCore.Signal()
    _vtk_imported = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self._plotter: QtInteractor | None = None
        self._importing: threading.Thread | None = None
        self._slot = QtWidgets.QWidget()
        self._slot.setStyleSheet(f"background: rgb{tuple(int(c * 255) for c in BACKGROUND[0])}")
        self._meshes: dict[str, pv.PolyData] = {}
        self._parked: set[str] = set()
        self._smooth = True
        self._render_pending = False
        self._tuned = False
        self.software_gl = False
        self.current_view: str | None = None
        self._view_axes: np.ndarray | None = None
        self.frame_directions: tuple[np.ndarray, np.ndarray] | None = None
        self.crown_colors: np.ndarray | None = None
        self._crown_painted = False

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
        self.display_toolbar = top
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
        self.frame_check.toggled.connect(self._show_frame_overlays)
        views = QtWidgets.QToolBar("3D views")
        self.views_toolbar = views
        for name in VIEWS:
            act = views.addAction(name[0])  # O, B, L, M, D: the surfaces' usual letters
            act.setToolTip(f"{name} view")
            act.triggered.connect(lambda _=False, n=name: self.set_view(n))
            self.view_buttons[name] = views.widgetForAction(act)
        reset = views.addAction(
            self.style().standardIcon(QtWidgets.QStyle.StandardPixmap.SP_BrowserReload), "Reset"
        )
        reset.setToolTip("Reset camera (Home)")
        reset.triggered.connect(self.reset_camera)
        views.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextOnly)
        views.widgetForAction(reset).setToolButtonStyle(
            QtCore.Qt.ToolButtonStyle.ToolButtonIconOnly
        )
        tools = QtWidgets.QToolBar("3D tools")
        self.tools_toolbar = tools
        self.pick_action = tools.addAction("Pick centre")
        self.pick_action.setCheckable(True)
        self.pick_action.setToolTip(
            "Click the preparation on the scan: the case frame (crop box, occlusal and"
            " mesio-distal axes) is proposed there"
        )
        self.pick_action.toggled.connect(self._set_picking)
        tools.addWidget(self.frame_check)
        act = tools.addAction(
            self.style().standardIcon(QtWidgets.QStyle.StandardPixmap.SP_DialogSaveButton), "PNG"
        )
        act.setToolTip("Save the 3D view as a PNG (screenshot)")
        act.triggered.connect(self._ask_screenshot)
        tools.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextOnly)
        tools.widgetForAction(act).setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonIconOnly)

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(top)
        lay.addWidget(views)
        lay.addWidget(tools)
        lay.addWidget(self._slot, 1)
        self.legend = QtWidgets.QLabel()
        self.legend.setObjectName("distanceLegend")
        self.legend.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.legend.hide()
        lay.addWidget(self.legend)

        self.scan_check.toggled.connect(lambda on: self._set_visible("scan", on))
        self.crown_check.toggled.connect(lambda on: self._set_visible("crown", on))
        self.scan_opacity.valueChanged.connect(lambda v: self._set_opacity("scan", v / 100))
        self.crown_opacity.valueChanged.connect(lambda v: self._set_opacity("crown", v / 100))
        self.smooth_check.toggled.connect(self._set_smooth)

    @property
    def plotter(self) -> QtInteractor:
        """The interactor, made on first use."""
        return self._plotter if self._plotter is not None else self.make_plotter()

    @property
    def has_plotter(self) -> bool:
        """Whether the interactor is made yet (it comes after the window shows)."""
        return self._plotter is not None

    def make_plotter_soon(self) -> None:
        """Load pyvista, VTK's rendering and the libraries of a case's first load and run on a
        thread (seconds of loading while the window is being built), then make the interactor
        here, on the GUI thread.

        Only modules that load no Qt go to the thread: pyvistaqt pulls in qtpy, which binds
        PySide6's modules wholesale; :func:`preload_qtpy` loads that on the GUI thread before
        the window shows rather than race the window's own use of Qt."""
        if self._plotter is not None or self._importing is not None:
            return
        self._vtk_imported.connect(self.make_plotter, QtCore.Qt.ConnectionType.QueuedConnection)
        self._importing = threading.Thread(
            target=self._import_vtk, name="import-libraries", daemon=True
        )
        self._importing.start()

    def _import_vtk(self) -> None:
        try:
            import cv2  # noqa: F401  (these three hold the interpreter for 0.1-0.3 s as they
            import pyvista.plotting  # noqa: F401  load: here, before the window shows, rather
            import skimage.measure  # noqa: F401  than in a case's first load or run)
            import trimesh  # noqa: F401
            import vtkmodules.vtkRenderingOpenGL2  # noqa: F401
        finally:
            try:
                self._vtk_imported.emit()
            except RuntimeError:  # the window was closed meanwhile
                pass

    def make_plotter(self) -> QtInteractor:
        """Load pyvista and put the interactor where the placeholder was (once)."""
        if self._plotter is None:
            if self._importing is not None:
                # a case shown before the thread is done: pyvista's lazy attributes would be
                # read half-imported (seen in the frozen bundle), so wait for it
                self._importing.join()
            from pyvistaqt import QtInteractor

            self._plotter = QtInteractor(self, auto_update=False)
            self._plotter.set_background(BACKGROUND[0], top=BACKGROUND[1])
            self.layout().replaceWidget(self._slot, self._plotter)
            self._slot.deleteLater()
            self._tune_for_renderer()  # before its first frame, which comes with the window
        return self._plotter

    @staticmethod
    def _slider(value: int) -> QtWidgets.QSlider:
        s = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        s.setRange(0, 100)
        s.setValue(value)
        s.setFixedWidth(56)
        return s

    # --- content ---------------------------------------------------------------------------

    def actor(self, name: str):
        """The actor showing ``name`` now; None when nothing is shown under that name."""
        return None if name in self._parked else self.plotter.actors.get(name)

    def _park(self, *names: str) -> None:
        """Hide actors instead of removing them: the next case swaps its data into them."""
        for name in names:
            actor = self.plotter.actors.get(name)
            if actor is not None:
                actor.SetVisibility(False)
                self._parked.add(name)

    def _swap_in(self, name: str, poly: pv.PolyData | None, **style):
        """Actor ``name`` showing ``poly`` (None: keep its data): swapped into the actor kept
        from an earlier case (microseconds), or added with ``style`` the first time (pyvista
        spends tens of ms setting up an actor, on the GUI thread)."""
        actor = self.plotter.actors.get(name)
        if actor is None:
            actor = self.plotter.add_mesh(
                poly, name=name, reset_camera=False, render=False, **style
            )
        elif poly is not None:
            actor.GetMapper().SetInputData(poly)
        self._parked.discard(name)
        return actor

    def set_mesh(self, name: str, poly: pv.PolyData | None, *, reset: bool = False) -> None:
        """Show ``poly`` as actor ``name`` (swapped into the actor kept from before), or hide
        that actor when None."""
        if poly is None or poly.n_points == 0:
            self._meshes.pop(name, None)
            self._park(name)
        else:
            self._meshes[name] = poly
            color, check, slider = (
                (STONE_COLOR, self.scan_check, self.scan_opacity)
                if name == "scan"
                else (TOOTH_COLOR, self.crown_check, self.crown_opacity)
            )
            colors = self.crown_colors if name == "crown" else None
            if colors is not None and len(colors) != poly.n_points:
                colors = self.crown_colors = None
            if name == "crown" and (colors is not None or self._crown_painted):
                # per-vertex colours are set up with the actor: painting builds a new one
                self.plotter.remove_actor("crown", render=False)
                self._crown_painted = colors is not None
            actor = self._swap_in(
                name,
                poly,
                color=color,
                smooth_shading=False,
                specular=0.35 if name == "crown" else 0.1,
                specular_power=20,
                diffuse=0.85,
                ambient=0.15,
                show_scalar_bar=False,
                scalars=colors,
                rgb=colors is not None,
            )
            actor.GetProperty().SetOpacity(slider.value() / 100)
            actor.SetVisibility(check.isChecked())
            self._apply_shading(actor)
        if reset:
            self.reset_camera()
        else:
            self.render()
        self.meshes_changed.emit()

    def mesh(self, name: str) -> pv.PolyData | None:
        """The PolyData shown as ``name`` ("scan" or "crown"), or None."""
        return self._meshes.get(name)

    def paint_crown(self, colors: np.ndarray | None) -> None:
        """Colour the crown per vertex ((N, 3) uint8, one row per crown point), or plainly."""
        self.crown_colors = None if colors is None else np.asarray(colors, dtype=np.uint8)
        crown = self._meshes.get("crown")
        if crown is not None:
            self.set_mesh("crown", crown)

    def set_legend(
        self, title: str | None, entries: Sequence[tuple[str, tuple[int, int, int]]] = ()
    ) -> None:
        """A strip under the view naming what each colour means (text, RGB 0-255); None hides."""
        if title is None:
            self.legend.clear()
            self.legend.hide()
            return
        swatches = "&nbsp;&nbsp;".join(
            f'<span style="color: rgb{tuple(rgb)}">&#9632;</span>&nbsp;{html.escape(text)}'
            for text, rgb in entries
        )
        self.legend.setText(f"<b>{html.escape(title)}</b>&nbsp;&nbsp;{swatches}")
        self.legend.show()

    def set_scan(self, poly: pv.PolyData | None, *, reset: bool = True) -> None:
        self.set_mesh("scan", poly, reset=reset)

    def set_crown(self, poly: pv.PolyData | None) -> None:
        self.set_mesh("crown", poly, reset=False)

    def clear(self) -> None:
        for name in ("scan", "crown"):
            self._meshes.pop(name, None)
        if self._plotter is None:
            return
        self._park("scan", "crown", *FRAME_ACTORS)
        self.plotter.remove_actor("message", render=False)
        self.render()
        self.meshes_changed.emit()

    def set_message(self, text: str | None) -> None:
        """A line of text in the 3D view (why nothing is shown), or none."""
        self.plotter.remove_actor("message", render=False)
        if text:
            self.plotter.add_text(
                text,
                position="upper_left",
                font_size=11,
                color=(0.95, 0.55, 0.5),
                name="message",
                render=False,
            )
        self.render()

    def set_frame(
        self,
        corners: np.ndarray | None,
        occlusal: np.ndarray | None = None,
        mesial: np.ndarray | None = None,
        marked: bool = False,
    ) -> None:
        """Outline the (possibly turned) cube the crown model sees, with its axes.

        ``corners`` are the cube's eight corners in mm in (x, y, z) binary order (as
        ``FrameTransform.corners_mm`` gives them); ``occlusal`` is drawn as an arrow from the
        centre, ``mesial`` as a line through it; ``marked`` adds a dot on the centre (a case
        frame set for this case, not the model's default). None removes the outline.
        """
        self._park(*FRAME_ACTORS)
        self.frame_directions = (
            None
            if occlusal is None or mesial is None
            else (np.asarray(mesial, dtype=float), np.asarray(occlusal, dtype=float))
        )
        if corners is not None:
            import pyvista as pv

            box = np.asarray(corners, dtype=float).reshape(8, 3)
            centre = box.mean(axis=0)
            size = float(np.linalg.norm(box[4] - box[0]))
            self._overlay("frame", box_outline(box), FRAME_COLOR, line_width=1.5)
            if occlusal is not None:
                arrow = self._overlay(
                    "occlusal",
                    None
                    if "occlusal" in self.plotter.actors
                    else pv.Arrow(tip_length=0.18, tip_radius=0.05, shaft_radius=0.015),
                    OCCLUSAL_COLOR,
                )
                arrow.SetUserMatrix(
                    pv.vtkmatrix_from_array(pose_matrix(centre, occlusal, 0.75 * size))
                )
            if mesial is not None:
                half = 0.5 * size * np.asarray(mesial, dtype=float)
                line = pv.PolyData(np.array([centre - half, centre + half]), lines=[2, 0, 1])
                self._overlay("mesial", line, MESIAL_COLOR, line_width=3.5)
            if marked:
                dot = self._overlay(
                    "centre",
                    None if "centre" in self.plotter.actors else pv.Sphere(radius=1.0),
                    CENTRE_COLOR,
                )
                radius = max(0.3, size / 60)
                dot.SetUserMatrix(pv.vtkmatrix_from_array(pose_matrix(centre, (1, 0, 0), radius)))
        self.render()

    def _overlay(self, name: str, poly: pv.PolyData | None, color, line_width: float = 1.0):
        """A frame overlay actor, shown or hidden with the "Crop box" toggle."""
        actor = self._swap_in(name, poly, color=color, line_width=line_width, pickable=False)
        actor.SetVisibility(self.frame_check.isChecked())
        return actor

    def frame_points(self, name: str = "frame") -> np.ndarray | None:
        """The points of a drawn frame overlay (mm), as the renderer has them; None if not shown."""
        a = self.actor(name)
        if a is None:
            return None
        points = np.array(a.GetMapper().GetInput().GetPoints().GetData())
        placed = a.GetUserMatrix()
        if placed is None:
            return points
        m = np.array([[placed.GetElement(i, j) for j in range(4)] for i in range(4)])
        return points @ m[:3, :3].T + m[:3, 3]

    def _set_picking(self, on: bool) -> None:
        if on:
            self.plotter.disable_picking()  # one picker at a time (the measuring tool's)
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

    def _show_frame_overlays(self, on: bool) -> None:
        for name in FRAME_ACTORS:
            a = self.actor(name)
            if a is not None:
                a.SetVisibility(on)
        self.render()

    def _set_opacity(self, name: str, value: float) -> None:
        a = self.actor(name)
        if a is not None:
            a.GetProperty().SetOpacity(value)
            self.render()

    def set_view_axes(self, axes: np.ndarray | None) -> None:
        """Make the named views follow a case frame (rows mesial, buccolingual, occlusal, in
        scan mm), or the scan's own axes with None. Takes effect at the next named view."""
        self._view_axes = None if axes is None else np.asarray(axes, dtype=float).reshape(3, 3)

    def view_vectors(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Camera direction (focal point towards camera) and view-up of a named view."""
        if self._view_axes is not None:
            return frame_views(self._view_axes)[name]
        direction, up = VIEWS[name]
        return np.array(direction), np.array(up)

    def view_direction(self) -> np.ndarray:
        """The unit direction from the focal point towards the camera, as shown now."""
        cam = self.plotter.renderer.camera
        d = np.subtract(cam.position, cam.focal_point)
        return d / np.linalg.norm(d)

    def set_view(self, name: str) -> None:
        """Look from a standard direction; the choice is kept for the next case shown."""
        self.current_view = name
        direction, up = self.view_vectors(name)
        self.plotter.view_vector(direction, viewup=up, render=False)
        self.reset_camera()

    def reset_camera(self) -> None:
        if self._meshes:
            # the plotter's reset_camera, and its camera until one is set, render on the spot
            renderer = self.plotter.renderer
            renderer.reset_camera(render=False)
            renderer.camera.is_set = True
            renderer.camera.zoom(1.15)
        self.render()

    def show_new_case(self) -> None:
        """Frame a newly shown case from the last standard view the technician chose."""
        if self.current_view is not None:
            direction, up = self.view_vectors(self.current_view)
            self.plotter.view_vector(direction, viewup=up, render=False)
        self.reset_camera()

    def show_after_window(self) -> None:
        """Call just before the window first shows: the 3D view draws its first frame
        :data:`RENDER_BREAK_MS` after the rest of the window's first paint, not in the same
        pass (together they passed 100 ms on software OpenGL)."""
        plotter = self.plotter
        plotter.setUpdatesEnabled(False)

        def draw() -> None:
            plotter.setUpdatesEnabled(True)
            self.render()

        QtCore.QTimer.singleShot(RENDER_BREAK_MS, draw)

    def render(self) -> None:
        """Ask for a render; several requests within :data:`RENDER_BREAK_MS` render once.

        The pause lets the event loop answer input between the work that changed the scene
        (a case shown: panels, frame, lists) and the frame itself, which on software OpenGL
        takes 30-70 ms: one stall of both would pass 100 ms."""
        if not self._render_pending:
            self._render_pending = True
            QtCore.QTimer.singleShot(RENDER_BREAK_MS, self._render_now)

    def _render_now(self) -> None:
        """Render once, in the widget's next paint: ``plotter.render()`` would render now and
        its finished frame would schedule that paint, which renders again."""
        self._render_pending = False
        if not getattr(self.plotter, "_closed", True) and self.plotter.isVisible():
            # hidden (before the window shows): its first paint draws the scene as it is then
            self.plotter.renderers.on_plotter_render()
            self.plotter.update()

    def _tune_for_renderer(self) -> None:
        """Render cheaper on a software OpenGL (Mesa llvmpipe), where a frame of a full scan is
        drawn by the CPU on the GUI thread: no multisampling (4x made every frame 3-4x slower),
        one headlight instead of the five-light kit and a plain background (together half the
        frame again). Real GPUs keep the full look."""
        if self._tuned:
            return
        rw = self.plotter.render_window
        try:
            caps = rw.ReportCapabilities().lower()
        except Exception:  # no context yet on some platforms: the next render tries again
            return
        self._tuned = True
        self.software_gl = any(k in caps for k in ("llvmpipe", "softpipe", "swrast"))
        if self.software_gl:
            import pyvista as pv

            rw.SetMultiSamples(0)
            renderer = self.plotter.renderer
            renderer.remove_all_lights()
            renderer.add_light(pv.Light(light_type="headlight"))
            self.plotter.set_background(BACKGROUND[0])

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
        self.closing.emit()
        self._meshes.clear()
        if self._plotter is not None and not getattr(self._plotter, "_closed", True):
            if self.pick_action.isChecked():
                self.pick_action.setChecked(False)
            self.plotter.clear()
            self.plotter.close()
