"""The measuring tool of the 3D panel: click two points on a surface, read the distance in mm.

A checkable "Measure" action; while on, left clicks pick points on the scan or the crown
(the "Pick centre" tool is turned off meanwhile, they share the picker). The second point
draws a line between the two with its length as a label and emits :attr:`measured`; a third
click starts a new measurement, and so does showing another scan.
"""

from __future__ import annotations

import numpy as np
from PySide6 import QtCore, QtGui

from .viewer3d import Viewer3D

MEASURE_COLOR = (1.0, 0.95, 0.3)
ACTORS = ("measure", "measure_label-labels")  # pyvista names a label actor "<name>-labels"


class MeasureTool(QtCore.QObject):
    """Two picked points → their distance (mm), drawn as a labelled line in the view."""

    measured = QtCore.Signal(float)

    def __init__(self, viewer: Viewer3D) -> None:
        super().__init__(viewer)
        self.viewer = viewer
        self.points: list[np.ndarray] = []
        self.distance: float | None = None
        self._scan = None
        self.action = QtGui.QAction("Measure", self)
        self.action.setCheckable(True)
        self.action.setToolTip("Measure: click two points on the scan or the crown (mm)")
        self.action.toggled.connect(self._set_active)
        viewer.tools_toolbar.insertAction(viewer.pick_action, self.action)
        viewer.pick_action.toggled.connect(lambda on: on and self.action.setChecked(False))
        viewer.meshes_changed.connect(self._meshes_changed)

    def _set_active(self, on: bool) -> None:
        plotter = self.viewer.plotter
        if on:
            self.viewer.pick_action.setChecked(False)
            plotter.disable_picking()
            plotter.enable_surface_point_picking(
                callback=self.add_point,
                show_message=False,
                show_point=False,
                left_clicking=True,
                pickable_window=False,
            )
        elif not self.viewer.pick_action.isChecked():
            plotter.disable_picking()
        if not on:
            self.clear()

    def add_point(self, point) -> None:
        """Take one picked point (scan mm); the second of a pair completes a measurement."""
        if point is None:
            return
        if len(self.points) == 2:
            self.points = []
        self.points.append(np.asarray(point, dtype=np.float64).ravel()[:3])
        self.distance = None
        if len(self.points) == 2:
            self.distance = float(np.linalg.norm(self.points[1] - self.points[0]))
        self._draw()
        if self.distance is not None:
            self.measured.emit(self.distance)

    def clear(self) -> None:
        self.points = []
        self.distance = None
        if self.viewer._plotter is not None:
            self.viewer.plotter.remove_actor(list(ACTORS), render=False)
            self.viewer.render()

    def _meshes_changed(self) -> None:
        scan = self.viewer.mesh("scan")
        if scan is not self._scan:
            self._scan = scan
            if self.points:
                self.clear()

    def _draw(self) -> None:
        import pyvista as pv

        plotter = self.viewer.plotter
        plotter.remove_actor(list(ACTORS), render=False)
        pts = np.array(self.points)
        marks = pv.PolyData(pts)
        if self.distance is not None:
            marks.lines = np.array([2, 0, 1])
        plotter.add_mesh(
            marks,
            name="measure",
            color=MEASURE_COLOR,
            point_size=10,
            render_points_as_spheres=True,
            line_width=3,
            reset_camera=False,
            render=False,
            pickable=False,
        )
        if self.distance is not None:
            plotter.add_point_labels(
                [pts.mean(axis=0)],
                [f"{self.distance:.2f} mm"],
                name="measure_label",
                font_size=14,
                text_color="black",
                shape_color=MEASURE_COLOR,
                show_points=False,
                always_visible=True,
                reset_camera=False,
                render=False,
            )
        self.viewer.render()
