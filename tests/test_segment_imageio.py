"""Image loading of every kind a lab camera or export may produce, and palette-PNG masks."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from app.core.errors import InputError
from app.core.segment.imageio import (
    load_image,
    read_label_palette,
    read_label_png,
    save_label_png,
)


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    img[:8, :8] = (255, 0, 0)
    return img


def test_png_rgb_8bit_is_returned_in_rgb_order(tmp_path, rgb):
    p = tmp_path / "a.png"
    Image.fromarray(rgb).save(p)
    out = load_image(p)
    assert out.dtype == np.uint8 and out.shape == (40, 56, 3)
    np.testing.assert_array_equal(out, rgb)
    assert tuple(out[0, 0]) == (255, 0, 0)


def test_png_gray_8bit_becomes_three_equal_channels(tmp_path, rgb):
    g = rgb[:, :, 1]
    p = tmp_path / "g.png"
    Image.fromarray(g).save(p)
    out = load_image(p)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], g)


def test_png_gray_16bit_keeps_the_high_byte(tmp_path):
    g = (np.arange(40 * 56, dtype=np.uint32).reshape(40, 56) * 29 % 65536).astype(np.uint16)
    p = tmp_path / "g16.png"
    assert cv2.imwrite(str(p), g)
    out = load_image(p)
    np.testing.assert_array_equal(out[:, :, 0], (g >> 8).astype(np.uint8))
    np.testing.assert_array_equal(out[:, :, 2], (g >> 8).astype(np.uint8))


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_rgb_16bit_keeps_the_high_byte_like_opencv(tmp_path, ext):
    a = (np.arange(40 * 56 * 3, dtype=np.uint32).reshape(40, 56, 3) * 37 % 65536).astype(np.uint16)
    p = tmp_path / f"c16{ext}"
    assert cv2.imwrite(str(p), a[:, :, ::-1])
    out = load_image(p)
    np.testing.assert_array_equal(out, (a >> 8).astype(np.uint8))
    if ext == ".png":
        np.testing.assert_array_equal(out, cv2.imread(str(p), cv2.IMREAD_COLOR)[:, :, ::-1])


def test_tiff_gray_16bit(tmp_path):
    g = np.linspace(0, 65535, 40 * 56).astype(np.uint16).reshape(40, 56)
    p = tmp_path / "g16.tif"
    Image.fromarray(g).save(p)
    assert Image.open(p).mode.startswith("I;16")
    out = load_image(p)
    np.testing.assert_array_equal(out[:, :, 1], (g >> 8).astype(np.uint8))
    assert out[-1, -1, 0] == 255


def test_png_rgba_drops_alpha(tmp_path, rgb):
    a = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    a[0, 0, 3] = 0
    p = tmp_path / "a.png"
    Image.fromarray(a, "RGBA").save(p)
    np.testing.assert_array_equal(load_image(p), rgb)


def test_palette_png_gives_the_palette_colours(tmp_path):
    ids = (np.arange(40 * 56).reshape(40, 56) % 3).astype(np.uint8)
    im = Image.fromarray(ids)
    im.putpalette([10, 20, 30, 200, 100, 50, 0, 255, 0])
    p = tmp_path / "p.png"
    im.save(p)
    out = load_image(p)
    lut = np.array([[10, 20, 30], [200, 100, 50], [0, 255, 0]], np.uint8)
    np.testing.assert_array_equal(out, lut[ids])


def test_palette_png_with_transparency(tmp_path):
    ids = (np.arange(40 * 56).reshape(40, 56) % 2).astype(np.uint8)
    im = Image.fromarray(ids)
    im.putpalette([10, 20, 30, 200, 100, 50])
    im.info["transparency"] = 0
    p = tmp_path / "pt.png"
    im.save(p, transparency=0)
    out = load_image(p)
    assert tuple(out[0, 0]) == (10, 20, 30) and tuple(out[0, 1]) == (200, 100, 50)


@pytest.mark.parametrize("fmt,ext,tol", [("JPEG", ".jpg", 6), ("TIFF", ".tif", 0)])
def test_cmyk(tmp_path, fmt, ext, tol):
    cmyk = np.zeros((40, 56, 4), np.uint8)
    cmyk[:, :28] = (0, 255, 255, 0)  # red
    cmyk[:, 28:] = (255, 255, 0, 0)  # blue
    im = Image.fromarray(cmyk, "CMYK")
    p = tmp_path / f"cmyk{ext}"
    im.save(p, format=fmt, quality=95)
    assert Image.open(p).mode == "CMYK"
    out = load_image(p).astype(int)
    assert np.abs(out[20, 10] - (255, 0, 0)).max() <= tol
    assert np.abs(out[20, 45] - (0, 0, 255)).max() <= tol


def test_bmp(tmp_path, rgb):
    p = tmp_path / "a.bmp"
    Image.fromarray(rgb).save(p)
    np.testing.assert_array_equal(load_image(p), rgb)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    img = np.zeros((40, 64, 3), np.uint8)
    img[:, :32] = (250, 250, 250)  # white left half as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    p = tmp_path / "rot.jpg"
    Image.fromarray(img).save(p, exif=exif.tobytes(), quality=95)
    out = load_image(p)
    assert out.shape == (64, 40, 3)
    assert out[5, 20].mean() > 200 and out[60, 20].mean() < 50  # white half now on top


def test_jpeg_without_exif_keeps_its_shape(tmp_path, rgb):
    p = tmp_path / "plain.jpg"
    Image.fromarray(rgb).save(p, quality=95)
    assert load_image(p).shape == rgb.shape


def _error(path) -> str:
    with pytest.raises(InputError) as err:
        load_image(path)
    assert err.value.path == path
    return err.value.message


def test_truncated_png(tmp_path, rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    p = tmp_path / "cut.png"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert "truncated" in _error(p)


def test_truncated_jpeg(tmp_path, rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert "truncated" in _error(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    assert "empty" in _error(p)


def test_text_file_renamed_png(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is not an image\n")
    assert "not an image" in _error(p)


def test_missing_file(tmp_path):
    assert "does not exist" in _error(tmp_path / "nope.png")


def test_one_pixel_image(tmp_path):
    p = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(p)
    assert "1x1" in _error(p)


def test_absurdly_large_image_is_refused_before_decoding(tmp_path):
    p = tmp_path / "huge.png"
    Image.new("L", (30000, 16)).save(p)
    msg = _error(p)
    assert "30000x16" in msg


def test_unsupported_format(tmp_path, rgb):
    p = tmp_path / "a.gif"
    Image.fromarray(rgb).save(p)
    assert "GIF" in _error(p)


def test_label_png_round_trip_keeps_ids_and_palette(tmp_path):
    labels = (np.arange(30 * 50).reshape(30, 50) % 3).astype(np.uint8)
    palette = [(0, 0, 0), (230, 120, 120), (240, 230, 140)]
    p = tmp_path / "mask.png"
    save_label_png(p, labels, palette)
    with Image.open(p) as im:
        assert im.mode == "P"
        np.testing.assert_array_equal(np.array(im), labels)
        got = np.asarray(im.getpalette("RGB"), np.uint8).reshape(-1, 3)[:3]
    np.testing.assert_array_equal(got, np.array(palette, np.uint8))
    np.testing.assert_array_equal(read_label_png(p), labels)
    assert read_label_palette(p)[:3] == palette


def test_opencv_loses_the_class_ids_of_a_palette_png(tmp_path):
    """What docs/masks.md warns about: cv2.imread returns colours, not ids."""
    labels = np.array([[0, 1, 2, 1]] * 16 * 4, np.uint8).reshape(16, 16)
    palette = [(0, 0, 0), (230, 120, 120), (240, 230, 140)]
    p = tmp_path / "mask.png"
    save_label_png(p, labels, palette)
    bgr = cv2.imread(str(p))
    assert bgr.ndim == 3
    np.testing.assert_array_equal(bgr[0, 1], (120, 120, 230))
    q = tmp_path / "cv.png"
    cv2.imwrite(str(q), labels)
    with Image.open(q) as im:
        assert im.mode == "L"


def test_save_label_png_refuses_an_input_and_bad_labels(tmp_path):
    src = tmp_path / "image.png"
    Image.new("RGB", (20, 20)).save(src)
    labels = np.zeros((20, 20), np.uint8)
    with pytest.raises(InputError):
        save_label_png(src, labels, [(0, 0, 0)], inputs=[src])
    assert load_image(src).shape == (20, 20, 3)
    with pytest.raises(ValueError):
        save_label_png(tmp_path / "m.png", labels + 3, [(0, 0, 0)])
    assert not list(tmp_path.glob(".m.png*"))


def test_read_label_png_refuses_a_colour_image(tmp_path, rgb):
    p = tmp_path / "colour.png"
    Image.fromarray(rgb).save(p)
    with pytest.raises(InputError, match="not a label mask"):
        read_label_png(p)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow_transpose(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    img = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.png"
    Image.fromarray(img).save(p, exif=exif.tobytes())
    with Image.open(p) as im:
        want = np.array(ImageOps.exif_transpose(im).convert("RGB"))
    out = load_image(p)
    np.testing.assert_array_equal(out, want)
    assert out.shape[:2] == ((40, 24) if orientation >= 5 else (24, 40))
