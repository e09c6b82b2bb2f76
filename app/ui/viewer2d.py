"""The 2D panel: a strip of the case's model-scan images and a zoomable view with the mask.

The overlay itself is computed by ``app.core.segment.overlay.overlay``; this widget only holds
the controls (opacity, fill / contour, per-class visibility) and shows the picture. The
composition runs on a pool thread (tens of ms for a scanner photo, more under load): a new
image shows at once without its mask, the overlay follows; a change of the controls keeps the
last picture until the new one is ready.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from .workers import lower_thread_priority

THUMB = 96


@dataclass
class ImageEntry:
    """One image of a case as the panel shows it (arrays built in a worker)."""

    path: Path
    rgb: np.ndarray
    labels: np.ndarray | None = None
    roi_box: tuple[int, int, int, int] | None = None
    thumb: np.ndarray | None = None


def make_thumb(rgb: np.ndarray, size: int = THUMB) -> np.ndarray:
    """A small copy for the strip (plain striding; it is only a thumbnail)."""
    step = max(1, int(np.ceil(max(rgb.shape[:2]) / size)))
    return np.ascontiguousarray(rgb[::step, ::step])


@dataclass
class Composition:
    """One composition of an image with its mask, made on a pool thread."""

    key: int
    done: threading.Event = field(default_factory=threading.Event)
    image: np.ndarray | None = None
    qimage: QtGui.QImage | None = None
    text: str = ""
    error: Exception | None = None


def _size_text(entry: ImageEntry) -> str:
    return f"{entry.path.name}  {entry.rgb.shape[1]}×{entry.rgb.shape[0]}"


def _roi_text(entry: ImageEntry) -> str:
    return "  (ROI crop used: dashed box)" if entry.roi_box is not None else ""


def compose(
    entry: ImageEntry,
    palette: Sequence[tuple[int, int, int]],
    class_names: Sequence[str],
    alpha: float,
    mode: str,
    visible: list[bool] | None,
    thickness: int,
) -> tuple[np.ndarray, str]:
    """The image with its mask drawn over it, and the info line with each class's share."""
    from app.core.segment.overlay import overlay

    extra = {"thickness": thickness} if mode == "contour" else {}
    img = overlay(
        entry.rgb, entry.labels, palette, alpha=alpha, mode=mode, visible=visible, **extra
    )
    counts = np.bincount(entry.labels.ravel(), minlength=len(palette))
    parts = [
        f"{n}: {100.0 * c / entry.labels.size:.1f}%"
        for n, c in zip(class_names, counts, strict=False)
        if n != "background"
    ]
    return img, f"{_size_text(entry)}  " + "  ".join(parts) + _roi_text(entry)


def to_qimage(rgb: np.ndarray) -> QtGui.QImage:
    arr = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = arr.shape[:2]
    return QtGui.QImage(arr.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888).copy()


class ImageView(QtWidgets.QGraphicsView):
    """Pannable (drag) and zoomable (wheel, about the cursor) view of one picture."""

    zoom_changed = QtCore.Signal(float)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setScene(QtWidgets.QGraphicsScene(self))
        self.pixmap_item = QtWidgets.QGraphicsPixmapItem()
        self.pixmap_item.setTransformationMode(QtCore.Qt.TransformationMode.SmoothTransformation)
        self.scene().addItem(self.pixmap_item)
        pen = QtGui.QPen(QtGui.QColor(60, 200, 255), 3)
        pen.setCosmetic(True)
        pen.setStyle(QtCore.Qt.PenStyle.DashLine)
        self.roi_item = QtWidgets.QGraphicsRectItem()
        self.roi_item.setPen(pen)
        self.roi_item.setZValue(1)
        self.roi_item.hide()
        self.scene().addItem(self.roi_item)
        self.setDragMode(QtWidgets.QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QtWidgets.QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QtWidgets.QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setBackgroundBrush(QtGui.QColor(40, 42, 46))
        self.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform)
        self._fit = True

    def set_image(self, image: QtGui.QImage | None) -> None:
        if image is None:  # nothing of the last picture stays: no zoom, no scroll range
            self.pixmap_item.setPixmap(QtGui.QPixmap())
            self.roi_item.hide()
            self.resetTransform()
            self.scene().setSceneRect(QtCore.QRectF(0, 0, 1, 1))
            self._fit = True
            return
        first = self.pixmap_item.pixmap().size() != image.size()
        self.pixmap_item.setPixmap(QtGui.QPixmap.fromImage(image))
        self.scene().setSceneRect(QtCore.QRectF(image.rect()))
        if first or self._fit:
            self.fit()

    def set_roi(self, box: tuple[int, int, int, int] | None) -> None:
        if box is None:
            self.roi_item.hide()
        else:
            x0, y0, x1, y1 = box
            self.roi_item.setRect(QtCore.QRectF(x0, y0, x1 - x0, y1 - y0))
            self.roi_item.show()

    def scale_factor(self) -> float:
        return float(self.transform().m11())

    def fit(self) -> None:
        self._fit = True
        if not self.pixmap_item.pixmap().isNull():
            self.fitInView(self.pixmap_item, QtCore.Qt.AspectRatioMode.KeepAspectRatio)
        self.zoom_changed.emit(self.scale_factor())

    def one_to_one(self) -> None:
        self._fit = False
        self.setTransform(QtGui.QTransform())
        self.zoom_changed.emit(1.0)

    def zoom_by(self, factor: float, at: QtCore.QPointF | None = None) -> None:
        """Zoom by ``factor``, keeping the image point under viewport position ``at`` (default:
        the centre) where it is, as far as the scroll range allows."""
        new = self.scale_factor() * factor
        if not 0.02 <= new <= 40.0:
            return
        self._fit = False
        vp = self.viewport().rect()
        at = at if at is not None else QtCore.QPointF(vp.center())
        before = self.mapToScene(at.toPoint())
        self.setTransformationAnchor(QtWidgets.QGraphicsView.ViewportAnchor.NoAnchor)
        self.scale(factor, factor)
        after = self.mapToScene(at.toPoint())
        shift = after - before
        h, v = self.horizontalScrollBar(), self.verticalScrollBar()
        h.setValue(h.value() - round(shift.x() * new))
        v.setValue(v.value() - round(shift.y() * new))
        self.setTransformationAnchor(QtWidgets.QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.zoom_changed.emit(self.scale_factor())

    def wheelEvent(self, event: QtGui.QWheelEvent) -> None:  # noqa: N802 (Qt name)
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(1.25**steps, event.position())
        event.accept()

    def resizeEvent(self, event: QtGui.QResizeEvent) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self._fit:
            self.fit()


class Viewer2D(QtWidgets.QWidget):
    """Thumbnail strip, image view with overlay, and the overlay controls with a class legend."""

    classes_changed = QtCore.Signal()
    _composed = QtCore.Signal(object)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.entries: list[ImageEntry] = []
        self.palette: list[tuple[int, int, int]] = []
        self.class_names: list[str] = []
        self._composite: np.ndarray | None = None
        self._drawn: ImageEntry | None = None
        self._pending: Composition | None = None
        self._keys = itertools.count()
        self._pool = QtCore.QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._composed.connect(self._apply, QtCore.Qt.ConnectionType.QueuedConnection)

        self.strip = QtWidgets.QListWidget()
        self.strip.setViewMode(QtWidgets.QListView.ViewMode.IconMode)
        self.strip.setFlow(QtWidgets.QListView.Flow.LeftToRight)
        self.strip.setWrapping(False)
        self.strip.setMovement(QtWidgets.QListView.Movement.Static)
        self.strip.setIconSize(QtCore.QSize(THUMB, THUMB))
        self.strip.setFixedHeight(THUMB + 30)
        self.strip.setHorizontalScrollBarPolicy(QtCore.Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.strip.currentRowChanged.connect(self._show_current)

        self.view = ImageView()
        self.opacity = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(50)
        self.opacity.setFixedWidth(80)
        self.opacity.setToolTip("Overlay opacity")
        self.mode = QtWidgets.QComboBox()
        self.mode.addItems(["fill", "contour"])
        self.mode.setToolTip("Overlay mode")
        fit = QtWidgets.QToolButton()
        fit.setText("Fit")
        fit.clicked.connect(self.view.fit)
        one = QtWidgets.QToolButton()
        one.setText("1:1")
        one.clicked.connect(self.view.one_to_one)
        self.zoom_label = QtWidgets.QLabel("")
        self.zoom_label.setMinimumWidth(48)
        self.view.zoom_changed.connect(lambda z: self.zoom_label.setText(f"{z * 100:.0f}%"))
        self.class_checks: list[QtWidgets.QCheckBox] = []
        self.info = QtWidgets.QLabel("")
        self.info.setObjectName("imageInfo")

        controls = QtWidgets.QToolBar("Overlay")
        controls.addWidget(self.opacity)
        controls.addWidget(self.mode)
        controls.addSeparator()
        controls.addWidget(fit)
        controls.addWidget(one)
        controls.addWidget(self.zoom_label)
        self.legend_toolbar = QtWidgets.QToolBar("Classes")
        self.legend_toolbar.setToolTip("Classes shown in the overlay")
        self._legend_actions: list[QtGui.QAction] = []
        bars = QtWidgets.QVBoxLayout()
        bars.setContentsMargins(0, 0, 0, 0)
        bars.setSpacing(0)
        bars.addWidget(controls)
        bars.addWidget(self.legend_toolbar)
        self.tool_bars = bars

        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        lay.addWidget(self.strip)
        lay.addLayout(bars)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.info)

        self.opacity.valueChanged.connect(self.refresh)
        self.mode.currentTextChanged.connect(self.refresh)
        self._thickness = 0
        self._rezoom = QtCore.QTimer(self)
        self._rezoom.setSingleShot(True)
        self._rezoom.setInterval(150)
        self._rezoom.timeout.connect(self._zoom_settled)
        self.view.zoom_changed.connect(lambda _z: self._rezoom.start())

    def _contour_thickness(self) -> int:
        """Contour lines about two screen pixels wide at the current zoom."""
        return max(2, round(2.0 / max(self.view.scale_factor(), 1e-3)))

    def _zoom_settled(self) -> None:
        if self.mode.currentText() == "contour" and self._contour_thickness() != self._thickness:
            self.refresh()

    # --- content -----------------------------------------------------------------------------

    def set_classes(self, names: Sequence[str], palette: Sequence[tuple[int, int, int]]) -> None:
        if list(names) == self.class_names and list(palette) == self.palette:
            return
        self.class_names, self.palette = list(names), [tuple(c) for c in palette]
        for act in self._legend_actions:
            self.legend_toolbar.removeAction(act)
        for cb in self.class_checks:
            cb.deleteLater()
        self.class_checks = []
        self._legend_actions = []
        for name, (r, g, b) in zip(self.class_names, self.palette, strict=True):
            cb = QtWidgets.QCheckBox(name)
            cb.setChecked(name != "background")
            pm = QtGui.QPixmap(12, 12)
            pm.fill(QtGui.QColor(r, g, b))
            cb.setIcon(QtGui.QIcon(pm))
            cb.setToolTip(f"show {name} (colour {r}, {g}, {b})")
            cb.toggled.connect(self.refresh)
            self._legend_actions.append(self.legend_toolbar.addWidget(cb))
            self.class_checks.append(cb)
        self.classes_changed.emit()

    def set_overlay_defaults(self, opacity: float, mode: str) -> None:
        self.opacity.setValue(round(opacity * 100))
        self.mode.setCurrentText(mode)

    def set_images(self, entries: Sequence[ImageEntry], keep_row: bool = False) -> None:
        row = self.strip.currentRow() if keep_row else 0
        self.entries = list(entries)
        self.strip.blockSignals(True)
        self.strip.clear()
        for e in self.entries:
            thumb = e.thumb if e.thumb is not None else make_thumb(e.rgb)
            item = QtWidgets.QListWidgetItem(
                QtGui.QIcon(QtGui.QPixmap.fromImage(to_qimage(thumb))), e.path.name
            )
            item.setToolTip(str(e.path))
            self.strip.addItem(item)
        self.strip.blockSignals(False)
        if self.entries:
            self.strip.setCurrentRow(min(max(row, 0), len(self.entries) - 1))
            self._show_current(self.strip.currentRow())
        else:
            self.clear_view("no images in this case")

    def clear(self, message: str = "") -> None:
        self.entries = []
        self.strip.clear()
        self.clear_view(message)

    def clear_view(self, message: str = "") -> None:
        self._pending = self._drawn = self._composite = None
        self.view.set_image(None)
        self.zoom_label.setText("")
        self.info.setText(message)

    @property
    def composite(self) -> np.ndarray | None:
        """The picture shown (image with overlay); waits for a composition under way."""
        job = self._pending
        if job is not None:
            job.done.wait()
            self._apply(job)
        return self._composite

    def shutdown(self) -> None:
        """Drop a composition under way and wait for its thread (at window close)."""
        self._pending = None
        self._pool.waitForDone()

    def current_entry(self) -> ImageEntry | None:
        row = self.strip.currentRow()
        return self.entries[row] if 0 <= row < len(self.entries) else None

    def _show_current(self, row: int) -> None:
        self.refresh()

    def visible_classes(self) -> list[bool]:
        return [cb.isChecked() for cb in self.class_checks]

    def refresh(self) -> None:
        """Recompose the selected image with its mask under the current controls."""
        entry = self.current_entry()
        if entry is None:
            self.clear_view(self.info.text())
            return
        if entry is not self._drawn:  # a new image shows at once; its overlay follows
            self._drawn = entry
            self.view.set_image(to_qimage(entry.rgb))
            self.view.set_roi(entry.roi_box if entry.labels is not None else None)
            self.info.setText(_size_text(entry) + _roi_text(entry) * (entry.labels is not None))
        if entry.labels is None or not self.palette:
            self._pending, self._composite = None, entry.rgb
            self.info.setText(f"{_size_text(entry)}  (no mask yet)")
            return
        visible = self.visible_classes()
        mode = self.mode.currentText()
        if mode == "contour":
            self._thickness = self._contour_thickness()
        args = (
            entry,
            list(self.palette),
            list(self.class_names),
            self.opacity.value() / 100,
            mode,
            visible if len(visible) == len(self.palette) else None,
            self._thickness,
        )
        job = self._pending = Composition(next(self._keys))
        self._pool.start(lambda: self._compose(job, args))

    def _compose(self, job: Composition, args: tuple) -> None:
        """Runs on the pool: compose unless a newer request replaced this one meanwhile."""
        lower_thread_priority()
        try:
            if job is self._pending:
                job.image, job.text = compose(*args)
                job.qimage = to_qimage(job.image)
        except Exception as exc:  # raised again on the GUI thread, where it is reported
            job.error = exc
        finally:
            job.done.set()
            try:
                self._composed.emit(job)
            except RuntimeError:  # the panel is gone
                pass

    def _apply(self, job: Composition) -> None:
        if job is not self._pending or job.image is None and job.error is None:
            return
        self._pending = None
        if job.error is not None:
            raise job.error
        self._composite = job.image
        self.view.set_image(job.qimage)
        self.info.setText(job.text)
