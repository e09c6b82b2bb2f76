"""Analytic segmentation models (built with onnx.helper) whose right answer is known exactly.

The model is a 1x1 convolution on the normalised input: background scores a constant
``BG_SCORE``, class 1 ("red") scores the normalised red value, class 2 ("blue") the normalised
blue value. So the class of a pixel follows from its colour alone, and :func:`oracle_labels`
computes it in float64 straight from the RGB image. Feeding BGR instead of RGB swaps the red and
blue classes; a wrong mean or std moves the thresholds: both change the answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from app.core.manifest import SegmentationModel, load_manifest

MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)
BG_SCORE = 0.5
CLASSES = [
    {"name": "background", "color": [0, 0, 0]},
    {"name": "red", "color": [230, 120, 120]},
    {"name": "blue", "color": [100, 140, 240]},
]
# rows: classes; columns: weight of normalised R, G, B
WEIGHTS_RGB = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
BIAS = np.array([BG_SCORE, 0.0, 0.0], np.float32)

LABEL_DTYPES = {
    "int64": TensorProto.INT64,
    "int32": TensorProto.INT32,
    "uint8": TensorProto.UINT8,
    "float32": TensorProto.FLOAT,
}


def build_colour_model(
    path: Path,
    *,
    to_rgb: bool = True,
    output_kind: str = "logits",
    label_rank: int = 4,
    label_dtype: str = "int64",
    downsample: bool = False,
    input_size: tuple[int, int] | None = None,
    n_classes: int = 3,
    pool: int = 2,
) -> Path:
    """Write the analytic model to ``path`` and return it.

    ``label_rank`` 2/3/4 gives labels (H, W) / (1, H, W) / (1, 1, H, W); ``downsample`` puts a
    ``pool`` x ``pool`` average pool of that stride after the scores (output 1/pool of the
    input size, remainder dropped); ``input_size``
    fixes H, W (else they are symbolic).
    """
    w = WEIGHTS_RGB if to_rgb else WEIGHTS_RGB[:, ::-1]
    weights = np.zeros((n_classes, 3, 1, 1), np.float32)
    bias = np.zeros(n_classes, np.float32)
    k = min(n_classes, 3)
    weights[:k, :, 0, 0] = w[:k]
    bias[:k] = BIAS[:k]
    bias[3:] = -100.0
    h, wd = ("H", "W") if input_size is None else input_size
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(weights), "w"),
        numpy_helper.from_array(bias, "b"),
    ]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["scores"])]
    cur = "scores"
    if downsample:
        nodes.append(
            helper.make_node(
                "AveragePool", [cur], ["pooled"], kernel_shape=[pool, pool], strides=[pool, pool]
            )
        )
        cur = "pooled"
    if output_kind == "logits":
        nodes.append(helper.make_node("Identity", [cur], ["output"]))
        out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, n_classes, "h", "w"])
    elif output_kind == "probabilities":
        nodes.append(helper.make_node("Softmax", [cur], ["output"], axis=1))
        out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, n_classes, "h", "w"])
    else:
        nodes.append(helper.make_node("ArgMax", [cur], ["am"], axis=1, keepdims=1))
        cur = "am"
        if label_rank < 4:
            axes = [0, 1] if label_rank == 2 else [0]
            inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
            nodes.append(helper.make_node("Squeeze", [cur, "axes"], ["sq"]))
            cur = "sq"
        nodes.append(helper.make_node("Cast", [cur], ["output"], to=LABEL_DTYPES[label_dtype]))
        shape = [1, 1, "h", "w"][4 - label_rank :]
        out = helper.make_tensor_value_info("output", LABEL_DTYPES[label_dtype], shape)
    graph = helper.make_graph(
        nodes,
        "colour_seg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, h, wd])],
        [out],
        inits,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(path))
    return path


def write_manifest(
    folder: Path,
    onnx_name: str,
    *,
    to_rgb: bool = True,
    output_kind: str = "logits",
    input_size: tuple[int, int] | None = None,
    resize: str = "stretch",
    roi: dict | None = None,
    classes: list[dict] | None = None,
    size_divisor: int = 32,
    stem: str | None = None,
) -> Path:
    """Write a segmentation manifest for a model in ``folder``; mean/std in the fed order."""
    mean = MEAN_RGB if to_rgb else MEAN_RGB[::-1]
    std = STD_RGB if to_rgb else STD_RGB[::-1]
    data = {
        "kind": "segmentation",
        "name": f"test {onnx_name}",
        "version": "1",
        "onnx": onnx_name,
        "input": "input",
        "output": "output",
        "input_size": None if input_size is None else list(input_size),
        "resize": resize,
        "mean": list(mean),
        "std": list(std),
        "to_rgb": to_rgb,
        "output_kind": output_kind,
        "classes": classes if classes is not None else CLASSES,
        "size_divisor": size_divisor,
    }
    if roi is not None:
        data["roi"] = roi
    path = folder / f"{stem or Path(onnx_name).stem}.json"
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def make_model(
    folder: Path, name: str, *, manifest: dict | None = None, **build
) -> SegmentationModel:
    """Build the analytic model ``name``.onnx with ``build`` options and return its spec."""
    build_colour_model(folder / f"{name}.onnx", **build)
    keys = {k: build[k] for k in ("to_rgb", "output_kind", "input_size") if k in build}
    return load_manifest(write_manifest(folder, f"{name}.onnx", **keys, **(manifest or {})))


def oracle_scores(
    image_rgb: np.ndarray,
    mean_rgb=MEAN_RGB,
    std_rgb=STD_RGB,
    swap_rb: bool = False,
) -> np.ndarray:
    """Class scores (H, W, 3) in float64 from the colours; arguments let a test get it wrong."""
    x = image_rgb.astype(np.float64)
    if swap_rb:
        x = x[:, :, ::-1]
    norm = (x - np.asarray(mean_rgb)) / np.asarray(std_rgb)
    return norm @ WEIGHTS_RGB.T.astype(np.float64) + BIAS.astype(np.float64)


def oracle_labels(image_rgb: np.ndarray, **wrong) -> np.ndarray:
    return np.argmax(oracle_scores(image_rgb, **wrong), axis=2).astype(np.uint8)


def patch_image(h: int, w: int, block: int, seed: int = 0, min_gap: float = 0.05) -> np.ndarray:
    """Blocks of random colours whose two best class scores differ by at least ``min_gap``,
    so float32 arithmetic cannot flip a pixel."""
    rng = np.random.default_rng(seed)
    gh, gw = -(-h // block), -(-w // block)
    colours = np.empty((gh * gw, 3), np.uint8)
    filled = 0
    while filled < len(colours):
        cand = rng.integers(0, 256, (4 * len(colours), 3), dtype=np.uint8)
        s = np.sort(oracle_scores(cand[None])[0], axis=1)
        good = cand[(s[:, -1] - s[:, -2]) >= min_gap]
        take = min(len(good), len(colours) - filled)
        colours[filled : filled + take] = good[:take]
        filled += take
    grid = colours.reshape(gh, gw, 3)
    img = np.repeat(np.repeat(grid, block, axis=0), block, axis=1)
    return np.ascontiguousarray(img[:h, :w])


def interior(h: int, w: int, block: int, band: int) -> np.ndarray:
    """True for pixels at least ``band`` px from any block edge (and the image edge)."""
    yy = np.arange(h) % block
    xx = np.arange(w) % block
    iy = (yy >= band) & (yy < block - band)
    ix = (xx >= band) & (xx < block - band)
    return iy[:, None] & ix[None, :]


def stone_image(h: int, w: int, box: tuple[int, int, int, int], seed: int = 0) -> np.ndarray:
    """A synthetic model-scan: noisy grey background, an elliptic "stone model" inside ``box``
    (x0, y0, x1, y1) of red (gingiva-like) colour carrying blue (tooth-like) discs."""
    import cv2

    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (60, 62, 70)
    noise = rng.integers(-4, 5, (h, w, 1), dtype=np.int16)
    img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    cv2.ellipse(img, (cx, cy), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, (220, 70, 60), -1)
    r = max(4, min(x1 - x0, y1 - y0) // 10)
    for i in range(5):
        t = np.pi * (0.15 + 0.7 * i / 4)
        px = int(cx + 0.6 * (x1 - x0) / 2 * np.cos(t))
        py = int(cy - 0.6 * (y1 - y0) / 2 * np.sin(t))
        cv2.circle(img, (px, py), r, (60, 90, 230), -1)
    return img


def framed_on_plate(
    image_rgb: np.ndarray, scale: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """``image_rgb`` shrunk by ``scale`` and set in the middle of a frame of its own size whose
    rest is a plate made of its own border pixels (resampled at random, lightly blurred).

    The border is then one background, as when the camera sees the stone model from further
    off: the ROI path has a real crop to make. Returns the image and the box (x0, y0, x1, y1)
    of the shrunk original in it.
    """
    import cv2

    h, w = image_rgb.shape[:2]
    b = max(1, round(0.03 * min(h, w)))
    band = np.concatenate(
        [
            s.reshape(-1, 3)
            for s in (image_rgb[:b], image_rgb[-b:], image_rgb[:, :b], image_rgb[:, -b:])
        ]
    )
    rng = np.random.default_rng(seed)
    out = band[rng.integers(0, len(band), h * w)].reshape(h, w, 3)
    out = cv2.GaussianBlur(out, (0, 0), 1.5)
    sh, sw = round(h * scale), round(w * scale)
    y0, x0 = (h - sh) // 2, (w - sw) // 2
    out[y0 : y0 + sh, x0 : x0 + sw] = cv2.resize(image_rgb, (sw, sh), interpolation=cv2.INTER_AREA)
    return out, (x0, y0, x0 + sw, y0 + sh)
