"""End to end on analytic models whose right mask is known exactly: every output contract,
fixed and dynamic inputs, both channel orders; and proof that a wrong order or normalisation
would be caught."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image
from seg_builders import (
    MEAN_RGB,
    interior,
    make_model,
    oracle_labels,
    patch_image,
)

from app.core.errors import Cancelled, InputError, ModelError
from app.core.report import CancelToken
from app.core.runtime import RuntimeConfig, SessionPool
from app.core.segment.decode import decode, decode_reference
from app.core.segment.imageio import read_label_png
from app.core.segment.pipeline import class_counts, run_segment, segment_image
from app.core.segment.preprocess import Prepared

H, W, BLOCK = 200, 264, 8


@pytest.fixture(scope="module")
def pool():
    return SessionPool(RuntimeConfig(preference=("cpu",)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("segmodels")


@pytest.fixture(scope="module")
def image():
    return patch_image(H, W, BLOCK, seed=11)


@pytest.fixture(scope="module")
def expected(image):
    labels = oracle_labels(image)
    assert np.bincount(labels.ravel(), minlength=3).min() > 0.2 * labels.size
    return labels


CONTRACTS = {
    "logits": {},
    "logits_bgr": {"to_rgb": False},
    "probabilities": {"output_kind": "probabilities"},
    "probabilities_bgr": {"output_kind": "probabilities", "to_rgb": False},
    "labels_1x1xHxW_int64": {"output_kind": "labels", "label_rank": 4, "label_dtype": "int64"},
    "labels_1xHxW_int32": {"output_kind": "labels", "label_rank": 3, "label_dtype": "int32"},
    "labels_HxW_uint8": {"output_kind": "labels", "label_rank": 2, "label_dtype": "uint8"},
    "labels_HxW_float32": {"output_kind": "labels", "label_rank": 2, "label_dtype": "float32"},
    "labels_1x1xHxW_float32_bgr": {
        "output_kind": "labels",
        "label_dtype": "float32",
        "to_rgb": False,
    },
    "labels_half_size": {"output_kind": "labels", "downsample": True},
}


@pytest.mark.parametrize("name", sorted(CONTRACTS))
def test_dynamic_model_gives_the_exact_mask(pool, folder, image, expected, name):
    model = make_model(folder, name, **CONTRACTS[name])
    result = segment_image(image, model, pool, roi=False)
    assert result.labels.shape == (H, W) and result.labels.dtype == np.uint8
    np.testing.assert_array_equal(result.labels, expected)
    assert result.report.info["input_size"] == [224, 288]
    assert sum(result.class_pixels.values()) == H * W


@pytest.mark.parametrize("kind", ["logits", "probabilities"])
def test_scores_smaller_than_input_are_resized_bilinearly(pool, folder, image, expected, kind):
    model = make_model(folder, f"half_{kind}", output_kind=kind, downsample=True)
    labels = segment_image(image, model, pool, roi=False).labels
    inner = interior(H, W, BLOCK, 2)
    np.testing.assert_array_equal(labels[inner], expected[inner])
    assert (labels == expected).mean() > 0.9


@pytest.mark.parametrize(
    "size,resize,band",
    [((100, 132), "stretch", 3), ((140, 140), "keep_ratio_pad", 5), ((64, 200), "stretch", 6)],
)
@pytest.mark.parametrize("kind", ["logits", "labels"])
def test_fixed_input_model(pool, folder, size, resize, band, kind):
    img = patch_image(H, W, 16, seed=5)
    want = oracle_labels(img)
    name = f"fixed_{kind}_{size[0]}x{size[1]}_{resize}"
    model = make_model(folder, name, input_size=size, output_kind=kind, manifest={"resize": resize})
    result = segment_image(img, model, pool, roi=False)
    assert result.report.info["input_size"] == list(size)
    assert result.labels.shape == (H, W)
    inner = interior(H, W, 16, band)
    np.testing.assert_array_equal(result.labels[inner], want[inner])


def test_wrong_channel_order_or_normalisation_would_fail(pool, folder, image, expected):
    """The test images and models are sensitive to each mistake a port can make."""
    model = make_model(folder, "sensitive")
    assert (oracle_labels(image, swap_rb=True) != expected).mean() > 0.2
    assert (oracle_labels(image, mean_rgb=MEAN_RGB[::-1]) != expected).mean() > 0.01
    assert (oracle_labels(image, mean_rgb=(0, 0, 0), std_rgb=(1, 1, 1)) != expected).mean() > 0.2
    assert (oracle_labels(image, std_rgb=(255, 255, 255)) != expected).mean() > 0.05
    wrong = {
        "bgr fed to an rgb model": dataclasses.replace(model, to_rgb=False),
        "mean in BGR order": dataclasses.replace(model, mean=MEAN_RGB[::-1]),
        "no normalisation": dataclasses.replace(model, mean=(0.0,) * 3, std=(1.0,) * 3),
        "std of 255": dataclasses.replace(model, std=(255.0,) * 3),
    }
    for what, m in wrong.items():
        got = segment_image(image, m, pool, roi=False).labels
        assert (got != expected).mean() > 0.01, what


def test_to_rgb_false_model_fed_rgb_would_fail(pool, folder, image, expected):
    model = make_model(folder, "bgr_sensitive", to_rgb=False)
    np.testing.assert_array_equal(segment_image(image, model, pool, roi=False).labels, expected)
    as_rgb = dataclasses.replace(model, to_rgb=True)
    assert (segment_image(image, as_rgb, pool, roi=False).labels != expected).mean() > 0.2


def test_class_count_mismatch_names_the_model(pool, folder, image):
    model = make_model(folder, "four", n_classes=4)
    with pytest.raises(ModelError) as err:
        segment_image(image, model, pool, roi=False)
    assert err.value.path == model.onnx
    assert "4 channels" in err.value.message and "3 classes" in err.value.message


def test_label_out_of_range_names_the_model(pool, folder, image):
    two = [{"name": "background", "color": [0, 0, 0]}, {"name": "red", "color": [255, 0, 0]}]
    model = make_model(folder, "labels_too_many", output_kind="labels", manifest={"classes": two})
    with pytest.raises(ModelError) as err:
        segment_image(image, model, pool, roi=False)
    assert err.value.path == model.onnx and "label 2" in err.value.message


def test_manifest_that_does_not_fit_the_graph(pool, folder, image):
    model = make_model(folder, "fixed_mismatch", input_size=(64, 64))
    with pytest.raises(ModelError, match="input_size"):
        segment_image(image, dataclasses.replace(model, input_size=(96, 96)), pool, roi=False)
    with pytest.raises(ModelError, match="input_size is null"):
        segment_image(image, dataclasses.replace(model, input_size=None), pool, roi=False)
    with pytest.raises(ModelError, match="no input 'x'"):
        segment_image(image, dataclasses.replace(model, input="x"), pool, roi=False)
    with pytest.raises(ModelError, match="no output 'y'"):
        segment_image(image, dataclasses.replace(model, output="y"), pool, roi=False)


@pytest.mark.parametrize(
    "shape,valid,source",
    [
        ((1, 3, 64, 80), (64, 80), (64, 80)),
        ((1, 3, 32, 40), (64, 80), (64, 80)),
        ((1, 3, 32, 40), (50, 80), (140, 224)),
        ((3, 16, 16), (60, 64), (33, 31)),
        ((1, 5, 32, 40), (64, 70), (100, 90)),
    ],
)
def test_decode_fast_equals_reference(folder, shape, valid, source):
    n = shape[-3]
    classes = [{"name": f"c{i}", "color": [i, i, i]} for i in range(n)]
    model = make_model(folder, f"dec{n}", manifest={"classes": classes}, n_classes=n)
    rng = np.random.default_rng(sum(shape))
    out = rng.normal(size=shape).astype(np.float32)
    prepared = Prepared(np.zeros((1, 3, 64, 80), np.float32), valid, source)
    fast = decode(out, prepared, model)
    np.testing.assert_array_equal(fast, decode_reference(out, prepared, model))
    assert fast.shape == source and len(np.unique(fast)) == n


def test_decode_ties_go_to_the_lower_class(folder):
    model = make_model(folder, "ties")
    out = np.zeros((1, 3, 8, 8), np.float32)
    out[0, 2] = 1.0
    out[0, 1] = 1.0
    prepared = Prepared(np.zeros((1, 3, 8, 8), np.float32), (8, 8), (8, 8))
    assert (decode(out, prepared, model) == 1).all()
    assert (decode_reference(out, prepared, model) == 1).all()


def test_decode_refuses_nan_scores(folder):
    model = make_model(folder, "nan")
    out = np.zeros((1, 3, 8, 8), np.float32)
    out[0, 1, 3, 3] = np.nan
    prepared = Prepared(np.zeros((1, 3, 8, 8), np.float32), (8, 8), (8, 8))
    with pytest.raises(Exception, match="non-finite"):
        decode(out, prepared, model)


@pytest.fixture
def image_file(tmp_path, image):
    p = tmp_path / "scan.png"
    Image.fromarray(image).save(p)
    return p


def test_run_segment_writes_mask_and_overlay(pool, folder, image_file, expected, tmp_path):
    model = make_model(folder, "run")
    mask, over = tmp_path / "out" / "mask.png", tmp_path / "out" / "overlay.png"
    seen = []
    result = run_segment(
        image_file,
        model,
        pool,
        mask_path=mask,
        overlay_path=over,
        progress=lambda stage, f: seen.append((stage, f)),
    )
    np.testing.assert_array_equal(read_label_png(mask), expected)
    with Image.open(mask) as im:
        assert im.mode == "P"
    with Image.open(over) as im:
        assert im.size == (W, H) and im.mode == "RGB"
    rep = result.report.as_dict()
    assert list(rep["timings_ms"]) == ["load", "roi", "preprocess", "infer", "decode", "write"]
    assert rep["providers"] == ["cpu"]
    counts = np.bincount(expected.ravel(), minlength=3)
    assert rep["class_pixels"] == {"background": counts[0], "red": counts[1], "blue": counts[2]}
    assert abs(sum(rep["class_fraction"].values()) - 1.0) < 1e-5
    assert rep["roi_box"] is None and rep["roi_fraction"] == 1.0
    assert rep["image_size"] == [H, W]
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] < 0.2
    assert not list(mask.parent.glob("*.tmp"))


def test_run_segment_never_writes_over_its_input(pool, folder, image_file):
    model = make_model(folder, "run")
    before = image_file.read_bytes()
    with pytest.raises(InputError, match="input"):
        run_segment(image_file, model, pool, mask_path=image_file)
    with pytest.raises(InputError):
        run_segment(image_file, model, pool, overlay_path=image_file)
    assert image_file.read_bytes() == before
    with pytest.raises(InputError, match=".png"):
        run_segment(image_file, model, pool, mask_path=image_file.with_name("mask.jpg"))
    with pytest.raises(InputError, match="overlay"):
        run_segment(image_file, model, pool, overlay_path=image_file.with_name("over.gif"))
    assert not image_file.with_name("mask.jpg").exists()


def test_cancel_stops_before_writing(pool, folder, image_file, tmp_path):
    model = make_model(folder, "run")
    token = CancelToken()

    def progress(stage, fraction):
        if stage == "infer":
            token.cancel()

    mask = tmp_path / "cancelled.png"
    with pytest.raises(Cancelled):
        run_segment(image_file, model, pool, mask_path=mask, cancel=token, progress=progress)
    assert not mask.exists()


@pytest.mark.parametrize("n", [1, 3, 40])
def test_class_counts_equal_bincount(n):
    labels = np.random.default_rng(n).integers(0, n, (50, 70)).astype(np.uint8)
    np.testing.assert_array_equal(class_counts(labels, n), np.bincount(labels.ravel(), minlength=n))
