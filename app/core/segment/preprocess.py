"""Image to input tensor, exactly as mmsegmentation feeds the model.

mmseg loads images as BGR with OpenCV, resizes the uint8 image bilinearly (``cv2.INTER_LINEAR``),
then ``Normalize``: with ``to_rgb=True`` it converts BGR to RGB and computes ``(x - mean) / std``
with mean/std in RGB order; with ``to_rgb=False`` the channels stay BGR and mean/std are in BGR
order. Padding (to a size divisor, or the rest of a fixed input) happens after normalisation
with value 0. Our images are RGB in memory, so ``to_rgb`` true feeds RGB and false feeds BGR.

:func:`preprocess` does this per channel into one preallocated float32 buffer;
:func:`preprocess_reference` is the plain numpy version it is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.core.manifest import SegmentationModel


@dataclass(frozen=True)
class Prepared:
    """A model input and how it maps back to the image it came from.

    ``tensor`` is ``float32 (1, 3, H_in, W_in)``; the image content fills its top-left
    ``valid`` = (h, w) region (the rest is padding); ``source_size`` = (h, w) of the image.
    """

    tensor: np.ndarray
    valid: tuple[int, int]
    source_size: tuple[int, int]

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.tensor.shape[2]), int(self.tensor.shape[3])


def round_up(n: int, divisor: int) -> int:
    return -(-int(n) // int(divisor)) * int(divisor)


def rescale_size(source_size: tuple[int, int], scale: tuple[int, int]) -> tuple[int, int]:
    """mmcv's keep-ratio size: the (h, w) of the image scaled by
    ``min(long / max(h, w), short / min(h, w))`` for ``scale`` = (long, short), each side
    rounded as mmcv rounds it, ``int(side * factor + 0.5)``."""
    h, w = source_size
    long, short = max(scale), min(scale)
    factor = min(long / max(h, w), short / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def plan_geometry(
    source_size: tuple[int, int], model: SegmentationModel
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Return ``(input_size, valid)``: the tensor's (H, W) and the (h, w) the image occupies."""
    h, w = source_size
    if model.resize == "keep_ratio":
        vh, vw = rescale_size((h, w), model.scale)
        d = model.size_divisor
        return (round_up(vh, d), round_up(vw, d)), (vh, vw)
    if model.input_size is None:
        d = model.size_divisor
        return (round_up(h, d), round_up(w, d)), (h, w)
    H, W = model.input_size
    if model.resize == "stretch":
        return (H, W), (H, W)
    scale = min(H / h, W / w)
    vh = min(H, max(1, int(h * scale + 0.5)))
    vw = min(W, max(1, int(w * scale + 0.5)))
    return (H, W), (vh, vw)


def _resized(image_rgb: np.ndarray, valid: tuple[int, int]) -> np.ndarray:
    if image_rgb.shape[:2] == valid:
        return image_rgb
    return cv2.resize(image_rgb, (valid[1], valid[0]), interpolation=cv2.INTER_LINEAR)


def _order(model: SegmentationModel) -> tuple[int, int, int]:
    """Source (RGB) channel feeding each model channel."""
    return (0, 1, 2) if model.to_rgb else (2, 1, 0)


def preprocess(image_rgb: np.ndarray, model: SegmentationModel) -> Prepared:
    """Resize, normalise and pad ``image_rgb`` (uint8 (h, w, 3) RGB, a view is fine) for ``model``.

    Works one contiguous channel at a time into the output buffer: no float copy of the whole
    image and no transpose, which is what makes it several times cheaper than the plain version.
    """
    src = image_rgb.shape[:2]
    (H, W), (vh, vw) = plan_geometry(src, model)
    img = _resized(image_rgb, (vh, vw))
    if (vh, vw) == (H, W):
        out = np.empty((1, 3, H, W), np.float32)
    else:
        out = np.zeros((1, 3, H, W), np.float32)
    for c, s in enumerate(_order(model)):
        dst = out[0, c, :vh, :vw]
        plane = cv2.extractChannel(img, s)
        np.subtract(plane, np.float32(model.mean[c]), out=dst, dtype=np.float32)
        np.divide(dst, np.float32(model.std[c]), out=dst)
    return Prepared(out, (vh, vw), (int(src[0]), int(src[1])))


def preprocess_reference(image_rgb: np.ndarray, model: SegmentationModel) -> Prepared:
    """Plain version of :func:`preprocess`: whole-image float copy, normalise, transpose, pad."""
    src = image_rgb.shape[:2]
    (H, W), (vh, vw) = plan_geometry(src, model)
    img = _resized(image_rgb, (vh, vw))
    img = img[:, :, list(_order(model))].astype(np.float32)
    mean = np.asarray(model.mean, np.float32)
    std = np.asarray(model.std, np.float32)
    norm = (img - mean) / std
    chw = norm.transpose(2, 0, 1)
    out = np.zeros((1, 3, H, W), np.float32)
    out[0, :, :vh, :vw] = chw
    return Prepared(out, (vh, vw), (int(src[0]), int(src[1])))
