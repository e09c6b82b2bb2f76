"""Static int8 (QDQ) copies of segmentation models, calibrated on sample images.

ONNX Runtime's static quantization (``onnxruntime.quantization.quantize_static``, QDQ format,
signed int8 weights per output channel, unsigned int8 activations) needs activation ranges; they
are measured by running the float model on calibration images prepared exactly as the pipeline
prepares them (manifest preprocessing, at the reduced inference scale the int8 path is used with
when one is given). The result is built on first use into the user cache (``segment-int8/``),
keyed by the model file's hash, the calibration images and :data:`RECIPE_VERSION`, and written
atomically: a half-written file is never picked up. Nothing is downloaded.

Int8 is an option (manifest ``speed.precision`` or ``crownscan segment --precision int8``), never
switched on by itself: its labels differ from the float model's on a few boundary pixels
(``crownscan bench segment`` measures how many).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from app.core.errors import ModelError
from app.core.fileio import file_sha256
from app.core.manifest import SegmentationModel
from app.core.paths import cache_folder, sample_workspace_dir

_BUILT: dict[tuple, Path] = {}
RECIPE_VERSION = 1
CALIBRATION_LONG_SIDE = 1024
"""Calibration images of a dynamic-size model are scaled to at most this long side (activation
ranges hardly depend on the scale, and calibration keeps every activation of an image)."""


def sample_images() -> list[Path]:
    """The sample workspace's images (``resources/samples/*/image_*.jpg``), sorted."""
    return sorted(sample_workspace_dir().glob("*/image_*.jpg"))


def calibration_tensors(
    model: SegmentationModel, images: Sequence[Path], long_side: int | None
) -> Iterator[np.ndarray]:
    """Input tensors for ``model``, one per image, prepared as the pipeline prepares them."""
    from app.core.segment.imageio import load_image
    from app.core.segment.preprocess import preprocess
    from app.core.segment.scale import scaled

    for path in images:
        image = load_image(path)
        if model.input_size is None and long_side is not None:
            image = scaled(image, long_side)
        yield preprocess(image, model).tensor


def quantize_file(
    source: Path, target: Path, input_name: str, tensors: Iterator[np.ndarray]
) -> None:
    """Write a static QDQ int8 copy of ``source`` to ``target``, calibrated on ``tensors``.

    The float graph is first shape-inferred and optimised by ONNX Runtime's
    ``quant_pre_process`` (folded batch norms, fused activations), as its quantization guide
    asks; activations use min/max ranges (the calibration graph reduces each activation to its
    minimum and maximum, so an image costs little memory).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            tensor = next(tensors, None)
            return None if tensor is None else {input_name: tensor}

    with tempfile.TemporaryDirectory(prefix="crownscan-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )


def int8_path(
    model: SegmentationModel,
    images: Sequence[Path] | None = None,
    long_side: int | None = CALIBRATION_LONG_SIDE,
) -> Path:
    """The cached int8 copy of ``model``'s ONNX file, built first if missing.

    The cache key covers the file's bytes, how the manifest feeds it and the calibration
    images, so a changed manifest or image set builds a new copy. Within a process the answer
    is remembered per model file state (path, size, mtime), so later images skip hashing it.
    """
    images = list(sample_images() if images is None else images)
    if not images:
        raise ModelError(model.onnx, "int8 needs calibration images; none were found")
    stat = model.onnx.stat()
    memo = (model.onnx, stat.st_size, stat.st_mtime_ns, model.input, long_side, tuple(images))
    if memo in _BUILT and _BUILT[memo].is_file():
        return _BUILT[memo]
    key = hashlib.sha256()
    feed = (model.input, model.input_size, model.resize, model.mean, model.std, model.to_rgb)
    key.update(f"v{RECIPE_VERSION} {long_side} {feed} {model.size_divisor}".encode())
    key.update(file_sha256(model.onnx).encode())
    for path in images:
        key.update(f"{path.name}:{file_sha256(path)}".encode())
    target = cache_folder("segment-int8") / f"{model.onnx.stem}-{key.hexdigest()[:16]}.onnx"
    if target.is_file():
        _BUILT[memo] = target
        return target
    tmp = target.with_name(f"{target.stem}.{os.getpid()}.tmp.onnx")
    try:
        quantize_file(model.onnx, tmp, model.input, calibration_tensors(model, images, long_side))
        os.replace(tmp, target)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(model.onnx, f"cannot build the int8 model: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    _BUILT[memo] = target
    return target


def int8_model(model: SegmentationModel, images: Sequence[Path] | None = None) -> SegmentationModel:
    """``model`` with its ONNX file replaced by the cached int8 copy (built if missing)."""
    return replace(model, onnx=int8_path(model, images))
