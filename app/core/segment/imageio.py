"""Model-scan image loading and label-mask (palette PNG) reading and writing.

Every image the pipeline sees is ``uint8 (H, W, 3)`` in **RGB** order, whatever the file held:

- EXIF orientation is applied (``ImageOps.exif_transpose``); an unreadable EXIF block is ignored
  and the pixels are used as stored.
- 16-bit samples keep their high byte (``v >> 8``). That is what Pillow does for 16-bit RGB and
  what OpenCV's ``imread`` (and so mmseg's training loader) does for 16-bit PNG, so gray and
  colour 16-bit files get one treatment. It differs from the rounded ``v / 257`` (and from
  OpenCV's 16-bit TIFF path, which rounds ``v / 256``) by at most one level. Pillow's 32-bit
  integer mode is read as 16-bit when its values fit (older Pillow opens 16-bit gray that way);
  wider integer and floating-point images are refused.
- Alpha is dropped, not composited: OpenCV's ``IMREAD_COLOR`` drops it too, so the model sees
  the colours it was trained on; transparent pixels keep the colour stored under them.
- Gray, palette, CMYK (Adobe-inverted JPEG included) and bilevel images go through Pillow's own
  conversion to RGB; no ICC colour management is applied. Multi-page TIFF: the first page.

Label masks are 8-bit palette PNGs written with Pillow: pixel value = class id, palette entry
``i`` = colour of class ``i``. OpenCV must not be used for them (``cv2.imread`` returns the palette
colours and loses the ids; ``cv2.imwrite`` writes no palette). See ``docs/masks.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.core.errors import InputError
from app.core.fileio import atomic_write, check_not_input

FORMATS = ("PNG", "JPEG", "MPO", "BMP", "TIFF")
"""Pillow format names accepted as model-scan images (MPO: a JPEG from some cameras)."""
MIN_SIDE = 16
MAX_SIDE = 20000
MAX_PIXELS = 50_000_000
"""Larger images are refused from their header, before decoding (peak memory: docs/errors.md)."""


def _open(path: Path) -> Image.Image:
    """Open ``path`` with Pillow and decode its pixels, or raise :class:`InputError`."""
    if not path.exists():
        raise InputError(path, "file does not exist")
    if not path.is_file():
        raise InputError(path, "is not a file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except UnidentifiedImageError as exc:
        raise InputError(
            path, "not an image file Crownscan can read (PNG, JPEG, BMP, TIFF)"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise InputError(path, f"image is too large to process ({exc})") from exc
    except OSError as exc:
        raise InputError(path, f"cannot read file: {exc.strerror or exc}") from exc
    if im.format not in FORMATS:
        im.close()
        raise InputError(path, f"{im.format} images are not supported (PNG, JPEG, BMP, TIFF)")
    w, h = im.size
    if w < MIN_SIDE or h < MIN_SIDE:
        im.close()
        raise InputError(path, f"image is {w}x{h} pixels; at least {MIN_SIDE}x{MIN_SIDE} needed")
    if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        im.close()
        raise InputError(
            path,
            f"image is {w}x{h} pixels; at most {MAX_SIDE} per side and "
            f"{MAX_PIXELS // 1_000_000} megapixels are accepted",
        )
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        im.close()
        raise InputError(path, f"image data is truncated or corrupt ({exc})") from exc
    return im


def _to_rgb8(im: Image.Image, path: Path) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im)
        if mode == "I" and (a.min() < 0 or a.max() > 65535):
            raise InputError(path, "32-bit integer images are not supported (8 or 16 bits only)")
        g = (a.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    if mode == "F":
        raise InputError(path, "floating-point images are not supported (8 or 16 bits only)")
    if mode == "L":
        g = np.asarray(im)
        return np.repeat(g[:, :, None], 3, axis=2)
    if mode == "RGB":
        return np.array(im)
    if mode == "RGBA":
        return np.ascontiguousarray(np.asarray(im)[:, :, :3])
    if mode == "P" and "transparency" in im.info:
        return np.ascontiguousarray(np.asarray(im.convert("RGBA"))[:, :, :3])
    try:
        return np.array(im.convert("RGB"))
    except (ValueError, OSError) as exc:
        raise InputError(path, f"cannot convert {mode} image to RGB ({exc})") from exc


def load_image(path: str | Path) -> np.ndarray:
    """Load a model-scan image as ``uint8 (H, W, 3)`` RGB with its EXIF orientation applied.

    Raises :class:`InputError` naming the file when it is missing, empty, not a PNG/JPEG/BMP/TIFF
    image, truncated or corrupt, smaller than 16x16 or larger than 20000 px a side / 50 MP
    (both checked from the header, before decoding).
    """
    path = Path(path)
    im = _open(path)
    try:
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # a malformed EXIF block: orientation unknown, use pixels as stored
            pass
        rgb = _to_rgb8(im, path)
    finally:
        im.close()
    return np.ascontiguousarray(rgb)


def save_label_png(
    path: str | Path,
    labels: np.ndarray,
    palette: Sequence[tuple[int, int, int]],
    inputs: Sequence[str | Path] = (),
) -> None:
    """Write ``labels`` (H, W) uint8 class ids as an 8-bit palette PNG, atomically.

    Palette entry ``i`` is ``palette[i]``; the rest of the 256 entries are black, so the file is
    always 8 bits per pixel. Refuses to write over any of ``inputs``.
    """
    path = Path(path)
    check_not_input(path, [Path(p) for p in inputs])
    atomic_write(path, label_png_writer(labels, palette))


def label_png_writer(
    labels: np.ndarray, palette: Sequence[tuple[int, int, int]]
) -> Callable[[Path], None]:
    """A function writing ``labels`` as the palette PNG :func:`save_label_png` makes to the
    path it is given (checks done now, before anything is written)."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise ValueError(f"labels must be (H, W) uint8, got {labels.shape} {labels.dtype}")
    if not 1 <= len(palette) <= 256:
        raise ValueError(f"palette must have 1 to 256 colours, got {len(palette)}")
    if labels.size and int(labels.max()) >= len(palette):
        raise ValueError(f"label {int(labels.max())} has no palette colour ({len(palette)} given)")
    flat = np.zeros((256, 3), np.uint8)
    flat[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    im = Image.fromarray(np.ascontiguousarray(labels))
    im.putpalette(flat.tobytes(), rawmode="RGB")
    return lambda tmp: im.save(tmp, format="PNG", compress_level=3)


def read_label_png(path: str | Path) -> np.ndarray:
    """Read a label mask written by :func:`save_label_png` (or any palette/gray PNG) as class ids.

    Returns ``uint8 (H, W)``. A colour (RGB) image is not a label mask: :class:`InputError`.
    """
    path = Path(path)
    im = _open(path)
    try:
        if im.mode not in ("P", "L"):
            raise InputError(
                path, f"not a label mask: mode {im.mode} (a palette or gray 8-bit PNG is needed)"
            )
        return np.array(im, dtype=np.uint8)
    finally:
        im.close()


def read_label_palette(path: str | Path) -> list[tuple[int, int, int]]:
    """The 256 palette colours of a palette PNG (entry ``i`` is the colour of class ``i``)."""
    path = Path(path)
    im = _open(path)
    try:
        if im.mode != "P":
            raise InputError(path, f"not a palette image: mode {im.mode}")
        raw = np.asarray(im.getpalette("RGB") or [], np.uint8).reshape(-1, 3)
        return [tuple(int(v) for v in c) for c in raw]
    finally:
        im.close()
