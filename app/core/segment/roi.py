"""Region of interest: find the stone model cheaply, so only that crop is segmented.

Two finders, both on the image downscaled by ``roi.downscale``:

- ``threshold`` (classical): the background colour is the median of a border band; each
  pixel's difference from it (:func:`colour_difference`: brightness and hue change) is split
  by hysteresis. The high threshold is Otsu's (never below :data:`MIN_CONTRAST` levels, so
  sensor noise on an empty frame finds nothing); the low one is twice the border band's 99th
  percentile (at least :data:`MIN_LOW`, at most :data:`LOW_FRACTION` of the high one), and keeps
  the dim, shaded walls that touch a strong region. A morphological close then open removes
  speckle; the box is the union of the kept components at least :data:`KEEP_FRACTION` of the
  largest one's area. Missing a part of the model is the costly error (its pixels would be
  lost), so every choice errs towards a larger box; and when one side's median colour is far
  from the background estimate (the model or another surface covers much of the border, so
  the estimate may be the model's own colour) the finder gives up and the full frame is used.
- ``model``: the same model run once on the downscaled image; the box of every pixel not of
  class 0 (background, as in mmseg datasets). No speckle removal: at this scale a thin part
  of the model is a pixel or two wide, and a stray pixel only makes the crop larger.
  It pays off for dynamic-size models only: a fixed-size model resizes the small image back up
  to its input, so the first pass costs as much as a full one.

:func:`expand_box` adds the margin, rounds the crop up to the size divisor and keeps it inside
the image. Boxes are ``(x0, y0, x1, y1)`` in source pixels, ``x1``/``y1`` exclusive.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from app.core.manifest import SegmentationModel
from app.core.segment.preprocess import round_up

Box = tuple[int, int, int, int]

MIN_CONTRAST = 12
LOW_FRACTION = 0.4
SIDE_FRACTION = 0.5
NOISE_FACTOR = 2.0
CHROMA_WEIGHT = 2.0
MIN_LOW = 6.0
KEEP_FRACTION = 0.1
BORDER_FRACTION = 0.03
MAX_FRACTION = 0.9
"""A crop covering more of the frame than this saves too little: segment the full frame."""


def downscaled(image_rgb: np.ndarray, downscale: int) -> np.ndarray:
    """Area-averaged copy, each side divided by ``downscale`` (at least 8 px)."""
    h, w = image_rgb.shape[:2]
    if downscale <= 1:
        return image_rgb
    size = (max(8, w // downscale), max(8, h // downscale))
    return cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA)


def _scale_box(box: Box, small: tuple[int, int], full: tuple[int, int]) -> Box:
    """Map a box on the downscaled image to source pixels (outward rounding)."""
    sy, sx = full[0] / small[0], full[1] / small[1]
    x0, y0, x1, y1 = box
    return (
        max(0, int(np.floor(x0 * sx))),
        max(0, int(np.floor(y0 * sy))),
        min(full[1], int(np.ceil(x1 * sx))),
        min(full[0], int(np.ceil(y1 * sy))),
    )


def _sides(a: np.ndarray) -> list[np.ndarray]:
    """Bands along the top, bottom, left and right borders."""
    h, w = a.shape[:2]
    b = max(1, int(round(min(h, w) * BORDER_FRACTION)))
    return [a[:b], a[-b:], a[:, :b], a[:, -b:]]


def _border_band(a: np.ndarray) -> np.ndarray:
    """Pixels of a band along the four borders, as rows of ``a``'s trailing shape."""
    return np.concatenate([side.reshape(-1, *a.shape[2:]) for side in _sides(a)])


def background_colour(small_rgb: np.ndarray) -> np.ndarray:
    """Median colour of a band along the four borders (float32 (3,))."""
    return np.median(_border_band(small_rgb), axis=0).astype(np.float32)


def colour_difference(small_rgb: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Per-pixel difference from the background colour, uint8: the larger of the brightest
    channel difference and :data:`CHROMA_WEIGHT` times the change in red-green or blue-green.

    Scanner plates are grey and their shading is achromatic, while shaded stone keeps its hue,
    so weighting the opponent-colour change finds the dark walls of a tinted model too.
    """
    d = small_rgb.astype(np.float32) - bg
    out = np.abs(d).max(axis=2)
    np.maximum(out, CHROMA_WEIGHT * np.abs(d[:, :, 0] - d[:, :, 1]), out=out)
    np.maximum(out, CHROMA_WEIGHT * np.abs(d[:, :, 2] - d[:, :, 1]), out=out)
    return np.clip(out, 0, 255).astype(np.uint8)


def foreground_threshold(small_rgb: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Boolean mask of pixels that differ from the border-estimated background colour.

    Returns ``(None, why)`` when the border is not one background: a side whose median colour
    differs from the others' by more than half the foreground threshold means the stone model
    (or a second surface) covers much of it, and the estimate cannot be trusted.
    """
    bg = background_colour(small_rgb)
    diff = colour_difference(small_rgb, bg)
    otsu, _ = cv2.threshold(diff, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    high_t = max(otsu, MIN_CONTRAST)
    names = ("top", "bottom", "left", "right")
    for name, side in zip(names, _sides(small_rgb), strict=True):
        med = np.median(side.reshape(-1, 3), axis=0).astype(np.uint8)
        off = int(colour_difference(med[None, None], bg)[0, 0])
        if off > max(SIDE_FRACTION * high_t, MIN_CONTRAST):
            return None, f"the {name} border is not background (differs by {off} levels)"
    noise = float(np.percentile(_border_band(diff), 99))
    low_t = min(max(NOISE_FACTOR * noise, MIN_LOW), LOW_FRACTION * high_t)
    high = diff > high_t
    low = (diff > low_t).astype(np.uint8)
    k = max(3, (min(small_rgb.shape[:2]) // 64) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    low = cv2.morphologyEx(low, cv2.MORPH_CLOSE, kernel)
    low = cv2.morphologyEx(low, cv2.MORPH_OPEN, kernel)
    n, comp = cv2.connectedComponents(low, connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(comp[high & (low > 0)])] = True
    keep[0] = False
    return keep[comp], ""


def mask_box(mask: np.ndarray, keep_fraction: float = KEEP_FRACTION) -> Box | None:
    """Union box of the components at least ``keep_fraction`` of the largest's area."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    comps = stats[1:]
    areas = comps[:, cv2.CC_STAT_AREA]
    keep = comps[areas >= keep_fraction * areas.max()]
    x0 = int(keep[:, cv2.CC_STAT_LEFT].min())
    y0 = int(keep[:, cv2.CC_STAT_TOP].min())
    x1 = int((keep[:, cv2.CC_STAT_LEFT] + keep[:, cv2.CC_STAT_WIDTH]).max())
    y1 = int((keep[:, cv2.CC_STAT_TOP] + keep[:, cv2.CC_STAT_HEIGHT]).max())
    return x0, y0, x1, y1


def find_box_threshold(image_rgb: np.ndarray, downscale: int) -> tuple[Box | None, str]:
    """Tight box of the stone model by the classical threshold method, or ``(None, why)``."""
    small = downscaled(image_rgb, downscale)
    mask, why = foreground_threshold(small)
    if mask is None:
        return None, why
    box = mask_box(mask)
    if box is None:
        return None, "nothing found"
    return _scale_box(box, small.shape[:2], image_rgb.shape[:2]), ""


def find_box_model(
    image_rgb: np.ndarray, downscale: int, segment: Callable[[np.ndarray], np.ndarray]
) -> tuple[Box | None, str]:
    """Tight box of non-background pixels from ``segment`` (labels of the downscaled image),
    or ``(None, why)``."""
    small = downscaled(image_rgb, downscale)
    labels = segment(small)
    box = mask_box(labels != 0, keep_fraction=0.0)
    if box is None:
        return None, "nothing found"
    return _scale_box(box, small.shape[:2], image_rgb.shape[:2]), ""


def expand_box(
    box: Box, image_size: tuple[int, int], roi_margin: float, min_margin_px: int, divisor: int
) -> Box:
    """Grow ``box`` by the margin on every side, round its size up to ``divisor``, keep it in
    the image (shifting it inwards rather than shrinking it; a side longer than the image
    becomes the whole side)."""
    h, w = image_size
    x0, y0, x1, y1 = box
    mx = max(roi_margin * (x1 - x0), min_margin_px)
    my = max(roi_margin * (y1 - y0), min_margin_px)
    out = []
    for lo, hi, m, size in ((x0, x1, mx, w), (y0, y1, my, h)):
        a = int(np.floor(lo - m))
        b = int(np.ceil(hi + m))
        length = round_up(b - a, divisor)
        if length >= size:
            out.append((0, size))
            continue
        centre_pad = length - (b - a)
        a -= centre_pad // 2
        a = min(max(a, 0), size - length)
        out.append((a, a + length))
    (ax, bx), (ay, by) = out
    return ax, ay, bx, by


def plan_roi(
    image_rgb: np.ndarray,
    model: SegmentationModel,
    segment_small: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[Box | None, str]:
    """The crop to segment and a note saying how it was chosen (or why the full frame is used).

    ``segment_small`` runs the model on an image and returns its labels (method ``model``).
    Returns ``(None, reason)`` when the full frame should be segmented.
    """
    roi = model.roi
    h, w = image_rgb.shape[:2]
    if roi.method == "model":
        if segment_small is None:
            raise ValueError("roi method 'model' needs a segment function")
        tight, why = find_box_model(image_rgb, roi.downscale, segment_small)
    else:
        tight, why = find_box_threshold(image_rgb, roi.downscale)
    if tight is None:
        return None, f"roi ({roi.method}): {why}; full frame segmented"
    box = expand_box(tight, (h, w), roi.margin, roi.min_margin_px, model.size_divisor)
    fraction = (box[2] - box[0]) * (box[3] - box[1]) / float(h * w)
    if fraction > MAX_FRACTION:
        return None, (
            f"roi ({roi.method}): box covers {fraction:.1%} of the frame "
            f"(over {MAX_FRACTION:.0%}); full frame segmented"
        )
    return box, f"roi ({roi.method}): crop covers {fraction:.0%} of the frame"
