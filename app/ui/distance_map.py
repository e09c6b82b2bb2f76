"""The distance colour map on the crown: proximal contacts or occlusal clearance, with a legend.

Two exclusive checkable actions ("Contacts", "Clearance") behind one "Distances" button in
the 3D panel's display toolbar (it names the map shown). The
distances come from :func:`app.core.distances.crown_distances`, computed in a worker for the
crown and scan shown (in the case frame's axes when one is drawn, else the scan's own: +X
mesio-distal, +Z occlusal) and kept on the crown as point arrays ``proximal_mm`` and
``occlusal_mm``; the viewer then only recolours the crown.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from app.core.distances import (
    CrownDistances,
    DistanceLimits,
    band_colors,
    crown_distances,
    occlusal_bands,
    proximal_bands,
)

from .viewer3d import TOOTH_COLOR, Viewer3D
from .workers import Tag, TaskRunner

DEFAULT_AXES = (np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]))
MODES = {"proximal": "Contacts", "occlusal": "Clearance"}
TIPS = {
    "proximal": "Colour the crown by its distance to the neighbours (proximal contacts, mm)",
    "occlusal": "Colour the crown by its distance to the antagonist (occlusal clearance, mm)",
}


class DistanceMap(QtCore.QObject):
    """Owns the map's actions and worker; recomputes when the crown or the scan changes."""

    computed = QtCore.Signal()
    failed = QtCore.Signal(str)

    def __init__(self, viewer: Viewer3D, limits: Callable[[], DistanceLimits]) -> None:
        super().__init__(viewer)
        self.viewer = viewer
        self.limits = limits
        self.distances: CrownDistances | None = None
        self._runner = TaskRunner(self, threads=1)
        self._runner.done.connect(self._on_done)
        self._runner.failed.connect(lambda _tag, exc, _tb: self.failed.emit(str(exc)))
        self._gens = itertools.count(1)
        self._tag: Tag | None = None
        self.group = QtGui.QActionGroup(self)
        self.group.setExclusionPolicy(QtGui.QActionGroup.ExclusionPolicy.ExclusiveOptional)
        self.actions: dict[str, QtGui.QAction] = {}
        for mode, text in MODES.items():
            act = QtGui.QAction(text, self)
            act.setCheckable(True)
            act.setToolTip(TIPS[mode])
            act.toggled.connect(self._mode_toggled)
            self.group.addAction(act)
            self.actions[mode] = act
        menu = QtWidgets.QMenu(viewer)
        menu.addActions(list(self.actions.values()))
        self.button = QtWidgets.QToolButton()
        self.button.setText("Distances")
        self.button.setToolTip("Colour the crown by its distance to the neighbours or antagonist")
        self.button.setMenu(menu)
        self.button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        viewer.tools_toolbar.addSeparator()
        viewer.tools_toolbar.addWidget(self.button)
        viewer.meshes_changed.connect(self._meshes_changed)
        viewer.closing.connect(self.shutdown)

    @property
    def mode(self) -> str | None:
        """ "proximal", "occlusal", or None when the map is off."""
        return next((m for m, a in self.actions.items() if a.isChecked()), None)

    def set_mode(self, mode: str | None) -> None:
        for m, act in self.actions.items():
            act.setChecked(m == mode)

    def _mode_toggled(self) -> None:
        self.button.setText(MODES.get(self.mode or "", "Distances"))
        if self.mode is None:
            self._show()
        elif self.distances is None:
            self.compute()
        else:
            self._show()

    def _meshes_changed(self) -> None:
        crown = self.viewer.mesh("crown")
        if self.distances is not None and (crown is None or "proximal_mm" not in crown.point_data):
            self.distances = None
            if self.viewer.crown_colors is not None:
                self.viewer.paint_crown(None)  # never the old crown's colours on a new one
            if self.mode is not None:
                self.compute()

    def compute(self) -> None:
        """Start computing the distances of the crown shown (a worker; colours when done)."""
        crown, scan = self.viewer.mesh("crown"), self.viewer.mesh("scan")
        if crown is None or scan is None:
            self.viewer.paint_crown(None)
            self.viewer.set_legend(None)
            return
        mesial, occlusal = self.viewer.frame_directions or DEFAULT_AXES
        crown_pts = np.asarray(crown.points, dtype=np.float64)
        scan_pts = np.asarray(scan.points, dtype=np.float64)
        scan_faces = np.asarray(scan.regular_faces)
        self._tag = Tag("distances", "", next(self._gens))
        self._runner.submit(
            self._tag,
            lambda token, progress: (
                crown,
                crown_distances(crown_pts, scan_pts, scan_faces, mesial, occlusal),
            ),
        )

    def _on_done(self, tag: Tag, result: tuple) -> None:
        crown, distances = result
        if tag != self._tag or crown is not self.viewer.mesh("crown"):
            return
        crown.point_data.set_array(distances.proximal, "proximal_mm")
        crown.point_data.set_array(distances.occlusal, "occlusal_mm")
        self.distances = distances
        self._show()
        self.computed.emit()

    def _show(self) -> None:
        mode = self.mode
        if mode is None or self.distances is None:
            self.viewer.paint_crown(None)
            self.viewer.set_legend(None)
            return
        limits = self.limits()
        bands = proximal_bands(limits) if mode == "proximal" else occlusal_bands(limits)
        values = getattr(self.distances, mode)
        base = tuple(int(c * 255) for c in TOOTH_COLOR)
        self.viewer.paint_crown(band_colors(values, bands, base))
        title = "Distance to neighbours" if mode == "proximal" else "Distance to antagonist"
        self.viewer.set_legend(title, [(b.label, b.color) for b in bands])

    def refresh(self) -> None:
        """Recolour with the current limits (after the settings changed)."""
        self._show()

    def shutdown(self) -> None:
        self._runner.shutdown()
