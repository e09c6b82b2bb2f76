"""The case list: one row per case with its status; the error text on hover.

A case being run shows a progress ring in place of its status dot, a queued case an empty
dashed ring, so the technician sees the work going on while looking at other cases.
"""

from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets

from app.core.workspace import CaseStatus

STATUS_COLORS: dict[CaseStatus, str] = {
    CaseStatus.NEW: "#9aa3ad",
    CaseStatus.RUNNING: "#4aa3ff",
    CaseStatus.GENERATED: "#e0b84a",
    CaseStatus.APPROVED: "#4cbf6b",
    CaseStatus.REJECTED: "#e05555",
    CaseStatus.NEEDS_REWORK: "#e08a3c",
    CaseStatus.INPUTS_CHANGED: "#b48ae0",
    CaseStatus.ERROR: "#d0342c",
}


def status_icon(status: CaseStatus) -> QtGui.QIcon:
    pm = QtGui.QPixmap(12, 12)
    pm.fill(QtCore.Qt.GlobalColor.transparent)
    p = QtGui.QPainter(pm)
    p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    p.setBrush(QtGui.QColor(STATUS_COLORS[status]))
    p.setPen(QtCore.Qt.PenStyle.NoPen)
    p.drawEllipse(1, 1, 10, 10)
    p.end()
    return QtGui.QIcon(pm)


def activity_icon(state: str, fraction: float = 0.0) -> QtGui.QIcon:
    """A ring: filled clockwise to ``fraction`` while running, dashed and empty while queued."""
    pm = QtGui.QPixmap(14, 14)
    pm.fill(QtCore.Qt.GlobalColor.transparent)
    p = QtGui.QPainter(pm)
    p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    rect = QtCore.QRectF(2, 2, 10, 10)
    track = QtGui.QPen(QtGui.QColor(STATUS_COLORS[CaseStatus.NEW]), 2)
    if state == "queued":
        track.setStyle(QtCore.Qt.PenStyle.DotLine)
    else:
        track.setColor(QtGui.QColor("#4a525c"))  # dim, so the filled part reads as progress
    p.setPen(track)
    p.drawEllipse(rect)
    if state == "running":
        p.setPen(QtGui.QPen(QtGui.QColor(STATUS_COLORS[CaseStatus.RUNNING]), 2.5))
        span = max(0.04, min(1.0, fraction))
        p.drawArc(rect, 90 * 16, -int(span * 360 * 16))
    p.end()
    return QtGui.QIcon(pm)


class CaseList(QtWidgets.QTreeWidget):
    """Emits ``case_selected(name)`` when the technician picks a case."""

    case_selected = QtCore.Signal(str)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setColumnCount(2)
        self.setHeaderLabels(["Case", "Status"])
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.SingleSelection)
        header = self.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QtWidgets.QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QtWidgets.QHeaderView.ResizeMode.ResizeToContents)
        self._items: dict[str, QtWidgets.QTreeWidgetItem] = {}
        self._filter = ""
        self._icons = {s: status_icon(s) for s in CaseStatus}
        self._activity: dict[str, tuple[str, int]] = {}
        self._errors: dict[str, str | None] = {}
        self.currentItemChanged.connect(self._changed)

    def set_cases(self, rows: list[tuple[str, CaseStatus, str | None]]) -> None:
        self.blockSignals(True)
        self.clear()
        self._items = {}
        self._activity = {}
        for name, status, error in rows:
            item = QtWidgets.QTreeWidgetItem([name, status.value])
            item.setData(0, QtCore.Qt.ItemDataRole.UserRole, name)
            self._items[name] = item
            self.addTopLevelItem(item)
            self.update_case(name, status, error)
        self.blockSignals(False)

    def update_case(self, name: str, status: CaseStatus, error: str | None = None) -> None:
        item = self._items.get(name)
        if item is None:
            return
        item.setText(1, status.value)
        self._errors[name] = error
        state = self._activity.get(name)
        if state is None:
            item.setIcon(1, self._icons[status])
        tip = f"{name}: {status.value}" + (f"\n{error}" if error else "")
        if state is not None:
            tip += "\n" + (f"running, {state[1]} %" if state[0] == "running" else "queued to run")
        item.setToolTip(0, tip)
        item.setToolTip(1, tip)
        color = QtGui.QColor(STATUS_COLORS[status]) if status is CaseStatus.ERROR else None
        item.setForeground(1, QtGui.QBrush(color) if color else QtGui.QBrush())
        self._apply_filter(name, item)

    def set_activity(self, name: str, state: str | None, fraction: float = 0.0) -> None:
        """Show ``name`` as ``"running"`` (ring filled to ``fraction``), ``"queued"``, or, with
        None, by its status again."""
        item = self._items.get(name)
        if item is None:
            return
        if state is None:
            self._activity.pop(name, None)
            self.update_case(name, CaseStatus(item.text(1)), self._errors.get(name))
            return
        shown = (state, int(100 * max(0.0, min(1.0, fraction))))
        if self._activity.get(name) == shown:
            return
        self._activity[name] = shown
        item.setIcon(1, activity_icon(state, fraction))
        self.update_case(name, CaseStatus(item.text(1)), self._errors.get(name))

    def activity(self, name: str) -> str | None:
        """``"running"``, ``"queued"`` or None: what the row shows of the work on the case."""
        state = self._activity.get(name)
        return None if state is None else state[0]

    def set_filter(self, text: str) -> None:
        """Show only the cases whose name or status contains ``text`` (case-insensitive)."""
        self._filter = text.strip().lower()
        for name, item in self._items.items():
            self._apply_filter(name, item)

    def _apply_filter(self, name: str, item: QtWidgets.QTreeWidgetItem) -> None:
        f = self._filter
        item.setHidden(bool(f) and f not in name.lower() and f not in item.text(1).lower())

    def status_text(self, name: str) -> str:
        return self._items[name].text(1)

    def tooltip(self, name: str) -> str:
        return self._items[name].toolTip(1)

    def names(self) -> list[str]:
        return list(self._items)

    def select(self, name: str) -> None:
        item = self._items.get(name)
        if item is not None:
            self.setCurrentItem(item)

    def current_name(self) -> str | None:
        item = self.currentItem()
        return None if item is None else item.data(0, QtCore.Qt.ItemDataRole.UserRole)

    def _changed(self, current: QtWidgets.QTreeWidgetItem | None, _prev: object) -> None:
        if current is not None:
            self.case_selected.emit(current.data(0, QtCore.Qt.ItemDataRole.UserRole))
