"""The QA aids wired into the window: distance map, measuring tool and mask correction.

:func:`install_qa_aids` is the window's one hook: it builds the tools on the two panels,
puts the 3D ones in the View menu and routes their messages to the status bar.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .distance_map import DistanceMap
from .mask_editor import MaskEditor
from .measure_tool import MeasureTool

if TYPE_CHECKING:
    from .main_window import MainWindow


@dataclass
class QaAids:
    distances: DistanceMap
    measure: MeasureTool
    masks: MaskEditor


def install_qa_aids(win: MainWindow) -> QaAids:
    """Add the QA aids to ``win``'s panels and View menu."""

    def mask_path(image: Path) -> Path | None:
        case = win.cases.get(win.current or "")
        return None if case is None or image not in case.images else case.mask_path(image)

    def inputs() -> tuple[Path, ...]:
        case = win.cases.get(win.current or "")
        return () if case is None else case.inputs

    aids = QaAids(
        distances=DistanceMap(win.viewer3d, lambda: win.settings.distance_limits()),
        measure=MeasureTool(win.viewer3d),
        masks=MaskEditor(win.viewer2d, mask_path, inputs),
    )
    aids.distances.failed.connect(lambda text: win.message(f"Distance map not made: {text}"))
    aids.measure.measured.connect(lambda mm: win.message(f"Measured: {mm:.2f} mm"))
    aids.masks.failed.connect(lambda text: win.message(f"Corrected mask NOT saved: {text}"))
    aids.masks.saved.connect(
        lambda _image, path: win.message(
            f"Corrected mask saved: {path.name} (recorded with the case's next decision)"
        )
    )
    view_menu = next(
        (a.menu() for a in win.menuBar().actions() if a.text().replace("&", "") == "View"), None
    )
    if view_menu is not None:
        view_menu.addSeparator()
        for act in (*aids.distances.actions.values(), aids.measure.action):
            view_menu.addAction(act)
    return aids
