"""Case-frame editing for the window: pick a centre, propose or find the frame, correct it.

Each change is stored in the QA database at once and shown on the scan; locating runs in a
worker and its answer is applied only while the case it was asked for is still shown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PySide6 import QtCore

from app.core.crown.frame import CaseFrame, FrameTransform
from app.core.errors import CrownscanError
from app.core.manifest import Frame

from .workers import Tag, failure_text

if TYPE_CHECKING:
    from .main_window import MainWindow

FINE_TURN_DEG = 5.0
LOCATE_KINDS = ("propose", "find")
FRAME_SOURCES = {
    "picked": "picked centre, model's axes",
    "proposed": "proposed from the picked point",
    "found": "found automatically",
    "given": "given (command line or earlier version)",
    "default": "model default",
}
"""How the Details pane names where a case frame came from."""


@dataclass(frozen=True)
class LocateProblem:
    """Why the preparation could not be located (a ``LocateError`` message for the technician)."""

    text: str


def vec_text(v: np.ndarray | tuple[float, ...]) -> str:
    """A direction rounded for the technician."""
    return "(" + ", ".join(f"{round(float(x), 2) + 0.0:+.2f}" for x in v) + ")"


def scan_arrays(poly: Any) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) and triangles (F, 3) of a shown scan, copied so a worker may own them."""
    vertices = np.array(poly.points, dtype=np.float64)
    faces = np.array(poly.faces, dtype=np.int64).reshape(-1, 4)[:, 1:] if poly.n_cells else None
    return vertices, np.empty((0, 3), np.int64) if faces is None else faces


class FrameController(QtCore.QObject):
    """Places, proposes, finds and corrects the case frame of the shown case."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.win = window
        self.locate_tag: Tag | None = None
        window.runner.done.connect(self._on_done)
        window.runner.failed.connect(self._on_failed)

    def locating(self, name: str) -> bool:
        """True while the frame of ``name`` is being proposed or found."""
        return self.locate_tag is not None and self.locate_tag.case == name

    def frame_transform(self, name: str) -> FrameTransform | None:
        """The map into the crown model's cube for case ``name`` as its next run will build it
        (from the shown scan and the case frame); None while the scan or model is missing."""
        view = self.win.shown
        if self.win.crown_model is None or view is None or view.case != name or view.scan is None:
            return None
        from app.core.crown.frame import make_frame

        return make_frame(
            np.asarray(view.scan.points), self.win.crown_model.frame, case=self.win.frames.get(name)
        )

    def case_frame(self, name: str) -> CaseFrame | None:
        """The stored frame of ``name``, else the model's default placed on the shown scan."""
        if name in self.win.frames:
            return self.win.frames[name]
        t = self.frame_transform(name)
        return None if t is None else CaseFrame(tuple(float(v) for v in t.center))

    def frame_axes(self, name: str) -> np.ndarray | None:
        """Rows (mesial, buccolingual, occlusal) in scan mm of the frame ``name`` runs with."""
        cf = self.case_frame(name)
        if cf is None or self.win.crown_model is None:
            return None
        return cf.axes(self.win.crown_model.frame)

    def show_frame(self) -> None:
        name = self.win.current
        t = self.frame_transform(name) if name else None
        axes = self.frame_axes(name) if t is not None else None
        if t is None or axes is None:
            self.win.viewer3d.set_frame(None)
            self.win.viewer3d.set_view_axes(None)
            return
        self.win.viewer3d.set_frame(
            t.corners_mm(), occlusal=axes[2], mesial=axes[0], marked=name in self.win.frames
        )
        stored = self.win.frames.get(name)
        turned_frame = stored is not None and stored.occlusal is not None
        self.win.viewer3d.set_view_axes(axes if turned_frame else None)

    def _apply_frame(self, name: str, frame: CaseFrame | None, source: str, text: str) -> bool:
        """Store ``frame`` for ``name`` (None: back to the model's default), show it, say so."""
        if self.win.store is None:
            return False
        try:
            self.win.store.set_frame(name, frame, source)
        except CrownscanError as exc:
            self.win.message(str(exc))
            return False
        if frame is None:
            self.win.frames.pop(name, None)
            self.win.frame_sources.pop(name, None)
        else:
            self.win.frames[name] = frame
            self.win.frame_sources[name] = source
        if name == self.win.current:
            self.show_frame()
            self.win.show_details()
        self.win.message(text)
        return True

    def set_centre(self, point: tuple[float, float, float] | None) -> None:
        """Centre the case frame on ``point`` (mm, picked on the preparation) and propose its
        directions there in a worker; None goes back to the model's default frame."""
        name = self.win.current
        if name is None or self.win.store is None:
            return
        if point is None:
            self.clear_frame()
            return
        self.cancel_locate()
        centre = tuple(float(v) for v in point)
        x, y, z = centre
        text = f"{name}: centre picked at ({x:.1f}, {y:.1f}, {z:.1f}) mm; proposing the frame…"
        if self._apply_frame(name, CaseFrame(centre), "picked", text):
            self._start_locate(name, "propose", centre)

    def clear_frame(self) -> None:
        """Forget the current case's frame: its runs use the model's default frame again."""
        name = self.win.current
        if name is None:
            return
        self.cancel_locate()
        self._apply_frame(name, None, "default", f"{name}: case frame back to the model's default")

    def find_preparation(self) -> None:
        """Look for the preparation on the whole scan (no click) in a worker."""
        name = self.win.current
        if name is not None and self._start_locate(name, "find"):
            self.win.message(f"{name}: looking for the preparation…")

    def _start_locate(
        self, name: str, kind: str, point: tuple[float, float, float] | None = None
    ) -> bool:
        view = self.win.shown
        if view is None or view.case != name or view.scan is None:
            self.win.message(f"{name}: the scan is not shown yet")
            return False
        vertices, faces = scan_arrays(view.scan)
        self.cancel_locate()
        self.locate_tag = self.win.new_tag(kind, name)

        def job(token, progress):
            import importlib

            locate = importlib.import_module("app.core.crown.locate")
            try:
                if point is None:
                    return locate.find_preparation(vertices, faces)
                return locate.propose_frame(vertices, faces, point)
            except locate.LocateError as exc:
                return LocateProblem(str(exc))

        self.win.runner.submit(self.locate_tag, job)
        return True

    def cancel_locate(self) -> None:
        self.win.runs.after_locate = None
        if self.locate_tag is not None:
            self.win.runner.cancel(self.locate_tag)
            self.locate_tag = None

    def _on_located(self, tag: Tag, result: Any) -> None:
        if tag != self.locate_tag or tag.case != self.win.current:
            return
        self.locate_tag = None
        name = tag.case
        if isinstance(result, LocateProblem) or not isinstance(result, CaseFrame):
            what = "propose the frame" if tag.kind == "propose" else "find the preparation"
            why = result.text if isinstance(result, LocateProblem) else "no frame came back"
            self._locate_failed(tag, f"could not {what}: {why}")
            return
        source = "proposed" if tag.kind == "propose" else "found"
        o = vec_text(result.occlusal) if result.occlusal is not None else "(model's axis)"
        text = f"{name}: frame {FRAME_SOURCES[source]}, occlusal {o}; check it, then run"
        self._apply_frame(name, result, source, text)
        self.win.frame_located.emit(name, source)
        self.win.runs.run_if_waiting(name)

    def _locate_failed(self, tag: Tag, text: str) -> None:
        kept = "the picked centre is kept" if tag.kind == "propose" else "the frame is unchanged"
        self.win.last_outcome[tag.case] = f"{text} ({kept})"
        self.win.message(f"{tag.case}: {text}; {kept}")
        self.win.show_details()
        self.win.frame_located.emit(tag.case, "problem")
        self.win.runs.run_if_waiting(tag.case)

    def flip_occlusal(self) -> None:
        """Turn the frame upside down: the occlusal direction points the other way."""
        self._adjust("occlusal direction flipped", lambda f, m: f.flipped(m))

    def turn_frame(self, degrees: float) -> None:
        """Turn the box about the occlusal axis (positive: counter-clockwise seen from above)."""
        self._adjust(
            f"box turned {degrees:+g}° about the occlusal axis", lambda f, m: f.turned(m, degrees)
        )

    def align_occlusal_to_view(self) -> None:
        """Occlusal := towards the camera, for a view looking down onto the occlusal surface."""
        d = self.win.viewer3d.view_direction()
        self._adjust("occlusal aligned to the view", lambda f, m: f.with_occlusal(m, d))

    def _adjust(self, what: str, change: Callable[[CaseFrame, Frame], CaseFrame]) -> None:
        """Replace the current case's frame by ``change(frame, model_frame)``."""
        name = self.win.current
        frame = self.case_frame(name) if name is not None else None
        if name is None or frame is None or self.win.crown_model is None:
            if name is not None:
                self.win.message(f"{name}: no frame to adjust (no scan shown or no crown model)")
            return
        self.cancel_locate()
        new = change(frame, self.win.crown_model.frame)
        base = self.win.frame_sources.get(name, "default").removesuffix("+adjusted")
        text = f"{name}: {what}; occlusal {vec_text(new.occlusal)}; run again"
        self._apply_frame(name, new, base + "+adjusted", text)

    def frame_rows(self, name: str) -> list[tuple[str, str]]:
        """Details rows: where the frame came from, its centre and its directions."""
        stored = name in self.win.frames
        if not stored and self.win.crown_model is None:
            return []
        source = self.win.frame_sources.get(name, "given" if stored else "default")
        base, _, adjusted = source.partition("+")
        label = FRAME_SOURCES.get(base, base) + (", adjusted by hand" if adjusted else "")
        if base == "default":
            label += " (scan bounding box, model's axes)"
        rows = [("Case frame", label)]
        cf = self.case_frame(name)
        if cf is not None:
            x, y, z = cf.center
            rows.append(("Frame centre", f"({x:.1f}, {y:.1f}, {z:.1f}) mm"))
        axes = self.frame_axes(name)
        if axes is not None:
            rows += [("Occlusal", vec_text(axes[2])), ("Mesio-distal", vec_text(axes[0]))]
        return rows

    def _on_done(self, tag: Tag, result: Any) -> None:
        if tag.kind in LOCATE_KINDS:
            self._on_located(tag, result)

    def _on_failed(self, tag: Tag, exc: object, tb: str) -> None:
        if tag.kind in LOCATE_KINDS and tag == self.locate_tag:
            self.locate_tag = None
            logging.getLogger("crownscan").error("locating on %s failed:\n%s", tag.case, tb)
            self._locate_failed(tag, failure_text(exc))


__all__ = ["FRAME_SOURCES", "FrameController", "scan_arrays", "vec_text"]
