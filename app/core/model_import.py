"""Manifests written from how a model was trained: an mmseg config, or an IF-Net variant.

:func:`mmseg_manifest` turns an MMSegmentation 0.x or 1.x config's test pipeline,
normalisation, decode-head and test settings, class names and palette into a segmentation
manifest, and refuses, naming the setting, what the manifest cannot express.
:func:`ifnet_manifest` writes IF-Net's conventions for one of its published variants. Both
read the ONNX file only for its tensor names and shapes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from app.core.errors import InputError, ModelError
from app.core.fileio import atomic_write, check_not_input
from app.core.mmseg_config import Unreadable, read_config

_IGNORED_STEPS = {
    "LoadImageFromFile",
    "LoadAnnotations",
    "PackSegInputs",
    "ImageToTensor",
    "Collect",
    "DefaultFormatBundle",
    "RandomFlip",
}

IFNET_VARIANTS = {
    "ShapeNet32Vox": (32, None),
    "ShapeNet128Vox": (128, None),
    "ShapeNet300Points": (128, 300),
    "ShapeNet3000Points": (128, 3000),
}
"""IF-Net's variants: input grid resolution, and surface samples for the point-cloud ones."""


def _graph_io(onnx_path: Path) -> tuple[list, list]:
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except FileNotFoundError as exc:
        raise ModelError(onnx_path, "ONNX file does not exist") from exc
    except Exception as exc:  # onnx raises DecodeError and others for a bad file
        raise ModelError(onnx_path, f"not a readable ONNX model: {exc}") from exc
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits], list(model.graph.output)


def _dims(value_info) -> list[int | None]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


class _Config:
    """The merged config with errors that name the config file and the setting."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = read_config(path)

    def refuse(self, setting: str, why: str) -> None:
        raise InputError(self.path, f"{setting}: {why}")

    def get(self, *keys: str, default: Any = None) -> Any:
        """The value at ``keys`` (nested dict keys), or ``default`` where one is missing."""
        value: Any = self.data
        for i, key in enumerate(keys):
            if not isinstance(value, dict) or key not in value:
                return default
            value = _pick(self, value, ".".join(keys[:i]) or "config", key)
        return value


def _pick(cfg: _Config, holder: Any, where: str, key: str, default: Any = None) -> Any:
    """``holder[key]`` (or ``default``), refusing a value the reader could not evaluate."""
    value = holder.get(key, default) if isinstance(holder, dict) else default
    if isinstance(value, Unreadable):
        cfg.refuse(f"{where}.{key}", f"cannot be read without running the config ({value.why})")
    return value


def _test_pipeline(cfg: _Config) -> tuple[str, list[dict]]:
    for keys in (("test_dataloader", "dataset", "pipeline"), ("data", "test", "pipeline")):
        found = cfg.get(*keys)
        if found is not None:
            return ".".join(keys), found
    found = cfg.get("test_pipeline")
    if found is None:
        cfg.refuse("test_pipeline", "no test pipeline in the config or its _base_ files")
    return "test_pipeline", found


def _pipeline_settings(cfg: _Config) -> dict[str, Any]:
    where, steps = _test_pipeline(cfg)
    out: dict[str, Any] = {"flip": False}
    flat: list[tuple[str, dict]] = []
    for i, step in enumerate(steps):
        name = f"{where}[{i}]"
        if not isinstance(step, dict) or "type" not in step:
            cfg.refuse(name, "is not a dict(type=...) step")
        if step["type"] == "MultiScaleFlipAug":
            ratios = _pick(cfg, step, name, "img_ratios")
            if ratios not in (None, 1.0, [1.0], (1.0,)):
                cfg.refuse(f"{name}.img_ratios", f"multi-scale testing ({ratios}) is not supported")
            if _pick(cfg, step, name, "flip_direction", "horizontal") not in (
                "horizontal",
                ["horizontal"],
            ):
                cfg.refuse(f"{name}.flip_direction", "only horizontal flips are supported")
            out["flip"] = bool(_pick(cfg, step, name, "flip", False))
            out["img_scale"] = _pick(cfg, step, name, "img_scale", _pick(cfg, step, name, "scale"))
            for j, inner in enumerate(_pick(cfg, step, name, "transforms", [])):
                flat.append((f"{name}.transforms[{j}]", inner))
        else:
            flat.append((name, step))
    for name, step in flat:
        kind = _pick(cfg, step, name, "type")
        if kind in _IGNORED_STEPS:
            continue
        if kind == "Resize":
            _resize_step(cfg, name, step, out)
        elif kind == "Normalize":
            out["mean"], out["std"] = _pick(cfg, step, name, "mean"), _pick(cfg, step, name, "std")
            out["to_rgb"] = bool(_pick(cfg, step, name, "to_rgb", True))
        elif kind == "Pad":
            if _pick(cfg, step, name, "size") is not None:
                cfg.refuse(f"{name}.size", "padding to a fixed size is not supported")
            if _pick(cfg, step, name, "pad_val", 0) not in (0, None):
                cfg.refuse(f"{name}.pad_val", "only zero padding is supported")
            out["size_divisor"] = _pick(cfg, step, name, "size_divisor")
        else:
            cfg.refuse(name, f"step '{kind}' cannot be expressed in a manifest")
    return out


def _resize_step(cfg: _Config, name: str, step: dict, out: dict) -> None:
    if _pick(cfg, step, name, "scale_factor") is not None:
        cfg.refuse(f"{name}.scale_factor", "resizing by a factor is not supported; give scale")
    if _pick(cfg, step, name, "interpolation", "bilinear") != "bilinear":
        cfg.refuse(f"{name}.interpolation", "only bilinear image resizing is supported")
    scale = _pick(
        cfg, step, name, "scale", _pick(cfg, step, name, "img_scale", out.get("img_scale"))
    )
    if isinstance(scale, list) and len(scale) == 1:
        scale = scale[0]
    if not (isinstance(scale, list | tuple) and len(scale) == 2):
        cfg.refuse(f"{name}.scale", f"needs one (w, h) scale, got {scale!r}")
    out["keep_ratio"] = bool(_pick(cfg, step, name, "keep_ratio", "img_scale" in out))
    out["scale"] = [int(scale[0]), int(scale[1])]


def _classes(cfg: _Config, n: int | None) -> list[dict]:
    names = palette = None
    for keys in (("test_dataloader", "dataset", "metainfo"), ("data", "test"), ()):
        holder = cfg.get(*keys) if keys else cfg.data
        if isinstance(holder, dict) and holder.get("classes") is not None:
            names, palette = cfg.get(*keys, "classes"), cfg.get(*keys, "palette")
            break
    if names is None:
        if n is None:
            cfg.refuse("classes", "no class names and no decode_head.num_classes in the config")
        names = [f"class {i}" for i in range(n)]
    names = list(names)
    if n is not None and len(names) != n:
        cfg.refuse("classes", f"lists {len(names)} names but decode_head.num_classes is {n}")
    if palette is None:
        palette = [
            [(i * 67) % 256, (i * 139 + 80) % 256, (i * 199 + 40) % 256] for i in range(len(names))
        ]
        palette[0] = [0, 0, 0]
    if len(palette) != len(names):
        cfg.refuse("palette", f"has {len(palette)} colours for {len(names)} classes")
    return [
        {"name": str(c), "color": [int(x) for x in rgb]}
        for c, rgb in zip(names, palette, strict=True)
    ]


def mmseg_manifest(config: str | Path, onnx_path: str | Path, manifest_dir: Path) -> dict:
    """The segmentation manifest (a dict) for ``onnx_path`` trained with ``config``.

    ``manifest_dir`` is where the manifest will be written (the ONNX path is stored relative
    to it). Raises :class:`InputError` naming the config and the setting it cannot express.
    """
    cfg = _Config(Path(config).resolve())
    onnx_path = Path(onnx_path).resolve()
    model = cfg.get("model", default={})
    head = cfg.get("model", "decode_head", default={})
    if isinstance(head, list):
        head = head[-1]
    steps = _pipeline_settings(cfg)
    prep = cfg.get("model", "data_preprocessor") or cfg.get("data_preprocessor") or {}
    if "mean" not in steps:
        where = "data_preprocessor"
        mean = _pick(cfg, prep, where, "mean")
        if mean is None:
            cfg.refuse(f"{where}.mean", "no normalisation in the test pipeline or the model")
        swap = _pick(cfg, prep, where, "bgr_to_rgb", False) or _pick(
            cfg, prep, where, "rgb_to_bgr", False
        )
        steps.update(
            mean=mean, std=_pick(cfg, prep, where, "std", [1.0, 1.0, 1.0]), to_rgb=bool(swap)
        )
    test_pad = _pick(cfg, prep, "data_preprocessor", "test_cfg") or {}
    if _pick(cfg, test_pad, "data_preprocessor.test_cfg", "size") is not None:
        cfg.refuse("data_preprocessor.test_cfg.size", "padding to a fixed size is not supported")
    divisor = (
        steps.get("size_divisor")
        or _pick(cfg, test_pad, "data_preprocessor.test_cfg", "size_divisor")
        or 1
    )

    data: dict[str, Any] = {
        "kind": "segmentation",
        "name": f"{onnx_path.stem} ({Path(config).name})",
        "version": "1",
        "onnx": _relative(onnx_path, manifest_dir),
    }
    inputs, outputs = _graph_io(onnx_path)
    if len(inputs) != 1 or not outputs:
        raise ModelError(
            onnx_path, f"needs one image input and an output, has {len(inputs)} inputs"
        )
    data["input"], data["output"] = inputs[0].name, outputs[0].name
    static = [d for d in _dims(inputs[0])[2:] if d]
    if "scale" not in steps:
        cfg.refuse("Resize", "the test pipeline has no Resize step with a scale")
    w, h = steps["scale"]
    if steps["keep_ratio"]:
        data.update(input_size=None, resize="keep_ratio", scale=[max(w, h), min(w, h)])
    else:
        data.update(input_size=[h, w], resize="stretch")
    data.update(
        mean=[float(x) for x in steps["mean"]],
        std=[float(x) for x in steps["std"]],
        to_rgb=steps["to_rgb"],
        size_divisor=int(divisor) if steps["keep_ratio"] else 32,
    )
    elem = outputs[0].type.tensor_type.elem_type
    data["output_kind"] = "logits" if elem in (1, 10, 11, 16) else "labels"
    data["classes"] = _classes(cfg, _pick(cfg, head, "model.decode_head", "num_classes"))
    test_cfg = _pick(cfg, model, "model", "test_cfg") or {}
    inference: dict[str, Any] = {
        "align_corners": bool(_pick(cfg, head, "model.decode_head", "align_corners", False))
    }
    mode = _pick(cfg, test_cfg, "model.test_cfg", "mode", "whole")
    if mode == "slide":
        inference.update(
            mode="slide",
            crop_size=list(_pick(cfg, test_cfg, "model.test_cfg", "crop_size")),
            stride=list(_pick(cfg, test_cfg, "model.test_cfg", "stride")),
        )
        if static and static != inference["crop_size"]:
            raise ModelError(
                onnx_path,
                f"input is fixed at {static}, the slide crop_size is {inference['crop_size']}",
            )
    elif mode != "whole":
        cfg.refuse("model.test_cfg.mode", f"'{mode}' is not supported (whole or slide)")
    elif static and steps["keep_ratio"]:
        raise ModelError(
            onnx_path,
            f"input is fixed at {static} but the test pipeline resizes each image keeping its "
            "ratio; export with dynamic height and width",
        )
    if steps["flip"]:
        if data["output_kind"] == "labels":
            cfg.refuse("flip", "test-time flip needs scores; this ONNX outputs labels")
        inference["flip"] = True
    data["inference"] = inference
    return data


def ifnet_manifest(onnx_path: str | Path, variant: str, manifest_dir: Path) -> dict:
    """A crown manifest with IF-Net's conventions for ``variant`` (see docs/lab-models.md)."""
    onnx_path = Path(onnx_path).resolve()
    if variant not in IFNET_VARIANTS:
        raise InputError(
            None, f"--variant must be one of {', '.join(IFNET_VARIANTS)}, got {variant}"
        )
    resolution, samples = IFNET_VARIANTS[variant]
    inputs, outputs = _graph_io(onnx_path)
    voxels = [i for i in inputs if len(_dims(i)) in (4, 5)]
    points = [i for i in inputs if len(_dims(i)) == 3 and _dims(i)[-1] == 3]
    if len(voxels) != 1 or len(points) != 1 or not outputs:
        raise ModelError(
            onnx_path,
            "needs a voxel input (1, R, R, R), a point input (1, N, 3) and an output; has "
            + ", ".join(f"{i.name} {_dims(i)}" for i in inputs),
        )
    return {
        "kind": "crown",
        "name": f"IF-Net {variant} ({onnx_path.stem})",
        "version": "1",
        "onnx": _relative(onnx_path, manifest_dir),
        "inputs": {"voxels": voxels[0].name, "points": points[0].name},
        "output": outputs[0].name,
        "output_kind": "logits",
        "voxel_resolution": resolution,
        "voxelization": "solid" if samples is None else "point_cloud",
        "voxel_grid": (
            {"placement": "cells", "surface": "cube", "inside": "ray_z_both"}
            if samples is None
            else {"placement": "points", "point_samples": samples}
        ),
        "frame": {"mode": "bbox", "center": "bbox"},
        "point_convention": "ifnet",
        "sampling": {"align_corners": True, "padding_mode": "zeros", "mode": "bilinear"},
        "generation": {"resolution": 256, "threshold": 0.5, "batch_points": 1_000_000},
        "smoothing": {"method": "none", "iterations": 0},
        "postprocess": {"keep": "all"},
    }


def _relative(path: Path, folder: Path) -> str:
    try:
        return path.relative_to(folder.resolve()).as_posix()
    except ValueError:
        raise InputError(
            path, f"must sit in the manifest's folder ({folder}) or below it; copy it there"
        ) from None


def write_manifest(data: dict, path: str | Path, inputs: list[Path]) -> Path:
    """Write ``data`` as JSON to ``path`` atomically, never over one of ``inputs``, and check
    it loads as a valid manifest."""
    from app.core.manifest import load_manifest

    path = Path(path)
    check_not_input(path, inputs)

    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        try:
            load_manifest(tmp)
        except ModelError as exc:
            raise ModelError(path, exc.message) from exc

    atomic_write(path, write)
    return path
