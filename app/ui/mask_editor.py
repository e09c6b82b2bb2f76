"""Brush and eraser on the 2D panel: correct a model's mask by hand and save it beside the model's.

A toolbar under the overlay controls: Brush / Eraser (exclusive, off = pan and zoom as
usual), the class the brush paints, its radius in image pixels, Undo (one stroke, Ctrl+Z
while the panel has focus) and Save mask. Edits are kept per image in a
:class:`~app.core.segment.mask_edit.MaskEdits` and shown at once; Save writes the corrected
mask through :func:`~app.core.segment.mask_edit.save_corrected_mask`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from app.core.errors import CrownscanError
from app.core.segment.mask_edit import BACKGROUND, MaskEdits, save_corrected_mask

from .viewer2d import ImageEntry, Viewer2D

DEFAULT_RADIUS = 12


class MaskEditor(QtCore.QObject):
    """Paints on the shown image's mask; ``mask_path(image)`` names the model's mask of an image
    and ``inputs()`` the files a save must never write (the case's scan and images)."""

    saved = QtCore.Signal(object, object)
    """(image path, corrected mask path) after a save."""
    failed = QtCore.Signal(str)
    """Why a save did not happen."""

    def __init__(
        self,
        viewer: Viewer2D,
        mask_path: Callable[[Path], Path | None],
        inputs: Callable[[], Sequence[Path]] = tuple,
    ) -> None:
        super().__init__(viewer)
        self.viewer = viewer
        self.mask_path = mask_path
        self.inputs = inputs
        self.edits: dict[Path, MaskEdits] = {}
        self.saved_versions: dict[Path, int] = {}
        self._stroke: MaskEdits | None = None
        self._refresh_pending = False

        bar = QtWidgets.QToolBar("Mask edit")
        self.group = QtGui.QActionGroup(self)
        self.group.setExclusionPolicy(QtGui.QActionGroup.ExclusionPolicy.ExclusiveOptional)
        self.brush_action = self._tool(bar, "Brush", "Paint the chosen class over the mask")
        self.eraser_action = self._tool(bar, "Eraser", "Paint background over the mask")
        self.class_combo = QtWidgets.QComboBox()
        self.class_combo.setToolTip("Class the brush paints")
        self.class_combo.setMaximumWidth(76)
        bar.addWidget(self.class_combo)
        self.radius_spin = QtWidgets.QSpinBox()
        self.radius_spin.setRange(1, 200)
        self.radius_spin.setValue(DEFAULT_RADIUS)
        self.radius_spin.setSuffix(" px")
        self.radius_spin.setToolTip("Brush radius in image pixels")
        self.radius_spin.setMaximumWidth(60)
        bar.addWidget(self.radius_spin)
        icon = viewer.style().standardIcon
        pixmaps = QtWidgets.QStyle.StandardPixmap
        self.undo_action = QtGui.QAction(icon(pixmaps.SP_ArrowBack), "Undo", self)
        bar.addAction(self.undo_action)
        self.undo_action.setShortcut(QtGui.QKeySequence.StandardKey.Undo)
        self.undo_action.setShortcutContext(QtCore.Qt.ShortcutContext.WidgetWithChildrenShortcut)
        self.undo_action.setToolTip("Undo the last stroke (Ctrl+Z)")
        self.undo_action.triggered.connect(self.undo)
        viewer.addAction(self.undo_action)
        self.save_action = QtGui.QAction(icon(pixmaps.SP_DialogSaveButton), "Save mask", self)
        bar.addAction(self.save_action)
        self.save_action.setToolTip(
            "Save the corrected mask beside the model's (<image>_mask_corrected.png);"
            " the model's mask is kept, the next decision records it"
        )
        self.save_action.triggered.connect(self.save)
        bar.setToolButtonStyle(QtCore.Qt.ToolButtonStyle.ToolButtonTextOnly)
        for act in (self.undo_action, self.save_action):
            bar.widgetForAction(act).setToolButtonStyle(
                QtCore.Qt.ToolButtonStyle.ToolButtonIconOnly
            )
        self.state = QtWidgets.QLabel("")  # below the bar: it would push Save out of a narrow one
        self.state.hide()
        viewer.tool_bars.addWidget(bar)
        viewer.tool_bars.addWidget(self.state)
        self.toolbar = bar

        viewer.classes_changed.connect(self._fill_classes)
        viewer.strip.currentRowChanged.connect(lambda _row: self._update())
        viewer.view.viewport().installEventFilter(self)
        self._fill_classes()
        self._update()

    def _say(self, text: str) -> None:
        self.state.setText(text)
        self.state.setVisible(bool(text))

    def _tool(self, bar: QtWidgets.QToolBar, text: str, tip: str) -> QtGui.QAction:
        act = QtGui.QAction(text, self)  # owned here: the view's filter reads them to the end
        bar.addAction(act)
        act.setCheckable(True)
        act.setToolTip(tip)
        act.toggled.connect(self._tool_toggled)
        self.group.addAction(act)
        return act

    def _fill_classes(self) -> None:
        current = self.class_combo.currentIndex()
        self.class_combo.clear()
        for name, (r, g, b) in zip(self.viewer.class_names, self.viewer.palette, strict=False):
            pm = QtGui.QPixmap(12, 12)
            pm.fill(QtGui.QColor(r, g, b))
            self.class_combo.addItem(QtGui.QIcon(pm), name)
        if self.class_combo.count():
            fallback = 1 if self.class_combo.count() > 1 else 0
            self.class_combo.setCurrentIndex(current if current >= 0 else fallback)

    # --- state -------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.brush_action.isChecked() or self.eraser_action.isChecked()

    def paint_class(self) -> int:
        """The class id a stroke paints now: the chosen class, background for the eraser."""
        return BACKGROUND if self.eraser_action.isChecked() else self.class_combo.currentIndex()

    def current_edits(self) -> MaskEdits | None:
        """The edits of the image shown, made on first use; None when it has no mask."""
        entry = self.viewer.current_entry()
        if entry is None or entry.labels is None or not self.viewer.palette:
            return None
        edits = self.edits.get(entry.path)
        if edits is None or edits.labels is not entry.labels:
            edits = MaskEdits(entry.labels, len(self.viewer.palette))
            self.edits[entry.path] = edits
            self.saved_versions.pop(entry.path, None)
            entry.labels = edits.labels
        return edits

    def _tool_toggled(self) -> None:
        drag = QtWidgets.QGraphicsView.DragMode
        self.viewer.view.setDragMode(drag.NoDrag if self.active else drag.ScrollHandDrag)
        self._update()

    def _update(self) -> None:
        entry = self.viewer.current_entry()
        edits = self.edits.get(entry.path) if entry is not None else None
        if edits is not None and entry is not None and edits.labels is not entry.labels:
            edits = None
        self.undo_action.setEnabled(edits is not None and edits.can_undo)
        unsaved = (
            edits is not None
            and entry is not None
            and edits.version != self.saved_versions.get(entry.path, 0)
        )
        self.save_action.setEnabled(unsaved)
        if entry is not None and entry.labels is None and self.active:
            self._say("no mask to correct")
        elif unsaved:
            self._say("edited, not saved")
        elif entry is not None and entry.path in self.saved_versions:
            self._say("corrected mask saved")
        else:
            self._say("")

    # --- painting ----------------------------------------------------------------------------

    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802
        if not self.active:
            return False
        kind = event.type()
        Type = QtCore.QEvent.Type
        if kind not in (Type.MouseButtonPress, Type.MouseMove, Type.MouseButtonRelease):
            return False
        assert isinstance(event, QtGui.QMouseEvent)
        left = QtCore.Qt.MouseButton.LeftButton
        point = self.viewer.view.mapToScene(event.position().toPoint())
        if kind == Type.MouseButtonPress and event.button() == left:
            self.begin_stroke()
            self.paint_at(point.x(), point.y())
            return True
        if kind == Type.MouseMove and self._stroke is not None and event.buttons() & left:
            self.paint_at(point.x(), point.y())
            return True
        if kind == Type.MouseButtonRelease and event.button() == left:
            self.end_stroke()
            return True
        return False

    def begin_stroke(self) -> None:
        self._stroke = self.current_edits()
        if self._stroke is not None:
            self._stroke.begin_stroke()
        self._update()

    def paint_at(self, x: float, y: float) -> None:
        """One dab at scene (= image) position (x, y), pixel centres at half-integers."""
        if self._stroke is None:
            return
        self._stroke.paint(x - 0.5, y - 0.5, self.radius_spin.value(), self.paint_class())
        self._schedule_refresh()

    def end_stroke(self) -> None:
        if self._stroke is not None:
            self._stroke.end_stroke()
        self._stroke = None
        self._update()

    def undo(self) -> None:
        edits = self.current_edits()
        if edits is not None and edits.undo():
            self._schedule_refresh()
        self._update()

    def _schedule_refresh(self) -> None:
        if not self._refresh_pending:
            self._refresh_pending = True
            QtCore.QTimer.singleShot(0, self._refresh_now)

    def _refresh_now(self) -> None:
        self._refresh_pending = False
        self.viewer.refresh()

    # --- saving ------------------------------------------------------------------------------

    def save(self) -> Path | None:
        """Write the shown image's corrected mask beside the model's; None when nothing to save."""
        entry: ImageEntry | None = self.viewer.current_entry()
        edits = self.edits.get(entry.path) if entry is not None else None
        if entry is None or edits is None or edits.labels is not entry.labels:
            return None
        model_mask = self.mask_path(entry.path)
        if model_mask is None:
            return None
        try:
            path = save_corrected_mask(model_mask, edits.labels, self.viewer.palette, self.inputs())
        except CrownscanError as exc:
            self._say("NOT saved")
            self.failed.emit(str(exc))
            return None
        self.saved_versions[entry.path] = edits.version
        self._update()
        self.saved.emit(entry.path, path)
        return path
