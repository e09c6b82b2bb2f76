"""Pre-processing: geometry per manifest, mmseg normalisation, fast path equal to the plain one."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from seg_builders import MEAN_RGB, STD_RGB, make_model

from app.core.segment.preprocess import plan_geometry, preprocess, preprocess_reference


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("pre"), "m")


@pytest.fixture
def image():
    return np.random.default_rng(3).integers(0, 256, (70, 90, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"to_rgb": False},
        {"input_size": (64, 64)},
        {"input_size": (64, 128), "resize": "keep_ratio_pad"},
        {"input_size": (128, 64), "resize": "keep_ratio_pad"},
        {"size_divisor": 1},
    ],
)
def test_fast_path_equals_reference(model, image, changes):
    m = dataclasses.replace(model, **changes)
    fast = preprocess(image, m)
    ref = preprocess_reference(image, m)
    assert fast.tensor.dtype == np.float32 and fast.tensor.flags.c_contiguous
    assert fast.valid == ref.valid and fast.source_size == ref.source_size
    np.testing.assert_array_equal(fast.tensor, ref.tensor)


def test_fast_path_accepts_a_crop_view(model, image):
    view = image[5:60, 7:80]
    np.testing.assert_array_equal(
        preprocess(view, model).tensor, preprocess_reference(view.copy(), model).tensor
    )


def test_to_rgb_true_feeds_rgb_normalised_like_mmseg(model, image):
    t = preprocess(image, model).tensor
    bgr = image[:, :, ::-1].astype(np.float64)  # what mmseg's cv2 loader holds
    rgb = bgr[:, :, ::-1]
    want = (rgb - np.array(MEAN_RGB)) / np.array(STD_RGB)
    np.testing.assert_allclose(t[0, :, :70, :90], want.transpose(2, 0, 1), atol=1e-5)


def test_to_rgb_false_feeds_bgr_with_bgr_mean(model, image):
    m = dataclasses.replace(model, to_rgb=False, mean=MEAN_RGB[::-1], std=STD_RGB[::-1])
    t = preprocess(image, m).tensor
    bgr = image[:, :, ::-1].astype(np.float64)
    want = (bgr - np.array(MEAN_RGB[::-1])) / np.array(STD_RGB[::-1])
    np.testing.assert_allclose(t[0, :, :70, :90], want.transpose(2, 0, 1), atol=1e-5)
    assert not np.allclose(t, preprocess(image, model).tensor)


def test_dynamic_pads_bottom_right_with_zero_after_normalising(model, image):
    p = preprocess(image, model)
    assert p.input_size == (96, 96) and p.valid == (70, 90)
    assert not p.tensor[0, :, 70:, :].any() and not p.tensor[0, :, :, 90:].any()


def test_stretch_resizes_bilinear_to_the_input(model, image):
    m = dataclasses.replace(model, input_size=(35, 45))
    p = preprocess(image, m)
    assert p.input_size == (35, 45) and p.valid == (35, 45)
    small = cv2.resize(image, (45, 35), interpolation=cv2.INTER_LINEAR)
    want = (small.astype(np.float32) - np.float32(MEAN_RGB[0])) / np.float32(STD_RGB[0])
    np.testing.assert_allclose(p.tensor[0, 0], want[:, :, 0], atol=1e-5)


def test_keep_ratio_pad_geometry(model):
    m = dataclasses.replace(model, input_size=(100, 100), resize="keep_ratio_pad")
    assert plan_geometry((1400, 1600), m) == ((100, 100), (88, 100))
    assert plan_geometry((1600, 1400), m) == ((100, 100), (100, 88))
    assert plan_geometry((50, 50), m) == ((100, 100), (100, 100))


def test_keep_ratio_pad_pads_the_rest_with_zero(model, image):
    m = dataclasses.replace(model, input_size=(64, 64), resize="keep_ratio_pad")
    p = preprocess(image, m)
    assert p.valid == (50, 64)
    assert not p.tensor[0, :, 50:].any() and p.tensor[0, :, :50].any()
