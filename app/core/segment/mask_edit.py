"""Hand corrections of a label mask: brush strokes with undo, saved beside the model's mask.

A technician paints class ids over the model's mask (the eraser paints background, class 0);
the corrected mask is written as ``<image stem>_mask_corrected.png`` next to the model's
``<image stem>_mask.png``, as an 8-bit palette PNG with the model's palette, through a temp
file and a rename. The model's mask and the case's inputs are never written. Qt-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.core.segment.imageio import save_label_png

if TYPE_CHECKING:
    from app.core.workspace import Case

BACKGROUND = 0
CORRECTED_SUFFIX = "_corrected"


def corrected_mask_path(model_mask: Path) -> Path:
    """Where the corrected copy of ``model_mask`` goes: beside it, ``_corrected`` added."""
    model_mask = Path(model_mask)
    return model_mask.with_name(f"{model_mask.stem}{CORRECTED_SUFFIX}.png")


def disc_points(start: tuple[float, float], end: tuple[float, float], radius: float) -> np.ndarray:
    """Dab centres (x, y) from ``start`` to ``end``, close enough that the discs leave no gap."""
    a, b = np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64)
    steps = max(1, int(np.ceil(np.linalg.norm(b - a) / max(radius / 2.0, 0.5))))
    return a + (b - a) * np.linspace(0.0, 1.0, steps + 1)[:, None]


@dataclass
class _Change:
    """What a stroke replaced: the old values of its bounding box (rows y0:y1, cols x0:x1)."""

    y0: int
    x0: int
    old: np.ndarray


class MaskEdits:
    """An editable copy of one mask with per-stroke undo.

    ``labels`` is the mask as edited; ``original`` the model's, untouched. A stroke runs from
    :meth:`begin_stroke` through :meth:`paint` calls to :meth:`end_stroke`, and :meth:`undo`
    takes back one whole stroke.
    """

    def __init__(self, labels: np.ndarray, n_classes: int) -> None:
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.dtype != np.uint8:
            raise ValueError(f"labels must be (H, W) uint8, got {labels.shape} {labels.dtype}")
        self.original = labels
        self.labels = labels.copy()
        self.n_classes = n_classes
        self.version = 0
        """Counts strokes and undos: a saved copy is current while the count is unchanged."""
        self._undo: list[_Change] = []
        self._before: np.ndarray | None = None
        self._last: tuple[float, float] | None = None

    @property
    def changed(self) -> bool:
        """True when the mask differs from the model's."""
        return not np.array_equal(self.labels, self.original)

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    def begin_stroke(self) -> None:
        self._before = self.labels.copy()
        self._last = None

    def paint(self, x: float, y: float, radius: float, class_id: int) -> None:
        """Paint a disc of ``radius`` pixels at image position (x, y), joined to the last dab."""
        if not 0 <= class_id < self.n_classes:
            raise ValueError(f"class {class_id} is not one of the {self.n_classes} classes")
        if self._before is None:
            self.begin_stroke()
        start = self._last if self._last is not None else (x, y)
        h, w = self.labels.shape
        r = max(float(radius), 0.5)
        for cx, cy in disc_points(start, (x, y), r):
            x0, x1 = max(int(np.floor(cx - r)), 0), min(int(np.ceil(cx + r)) + 1, w)
            y0, y1 = max(int(np.floor(cy - r)), 0), min(int(np.ceil(cy + r)) + 1, h)
            if x0 >= x1 or y0 >= y1:
                continue
            yy, xx = np.ogrid[y0:y1, x0:x1]
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            self.labels[y0:y1, x0:x1][inside] = class_id
        self._last = (x, y)

    def end_stroke(self) -> bool:
        """Close the stroke; returns whether it changed anything (only then can it be undone)."""
        before, self._before, self._last = self._before, None, None
        if before is None:
            return False
        rows, cols = np.nonzero(before != self.labels)
        if len(rows) == 0:
            return False
        y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        self._undo.append(_Change(int(y0), int(x0), before[y0:y1, x0:x1].copy()))
        self.version += 1
        return True

    def undo(self) -> bool:
        """Take back the last stroke; False when there is none."""
        if not self._undo:
            return False
        c = self._undo.pop()
        h, w = c.old.shape
        self.labels[c.y0 : c.y0 + h, c.x0 : c.x0 + w] = c.old
        self.version += 1
        return True


def save_corrected_mask(
    model_mask: Path,
    labels: np.ndarray,
    palette: Sequence[tuple[int, int, int]],
    inputs: Sequence[Path] = (),
) -> Path:
    """Write ``labels`` beside ``model_mask`` as its corrected copy; returns the path written.

    Refuses a target that is the model's mask or one of ``inputs`` (the case's scan and images).
    """
    model_mask = Path(model_mask)
    target = corrected_mask_path(model_mask)
    save_label_png(
        target, np.ascontiguousarray(labels, dtype=np.uint8), palette, [model_mask, *inputs]
    )
    return target


def corrected_masks(case: Case) -> tuple[str, ...]:
    """The corrected masks of ``case`` made for its current run, as paths in its folder.

    A corrected mask older than the model's mask it corrects was made for an earlier run and
    is left out (the re-run replaced the mask it was painted over).
    """
    out = []
    for image in case.images:
        model_mask = case.mask_path(image)
        corrected = corrected_mask_path(model_mask)
        try:
            if corrected.stat().st_mtime_ns >= model_mask.stat().st_mtime_ns:
                out.append(corrected.relative_to(case.folder).as_posix())
        except OSError:
            continue
    return tuple(out)
