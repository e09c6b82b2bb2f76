"""The case list: one row per case with its status; the error text on hover."""

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
        self.currentItemChanged.connect(self._changed)

    def set_cases(self, rows: list[tuple[str, CaseStatus, str | None]]) -> None:
        self.blockSignals(True)
        self.clear()
        self._items = {}
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
        item.setIcon(1, self._icons[status])
        tip = f"{name}: {status.value}" + (f"\n{error}" if error else "")
        item.setToolTip(0, tip)
        item.setToolTip(1, tip)
        color = QtGui.QColor(STATUS_COLORS[status]) if status is CaseStatus.ERROR else None
        item.setForeground(1, QtGui.QBrush(color) if color else QtGui.QBrush())
        self._apply_filter(name, item)

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
