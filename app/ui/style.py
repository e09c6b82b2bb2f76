"""The application's look: Fusion with a dark palette plus ``resources/style.qss``."""

from __future__ import annotations

from PySide6 import QtGui, QtWidgets

from app.core.paths import install_root


def dark_palette() -> QtGui.QPalette:
    p = QtGui.QPalette()
    c = QtGui.QColor
    role = QtGui.QPalette.ColorRole
    p.setColor(role.Window, c(45, 48, 53))
    p.setColor(role.WindowText, c(225, 228, 232))
    p.setColor(role.Base, c(33, 36, 40))
    p.setColor(role.AlternateBase, c(40, 43, 48))
    p.setColor(role.ToolTipBase, c(250, 250, 240))
    p.setColor(role.ToolTipText, c(20, 20, 20))
    p.setColor(role.Text, c(225, 228, 232))
    p.setColor(role.Button, c(55, 59, 65))
    p.setColor(role.ButtonText, c(225, 228, 232))
    p.setColor(role.Highlight, c(58, 120, 190))
    p.setColor(role.HighlightedText, c(255, 255, 255))
    p.setColor(role.Link, c(110, 170, 240))
    p.setColor(role.PlaceholderText, c(130, 136, 144))
    disabled = QtGui.QPalette.ColorGroup.Disabled
    for r in (role.Text, role.ButtonText, role.WindowText):
        p.setColor(disabled, r, c(120, 125, 132))
    return p


def app_icon() -> QtGui.QIcon:
    return QtGui.QIcon(str(install_root() / "resources" / "icons" / "crownscan.svg"))


def apply_style(app: QtWidgets.QApplication) -> None:
    app.setStyle("Fusion")
    app.setWindowIcon(app_icon())
    app.setPalette(dark_palette())
    qss = install_root() / "resources" / "style.qss"
    if qss.is_file():
        app.setStyleSheet(qss.read_text(encoding="utf-8"))
