"""The app against what mmseg's own test pipeline computes, on an analytic model.

The model (tests/seg_builders.py) scores each pixel's normalised colour and average-pools the
scores 4x4 (an output at 1/4 of the input, as HRNet's head gives), so the mask depends on the
resize, padding, windows and flips exactly as a real network's does. :func:`mmseg_reference`
computes what mmseg does from its documented behaviour, independently of the app: mmcv's
keep-ratio size rule, ``cv2`` bilinear resize of the BGR uint8 image, BGR->RGB and
normalisation, bottom/right zero padding, PyTorch's ``F.interpolate`` bilinear (written here
in numpy) for the scores, slide windows as ``slide_inference`` visits them, softmax-averaged
flips.
"""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest
from mmseg_configs import write_v0_config, write_v1_configs
from seg_builders import BIAS, MEAN_RGB, STD_RGB, WEIGHTS_RGB, build_colour_model, patch_image

from app.cli import main
from app.core.errors import InputError
from app.core.manifest import load_manifest
from app.core.model_import import mmseg_manifest
from app.core.runtime import RuntimeConfig, SessionPool
from app.core.segment.passes import resize_aligned
from app.core.segment.pipeline import segment_image
from app.core.segment.preprocess import plan_geometry, rescale_size

POOL = 4
SCALE = (2048, 1024)


# ------------------------------------------------------------------ what mmseg computes


def _mmcv_size(h: int, w: int, scale) -> tuple[int, int]:
    """mmcv.rescale_size as documented: factor min(long/long side, short/short side), each
    side int(x * factor + 0.5)."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def _interp(a: np.ndarray, n_out: int, axis: int, align_corners: bool, nearest: bool):
    """PyTorch F.interpolate along one axis (bilinear is separable)."""
    n_in = a.shape[axis]
    if n_in == n_out:
        return a
    dst = np.arange(n_out, dtype=np.float64)
    if nearest:
        return np.take(a, np.minimum(np.floor(dst * (n_in / n_out)).astype(int), n_in - 1), axis)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    else:
        src = np.maximum((dst + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    t = (src - lo).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
    return np.take(a, lo, axis) * (1 - t) + np.take(a, hi, axis) * t


def _torch_resize(scores: np.ndarray, size, align_corners=False, nearest=False) -> np.ndarray:
    out = _interp(scores, size[0], 1, align_corners, nearest)
    return _interp(out, size[1], 2, align_corners, nearest)


def _network(x: np.ndarray) -> np.ndarray:
    """The analytic model on a normalised (h, w, 3) RGB input: (C, h // 4, w // 4) scores."""
    s = x @ WEIGHTS_RGB.T.astype(np.float64) + BIAS.astype(np.float64)
    h, w = (s.shape[0] // POOL) * POOL, (s.shape[1] // POOL) * POOL
    s = s[:h, :w].reshape(h // POOL, POOL, w // POOL, POOL, -1).mean(axis=(1, 3))
    return s.transpose(2, 0, 1)


def _logits(img_rgb, scale, size_divisor, align_corners, slide, nearest) -> np.ndarray:
    h, w = img_rgb.shape[:2]
    nh, nw = _mmcv_size(h, w, scale)
    bgr = np.ascontiguousarray(img_rgb[:, :, ::-1])  # what mmcv's loader holds
    resized = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    x = (resized[:, :, ::-1].astype(np.float64) - MEAN_RGB) / STD_RGB
    if size_divisor:
        ph, pw = -(-nh // size_divisor) * size_divisor, -(-nw // size_divisor) * size_divisor
        x = np.pad(x, ((0, ph - nh), (0, pw - nw), (0, 0)))
    H, W = x.shape[:2]
    if slide is None:
        seg = _torch_resize(_network(x), (H, W), align_corners, nearest)
    else:
        (hc, wc), (hs, ws) = slide
        seg = np.zeros((3, H, W))
        count = np.zeros((H, W))
        for hi in range(max(H - hc + hs - 1, 0) // hs + 1):
            for wi in range(max(W - wc + ws - 1, 0) // ws + 1):
                y2, x2 = min(hi * hs + hc, H), min(wi * ws + wc, W)
                y1, x1 = max(y2 - hc, 0), max(x2 - wc, 0)
                crop = _network(x[y1:y2, x1:x2])
                seg[:, y1:y2, x1:x2] += _torch_resize(crop, (y2 - y1, x2 - x1), align_corners)
                count[y1:y2, x1:x2] += 1
        seg = seg / count
    return _torch_resize(seg[:, :nh, :nw], (h, w), align_corners, nearest)


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=0))
    return e / e.sum(axis=0)


def mmseg_reference(
    img_rgb: np.ndarray,
    *,
    scale=SCALE,
    size_divisor: int | None = None,
    align_corners: bool = False,
    slide=None,
    flip: bool = False,
    nearest: bool = False,
) -> np.ndarray:
    """The label mask mmseg's test pipeline gives for the analytic model."""
    args = (scale, size_divisor, align_corners, slide, nearest)
    seg = _logits(img_rgb, *args)
    if flip:
        mirrored = _logits(np.ascontiguousarray(img_rgb[:, ::-1]), *args)[:, :, ::-1]
        seg = _softmax(seg) + _softmax(mirrored)
    return np.argmax(seg, axis=0).astype(np.uint8)


# ------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def pool() -> SessionPool:
    return SessionPool(RuntimeConfig(preference=("cpu",), intra_op_threads=1))


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mmseg")
    return build_colour_model(folder / "hr18s.onnx", downsample=True, pool=POOL)


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float((a == b).mean())


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return patch_image(h, w, block=5, seed=seed)


def test_mmcv_keep_ratio_sizes_for_a_table_of_images() -> None:
    # worked by hand from the rule for scale (2048, 1024)
    by_hand = {
        (1400, 1600): (1024, 1170),  # factor 1024/1400
        (1600, 1400): (1170, 1024),
        (1024, 2048): (1024, 2048),  # factor 1
        (2048, 1024): (2048, 1024),
        (480, 640): (1024, 1365),  # factor 1024/480, 1365.33 rounds down
        (640, 480): (1365, 1024),
        (3000, 4000): (1024, 1365),  # shrinking: 1024/3000
        (1000, 3000): (683, 2048),  # the long side binds: 2048/3000, 682.67 rounds up
        (3000, 1000): (2048, 683),
    }
    for (h, w), want in by_hand.items():
        assert rescale_size((h, w), SCALE) == want, (h, w)
        assert rescale_size((h, w), (1024, 2048)) == want  # mmcv's scale is order-free
    rng = np.random.default_rng(1)
    for h, w in rng.integers(16, 5000, (300, 2)).tolist():
        assert rescale_size((h, w), (512, 1024)) == _mmcv_size(h, w, (512, 1024))


def test_plan_geometry_keep_ratio_pads_only_when_asked(tmp_path, onnx_path) -> None:
    data = mmseg_manifest(write_v1_configs(tmp_path), onnx_path, onnx_path.parent)
    data.pop("size_divisor")
    (onnx_path.parent / "plan.json").write_text(json.dumps(data))
    spec = load_manifest(onnx_path.parent / "plan.json")
    assert spec.size_divisor == 1
    assert plan_geometry((1400, 1600), spec) == ((1024, 1170), (1024, 1170))
    padded = dataclasses.replace(spec, size_divisor=32)
    assert plan_geometry((1400, 1600), padded) == ((1024, 1184), (1024, 1170))


def _imported_v1(tmp_path, onnx_path):
    config = write_v1_configs(tmp_path / "configs")
    out = onnx_path.parent / "fcn_hr18s_lab.json"
    assert main(["import", "mmseg", str(config), str(onnx_path), "-o", str(out), "--force"]) == 0
    return load_manifest(out)


def test_imported_fcn_hr18s_config_expresses_its_test_pipeline(tmp_path, onnx_path) -> None:
    spec = _imported_v1(tmp_path, onnx_path)
    assert spec.resize == "keep_ratio" and spec.scale == (2048, 1024)
    assert spec.input_size is None and spec.size_divisor == 1
    assert spec.mean == MEAN_RGB and spec.std == STD_RGB and spec.to_rgb
    assert [c.name for c in spec.classes] == ["background", "red", "blue"]
    assert spec.palette[1] == (230, 120, 120)
    assert spec.inference.mode == "whole" and not spec.inference.flip
    assert not spec.inference.align_corners


@pytest.mark.parametrize(
    "size", [(1400, 1600), (1600, 1400), (480, 640), (640, 480), (1000, 3000), (3000, 1000)]
)
def test_app_masks_agree_with_the_fcn_hr18s_test_pipeline(tmp_path, onnx_path, pool, size):
    """Done-when: several sizes, both orientations, >= 99.9 % of pixels; the manifest written
    for one fixed size (the old way) does not reach it on the same images."""
    spec = _imported_v1(tmp_path, onnx_path)
    img = _image(*size, seed=size[0])
    want = mmseg_reference(img)
    got = segment_image(img, spec, pool, roi=False).labels
    agreement = _agreement(got, want)
    print(f"{size}: {100 * agreement:.3f} % of pixels agree")
    assert agreement >= 0.999
    fixed = dataclasses.replace(
        spec, resize="keep_ratio_pad", input_size=(1024, 2048), scale=None, size_divisor=32
    )
    assert _agreement(segment_image(img, fixed, pool, roi=False).labels, want) < 0.999


def _variant(spec, **changes):
    inference = dataclasses.replace(spec.inference, **changes.pop("inference", {}))
    return dataclasses.replace(spec, inference=inference, **changes)


CASES = {
    "size_divisor": ({"size_divisor": 32}, {"size_divisor": 32}),
    "align_corners": ({"inference": {"align_corners": True}}, {"align_corners": True}),
    "nearest": ({"inference": {"interpolation": "nearest"}}, {"nearest": True}),
    "slide": (
        {"inference": {"mode": "slide", "crop_size": (256, 320), "stride": (170, 213)}},
        {"slide": ((256, 320), (170, 213))},
    ),
    "flip": ({"inference": {"flip": True}}, {"flip": True}),
}


@pytest.mark.parametrize("option", sorted(CASES))
def test_each_option_matches_mmseg(tmp_path, onnx_path, pool, option) -> None:
    """Each option gives mmseg's mask, and a different one from leaving it out."""
    app_changes, ref_changes = CASES[option]
    spec = _variant(_imported_v1(tmp_path, onnx_path), **app_changes)
    for size in ((300, 430), (430, 300)):
        img = _image(*size, seed=7)
        small = (640, 322)  # widths 462 and 322: the mirrored pooling grid is offset
        want = mmseg_reference(img, scale=small, **ref_changes)
        spec_small = dataclasses.replace(spec, scale=small)
        got = segment_image(img, spec_small, pool, roi=False).labels
        assert _agreement(got, want) >= 0.999, (option, size)
        assert _agreement(want, mmseg_reference(img, scale=small)) < 0.999, option


def test_resize_aligned_matches_pytorch_align_corners() -> None:
    rng = np.random.default_rng(4)
    plane = rng.normal(size=(13, 17)).astype(np.float32)
    for size in ((13, 17), (52, 68), (40, 9), (1, 5)):
        want = _torch_resize(plane[None].astype(np.float64), size, align_corners=True)[0]
        np.testing.assert_allclose(resize_aligned(plane, size), want, atol=1e-5)


@pytest.mark.parametrize("flip", [False, True])
def test_imported_v0_config_matches_mmseg(tmp_path, onnx_path, pool, flip) -> None:
    config = write_v0_config(
        tmp_path / "v0.py",
        flip=flip,
        align_corners=True,
        test_cfg="dict(mode='slide', crop_size=(256, 256), stride=(170, 170))",
        pad="dict(type='Pad', size_divisor=32),",
    )
    data = mmseg_manifest(config, onnx_path, onnx_path.parent)
    assert data["inference"] == {
        "align_corners": True,
        "mode": "slide",
        "crop_size": [256, 256],
        "stride": [170, 170],
        **({"flip": True} if flip else {}),
    }
    assert data["size_divisor"] == 32 and data["scale"] == [2048, 1024]
    (onnx_path.parent / "v0.json").write_text(json.dumps(data))
    spec = dataclasses.replace(load_manifest(onnx_path.parent / "v0.json"), scale=(640, 320))
    img = _image(330, 410, seed=3)
    want = mmseg_reference(
        img,
        scale=(640, 320),
        size_divisor=32,
        align_corners=True,
        slide=((256, 256), (170, 170)),
        flip=flip,
    )
    assert _agreement(segment_image(img, spec, pool, roi=False).labels, want) >= 0.999


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"pad": "dict(type='PhotoMetricDistortion'),"}, "PhotoMetricDistortion"),
        ({"pad": "dict(type='Pad', size=(512, 512)),"}, "size"),
        ({"test_cfg": "dict(mode='sliding')"}, "model.test_cfg.mode"),
    ],
)
def test_import_refuses_naming_the_setting(tmp_path, onnx_path, change, setting) -> None:
    config = write_v0_config(tmp_path / "v0.py", **change)
    with pytest.raises(InputError, match=setting) as info:
        mmseg_manifest(config, onnx_path, onnx_path.parent)
    assert info.value.path == config.resolve()


def test_import_refuses_multi_scale_and_unreadable_values(tmp_path, onnx_path) -> None:
    config = write_v0_config(tmp_path / "v0.py")
    text = config.read_text().replace("flip=False,", "flip=False, img_ratios=[0.5, 1.0],")
    config.write_text(text)
    with pytest.raises(InputError, match="img_ratios"):
        mmseg_manifest(config, onnx_path, onnx_path.parent)
    text = (
        config.read_text()
        .replace("img_ratios=[0.5, 1.0],", "")
        .replace("to_rgb=True)", "to_rgb=bool(1))")
    )
    config.write_text(text)
    with pytest.raises(InputError, match="cannot be read without running"):
        mmseg_manifest(config, onnx_path, onnx_path.parent)


def test_config_is_never_run(tmp_path, onnx_path) -> None:
    marker = tmp_path / "ran"
    config = write_v0_config(tmp_path / "v0.py")
    config.write_text(
        config.read_text() + f"\nside_effect = open({str(marker)!r}, 'w').write('x')\n"
    )
    mmseg_manifest(config, onnx_path, onnx_path.parent)
    assert not marker.exists()


def test_import_cli_errors_are_one_line(tmp_path, onnx_path, capsys) -> None:
    code = main(["import", "mmseg", str(tmp_path / "missing.py"), str(onnx_path),
                 "-o", str(tmp_path / "m.json")])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "missing.py" in err
    out = tmp_path / "exists.json"
    out.write_text("{}")
    config = write_v0_config(tmp_path / "v0.py")
    assert main(["import", "mmseg", str(config), str(onnx_path), "-o", str(out)]) == 2
    assert out.read_text() == "{}"
