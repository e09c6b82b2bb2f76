"""Model manifests: the JSON beside each ONNX file, turned into typed, validated specs.

A lab adds its own model by dropping an ``.onnx`` file and a manifest in a models folder. Every
key is checked: unknown keys and wrong types are errors naming the manifest file and the key, so
a typo never silently changes how a model is fed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from app.core.errors import ModelError

_MISSING = object()


@dataclass(frozen=True)
class Frame:
    """How scan millimetres map into the model's unit cube [-0.5, 0.5]^3.

    ``center`` is ``"bbox"`` (the input's bounding-box centre) or an explicit point in mm.
    ``occlusal`` and ``mesial`` name the unit-cube axes (``"+z"``, ``"-x"``, ...) along which the
    model was trained to see the tooth's occlusal and mesio-distal directions; a case frame is
    turned onto them.
    """

    mode: Literal["fixed", "bbox"]
    size_mm: float
    center: Literal["bbox"] | tuple[float, float, float]
    occlusal: str = "+z"
    mesial: str = "+x"


@dataclass(frozen=True)
class Generation:
    """Dense query grid, decision threshold and decoder batching.

    ``coarse_resolution`` (optional) turns on coarse-to-fine evaluation: the grid is evaluated
    at that resolution first and refined only near the surface. A batch holds at most
    ``batch_points`` points, fewer when the decoder's intermediate tensors would exceed
    ``decoder_memory_mb``. ``fast_decoder`` lets a one-graph model be split into encoder and
    decoder with a gather sampler (see ``app.core.crown.decoder_plan``); false runs it as is.
    ``refine_margin`` (logits) also refines coarse cells with a corner that close to the
    decision level, so a small pocket just beside the surface is not lost to interpolation
    (see ``app.core.crown.surface.evaluate_coarse_to_fine``).
    ``decoder_int8`` runs an int8 copy of the decoder's dense layers (dynamic quantization, see
    ``app.core.crown.int8_decoder``): faster, not exact, so never on unless asked for.
    """

    resolution: int
    threshold: float
    batch_points: int
    coarse_resolution: int | None = None
    decoder_memory_mb: int = 1536
    fast_decoder: bool = True
    decoder_int8: bool = False
    refine_margin: float = 2.0


@dataclass(frozen=True)
class Smoothing:
    method: Literal["none", "laplacian", "taubin"]
    iterations: int


@dataclass(frozen=True)
class PostProcess:
    """Which connected parts of the crown surface to keep (see ``app.core.crown.components``).

    ``keep``: ``largest``, ``over_preparation`` (the part nearest the frame's occlusal axis) or
    ``all``; parts under ``min_volume_mm3`` are never chosen over a bigger one.
    """

    keep: Literal["largest", "over_preparation", "all"] = "largest"
    min_volume_mm3: float = 1.0


@dataclass(frozen=True)
class Checks:
    """Plausibility limits for a crown, in mm along (mesio-distal, bucco-lingual, occlusal).

    The defaults accept molar, premolar and incisor crowns; ``max_removed_share`` is the volume
    of removed parts, as a share of the kept crown, above which the parts are worth a warning.
    """

    extent_min_mm: tuple[float, float, float] = (4.0, 4.0, 3.0)
    extent_max_mm: tuple[float, float, float] = (14.0, 14.0, 12.0)
    volume_min_mm3: float = 30.0
    volume_max_mm3: float = 1500.0
    max_base_gap_mm: float = 1.0
    max_removed_share: float = 0.1


@dataclass(frozen=True)
class VoxelGrid:
    """Where the input grid's cells sit and how a cell is decided (``app.core.crown.voxelize``).

    The defaults are the app's own rules; ``cells`` / ``cube`` / ``ray_z_both`` reproduce
    IF-Net's voxelization (docs/lab-models.md). ``point_samples`` and ``seed`` apply to
    ``voxelization: point_cloud`` (surface samples, each marking its nearest cell).
    """

    placement: Literal["points", "cells"] = "points"
    surface: Literal["ball", "cube"] = "ball"
    inside: Literal["ray_x", "ray_z_both"] = "ray_x"
    point_samples: int = 3000
    seed: int = 0


@dataclass(frozen=True)
class Sampling:
    """How the network samples its feature volumes, as trained (PyTorch ``grid_sample``).

    Not applied by the app (the graph does the sampling); the model lint compares every
    ``GridSample`` node of the graph with it.
    """

    align_corners: bool = True
    padding_mode: Literal["zeros", "border", "reflection"] = "zeros"
    mode: Literal["bilinear", "nearest", "bicubic"] = "bilinear"


@dataclass(frozen=True)
class ServerModel:
    """The model's name and version on a Triton Inference Server (see ``docs/server.md``).

    ``version`` is the numbered version folder the server must hold; empty means whichever
    version the server serves.
    """

    name: str
    version: str = ""


@dataclass(frozen=True)
class CrownModel:
    """A validated crown manifest. ONNX paths are absolute (resolved against the manifest)."""

    manifest_path: Path
    name: str
    version: str
    onnx: Path | None
    inputs: dict[str, str]
    output: str
    output_kind: Literal["logits", "probability"]
    voxel_resolution: int
    voxelization: Literal["solid", "surface", "point_cloud"]
    frame: Frame
    point_convention: Literal["ifnet", "unit"]
    generation: Generation
    smoothing: Smoothing
    postprocess: PostProcess = PostProcess()
    checks: Checks = Checks()
    encoder_onnx: Path | None = None
    decoder_onnx: Path | None = None
    features: tuple[str, ...] = ()
    voxel_grid: VoxelGrid = VoxelGrid()
    sampling: Sampling = Sampling()
    server: ServerModel | None = None
    default: bool = False
    kind: Literal["crown"] = "crown"

    @property
    def id(self) -> str:
        return self.manifest_path.stem

    @property
    def onnx_files(self) -> tuple[Path, ...]:
        if self.onnx is not None:
            return (self.onnx,)
        return (self.encoder_onnx, self.decoder_onnx)  # type: ignore[return-value]


@dataclass(frozen=True)
class SegClass:
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Roi:
    """Two-stage crop path: find the stone model cheaply, segment only that crop.

    ``method`` is ``"threshold"`` (classical, on a downscaled image) or ``"model"`` (a
    low-resolution pass of the same model). ``margin`` is a fraction of the box size added on
    each side; ``min_margin_px`` a floor in source pixels.
    """

    enabled: bool
    method: Literal["threshold", "model"]
    margin: float
    min_margin_px: int
    downscale: int


@dataclass(frozen=True)
class SegInference:
    """How the model is run over the prepared image and its scores brought back, as mmseg's
    ``test_cfg`` and test-time flip do.

    ``mode``: ``whole`` (one pass) or ``slide`` (windows of ``crop_size`` every ``stride``,
    (h, w), scores averaged where windows overlap). ``flip``: also run the horizontally flipped
    image and average the class probabilities. ``interpolation`` and ``align_corners``: how
    scores are resized back to the input and the source image.
    """

    mode: Literal["whole", "slide"] = "whole"
    crop_size: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    flip: bool = False
    interpolation: Literal["bilinear", "nearest"] = "bilinear"
    align_corners: bool = False


@dataclass(frozen=True)
class Speed:
    """Faster ways to run a segmentation model that change its labels slightly, so never on
    unless asked (``crownscan bench segment`` measures what each one costs in agreement).

    ``precision`` ``int8`` runs a static int8 copy calibrated on the sample images
    (``app.core.segment.quantize``); ``long_side`` runs the model on the frame scaled so its
    longer side has that many pixels and resizes the scores back (``app.core.segment.scale``).
    """

    precision: Literal["fp32", "int8"] = "fp32"
    long_side: int | None = None


@dataclass(frozen=True)
class SegmentationModel:
    """A validated segmentation manifest."""

    manifest_path: Path
    name: str
    version: str
    onnx: Path
    input: str
    output: str
    input_size: tuple[int, int] | None
    resize: Literal["stretch", "keep_ratio_pad", "keep_ratio"]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    to_rgb: bool
    output_kind: Literal["logits", "probabilities", "labels"]
    classes: tuple[SegClass, ...]
    size_divisor: int
    roi: Roi
    scale: tuple[int, int] | None = None
    inference: SegInference = SegInference()
    server: ServerModel | None = None
    default: bool = False
    speed: Speed = Speed()
    kind: Literal["segmentation"] = "segmentation"

    @property
    def id(self) -> str:
        return self.manifest_path.stem

    @property
    def onnx_files(self) -> tuple[Path, ...]:
        return (self.onnx,)

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return [c.color for c in self.classes]


ModelSpec = CrownModel | SegmentationModel


class _Reader:
    """Typed access to one JSON object, raising errors that name the file and the key path."""

    def __init__(self, path: Path, data: Any, where: str = "") -> None:
        self.path = path
        self.where = where
        if not isinstance(data, dict):
            self.fail(where or "manifest", "must be a JSON object")
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def fail(self, key: str, what: str) -> None:
        raise ModelError(self.path, f"key '{key}' {what}")

    def get(self, name: str, check: Callable[[Any], bool], want: str, default: Any = _MISSING):
        self.seen.add(name)
        if name not in self.data:
            if default is _MISSING:
                self.fail(self.key(name), "is missing")
            return default
        value = self.data[name]
        if not check(value):
            self.fail(self.key(name), f"must be {want}, got {json.dumps(value)}")
        return value

    def text(self, name: str, default: Any = _MISSING) -> str:
        return self.get(
            name, lambda v: isinstance(v, str) and v != "", "a non-empty string", default
        )

    def choice(self, name: str, options: tuple[str, ...], default: Any = _MISSING) -> str:
        want = "one of " + ", ".join(f"'{o}'" for o in options)
        return self.get(name, lambda v: v in options, want, default)

    def integer(self, name: str, low: int, high: int, default: Any = _MISSING) -> int:
        return self.get(
            name,
            lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high,
            f"an integer from {low} to {high}",
            default,
        )

    def number(self, name: str, low: float, high: float, default: Any = _MISSING) -> float:
        value = self.get(
            name,
            lambda v: isinstance(v, int | float) and not isinstance(v, bool) and low <= v <= high,
            f"a number from {low} to {high}",
            default,
        )
        return float(value)

    def boolean(self, name: str, default: Any = _MISSING) -> bool:
        return self.get(name, lambda v: isinstance(v, bool), "true or false", default)

    def child(self, name: str, default: Any = _MISSING) -> _Reader | None:
        value = self.get(name, lambda v: isinstance(v, dict), "a JSON object", default)
        return None if value is None else _Reader(self.path, value, self.key(name))

    def file(self, name: str, default: Any = _MISSING) -> Path | None:
        rel = self.text(name, default)
        if rel is None:
            return None
        resolved = (self.path.parent / rel).resolve()
        if not resolved.is_file():
            self.fail(self.key(name), f"names '{rel}', which does not exist beside the manifest")
        return resolved

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            self.fail(self.key(unknown[0]), "is not a known manifest key")


def _is_vec3(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) == 3
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
    )


def _is_rgb(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) == 3
        and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 255 for x in v)
    )


def _is_size2(v: Any, low: int = 1) -> bool:
    return (
        isinstance(v, list)
        and len(v) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) and low <= x <= 16384 for x in v)
    )


def _voxel_grid(r: _Reader) -> VoxelGrid:
    vr = r.child("voxel_grid", {})
    grid = VoxelGrid(
        placement=vr.choice("placement", ("points", "cells"), "points"),
        surface=vr.choice("surface", ("ball", "cube"), "ball"),
        inside=vr.choice("inside", ("ray_x", "ray_z_both"), "ray_x"),
        point_samples=vr.integer("point_samples", 1, 10_000_000, 3000),
        seed=vr.integer("seed", 0, 2**32 - 1, 0),
    )
    vr.done()
    return grid


def _sampling(r: _Reader) -> Sampling:
    sr = r.child("sampling", {})
    sampling = Sampling(
        align_corners=sr.boolean("align_corners", True),
        padding_mode=sr.choice("padding_mode", ("zeros", "border", "reflection"), "zeros"),
        mode=sr.choice("mode", ("bilinear", "nearest", "bicubic"), "bilinear"),
    )
    sr.done()
    return sampling


def _seg_inference(r: _Reader, output_kind: str) -> SegInference:
    ir = r.child("inference", {})
    mode = ir.choice("mode", ("whole", "slide"), "whole")
    want = "[height, width] in pixels"
    crop = ir.get("crop_size", lambda v: v is None or _is_size2(v), want, None)
    stride = ir.get("stride", lambda v: v is None or _is_size2(v), want, None)
    if mode == "slide" and (crop is None or stride is None):
        ir.fail(ir.key("crop_size" if crop is None else "stride"), "is needed with mode 'slide'")
    if mode == "whole" and (crop is not None or stride is not None):
        ir.fail(ir.key("crop_size" if crop else "stride"), "is only used with mode 'slide'")
    inference = SegInference(
        mode=mode,
        crop_size=None if crop is None else (crop[0], crop[1]),
        stride=None if stride is None else (stride[0], stride[1]),
        flip=ir.boolean("flip", False),
        interpolation=ir.choice("interpolation", ("bilinear", "nearest"), "bilinear"),
        align_corners=ir.boolean("align_corners", False),
    )
    if output_kind == "labels" and (inference.flip or mode == "slide"):
        what = "flip" if inference.flip else "mode"
        ir.fail(ir.key(what), "needs scores to average; output_kind 'labels' has none")
    ir.done()
    return inference


def _server(r: _Reader) -> ServerModel | None:
    server_r = r.child("server", None)
    if server_r is None:
        return None
    version = server_r.get(
        "version",
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "a version number of at least 1",
        None,
    )
    spec = ServerModel(
        name=server_r.text("name", r.path.stem), version="" if version is None else str(version)
    )
    server_r.done()
    return spec


def _crown(r: _Reader, name: str, version: str) -> CrownModel:
    onnx = r.file("onnx", None)
    encoder = r.file("encoder_onnx", None)
    decoder = r.file("decoder_onnx", None)
    features: tuple[str, ...] = ()
    if onnx is None:
        if encoder is None or decoder is None:
            r.fail("onnx", "is missing (give 'onnx', or both 'encoder_onnx' and 'decoder_onnx')")
        features = tuple(
            r.get(
                "features",
                lambda v: isinstance(v, list) and v and all(isinstance(s, str) for s in v),
                "a non-empty list of tensor names",
            )
        )
    elif encoder is not None or decoder is not None:
        r.fail("encoder_onnx", "cannot be given together with 'onnx'")

    inputs_r = r.child("inputs")
    inputs = {"voxels": inputs_r.text("voxels"), "points": inputs_r.text("points")}
    inputs_r.done()

    frame_r = r.child("frame")
    mode = frame_r.choice("mode", ("fixed", "bbox"))
    size_mm = frame_r.number("size_mm", 0.1, 1000.0, 20.0)
    center = frame_r.get(
        "center", lambda v: v == "bbox" or _is_vec3(v), "'bbox' or [x, y, z] in mm", "bbox"
    )
    axes = ("+x", "-x", "+y", "-y", "+z", "-z")
    occlusal = frame_r.choice("occlusal", axes, "+z")
    mesial = frame_r.choice("mesial", axes, "+x")
    if occlusal[1] == mesial[1]:
        frame_r.fail(
            frame_r.key("mesial"), f"must be perpendicular to 'occlusal' ({occlusal}), got {mesial}"
        )
    frame_r.done()
    frame = Frame(
        mode,
        size_mm,
        center if center == "bbox" else tuple(float(c) for c in center),
        occlusal,
        mesial,
    )

    gen_r = r.child("generation", {})
    resolution = gen_r.integer("resolution", 8, 1024, 256)
    coarse = gen_r.get(
        "coarse_resolution",
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and 4 <= v),
        "null or an integer of at least 4",
        None,
    )
    if coarse is not None and (coarse >= resolution or (resolution - 1) % (coarse - 1)):
        gen_r.fail(
            gen_r.key("coarse_resolution"),
            f"must be below 'resolution' ({resolution}) with (resolution - 1) a multiple of "
            f"(coarse_resolution - 1), got {coarse}",
        )
    generation = Generation(
        resolution=resolution,
        threshold=gen_r.number("threshold", 0.0, 1.0, 0.5),
        batch_points=gen_r.integer("batch_points", 1, 50_000_000, 200_000),
        coarse_resolution=coarse,
        decoder_memory_mb=gen_r.integer("decoder_memory_mb", 16, 1_000_000, 1536),
        fast_decoder=gen_r.boolean("fast_decoder", True),
        decoder_int8=gen_r.boolean("decoder_int8", False),
        refine_margin=gen_r.number("refine_margin", 0.0, 100.0, 2.0),
    )
    gen_r.done()

    smooth_r = r.child("smoothing", {})
    smoothing = Smoothing(
        method=smooth_r.choice("method", ("none", "laplacian", "taubin"), "taubin"),
        iterations=smooth_r.integer("iterations", 0, 1000, 10),
    )
    smooth_r.done()

    post_r = r.child("postprocess", {})
    postprocess = PostProcess(
        keep=post_r.choice("keep", ("largest", "over_preparation", "all"), "largest"),
        min_volume_mm3=post_r.number("min_volume_mm3", 0.0, 1e6, 1.0),
    )
    post_r.done()

    checks_r = r.child("checks", {})
    defaults = Checks()

    def triple(name: str, default: tuple[float, float, float]) -> tuple[float, float, float]:
        value = checks_r.get(
            name,
            lambda v: _is_vec3(v) and all(x >= 0 for x in v),
            "[mesio-distal, bucco-lingual, occlusal] in mm, each at least 0",
            list(default),
        )
        return tuple(float(x) for x in value)  # type: ignore[return-value]

    checks = Checks(
        extent_min_mm=triple("extent_min_mm", defaults.extent_min_mm),
        extent_max_mm=triple("extent_max_mm", defaults.extent_max_mm),
        volume_min_mm3=checks_r.number("volume_min_mm3", 0.0, 1e6, defaults.volume_min_mm3),
        volume_max_mm3=checks_r.number("volume_max_mm3", 0.0, 1e6, defaults.volume_max_mm3),
        max_base_gap_mm=checks_r.number("max_base_gap_mm", 0.0, 100.0, defaults.max_base_gap_mm),
        max_removed_share=checks_r.number(
            "max_removed_share", 0.0, 1e6, defaults.max_removed_share
        ),
    )
    checks_r.done()

    spec = CrownModel(
        manifest_path=r.path,
        name=name,
        version=version,
        onnx=onnx,
        inputs=inputs,
        output=r.text("output"),
        output_kind=r.choice("output_kind", ("logits", "probability"), "logits"),
        voxel_resolution=r.integer("voxel_resolution", 4, 512),
        voxelization=r.choice("voxelization", ("solid", "surface", "point_cloud"), "solid"),
        frame=frame,
        point_convention=r.choice("point_convention", ("ifnet", "unit"), "ifnet"),
        generation=generation,
        smoothing=smoothing,
        postprocess=postprocess,
        checks=checks,
        encoder_onnx=encoder,
        decoder_onnx=decoder,
        features=features,
        voxel_grid=_voxel_grid(r),
        sampling=_sampling(r),
        server=_server(r),
        default=r.boolean("default", False),
    )
    r.done()
    return spec


def _segmentation(r: _Reader, name: str, version: str) -> SegmentationModel:
    size = r.get(
        "input_size", lambda v: v is None or _is_size2(v, 8), "null or [height, width] in pixels"
    )
    resize = r.choice("resize", ("stretch", "keep_ratio_pad", "keep_ratio"), "stretch")
    scale = r.get("scale", lambda v: v is None or _is_size2(v), "[long side, short side]", None)
    if resize == "keep_ratio" and scale is None:
        r.fail("scale", "must be given with resize 'keep_ratio'")
    if resize == "keep_ratio" and size is not None:
        r.fail("input_size", "must be null with resize 'keep_ratio' (the size follows the image)")
    if resize != "keep_ratio" and scale is not None:
        r.fail("scale", "is only used with resize 'keep_ratio'")
    output_kind = r.choice("output_kind", ("logits", "probabilities", "labels"))
    classes_raw = r.get(
        "classes",
        lambda v: isinstance(v, list) and 1 <= len(v) <= 256,
        "a list of 1 to 256 classes",
    )
    classes = []
    for i, item in enumerate(classes_raw):
        cr = _Reader(r.path, item, f"classes[{i}]")
        classes.append(
            SegClass(cr.text("name"), tuple(cr.get("color", _is_rgb, "[r, g, b] from 0 to 255")))
        )
        cr.done()

    roi_r = r.child("roi", None)
    if roi_r is None:
        roi = Roi(enabled=False, method="threshold", margin=0.08, min_margin_px=32, downscale=8)
    else:
        roi = Roi(
            enabled=roi_r.boolean("enabled", True),
            method=roi_r.choice("method", ("threshold", "model"), "threshold"),
            margin=roi_r.number("margin", 0.0, 2.0, 0.08),
            min_margin_px=roi_r.integer("min_margin_px", 0, 4096, 32),
            downscale=roi_r.integer("downscale", 1, 64, 8),
        )
        roi_r.done()

    speed_r = r.child("speed", {})
    speed = Speed(
        precision=speed_r.choice("precision", ("fp32", "int8"), "fp32"),
        long_side=speed_r.get(
            "long_side",
            lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 32),
            "null or a number of pixels (at least 32)",
            None,
        ),
    )
    if speed.long_side is not None and (size is not None or resize == "keep_ratio"):
        speed_r.fail(
            speed_r.key("long_side"),
            "needs a model with input_size null and no keep_ratio resize (that sets its own scale)",
        )
    speed_r.done()

    def vec3(key: str) -> tuple[float, float, float]:
        return tuple(float(x) for x in r.get(key, _is_vec3, "a list of three numbers"))

    std = vec3("std")
    if any(s <= 0 for s in std):
        r.fail("std", "must hold three positive numbers")
    spec = SegmentationModel(
        manifest_path=r.path,
        name=name,
        version=version,
        onnx=r.file("onnx"),
        input=r.text("input"),
        output=r.text("output"),
        input_size=None if size is None else (size[0], size[1]),
        resize=resize,
        mean=vec3("mean"),
        std=std,
        to_rgb=r.boolean("to_rgb", True),
        output_kind=output_kind,
        classes=tuple(classes),
        size_divisor=r.integer("size_divisor", 1, 1024, 1 if resize == "keep_ratio" else 32),
        roi=roi,
        scale=None if scale is None else (max(scale), min(scale)),
        inference=_seg_inference(r, output_kind),
        server=_server(r),
        default=r.boolean("default", False),
        speed=speed,
    )
    r.done()
    return spec


def load_manifest(path: str | Path) -> ModelSpec:
    """Read and validate one manifest; raise :class:`ModelError` naming the file and key."""
    path = Path(path).resolve()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelError(path, "manifest file does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(path, f"cannot read manifest: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(path, f"not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    except RecursionError as exc:
        raise ModelError(path, "not a manifest: lists or objects nested too deeply") from exc
    r = _Reader(path, data)
    kind = r.choice("kind", ("crown", "segmentation"))
    name = r.text("name")
    version = r.get("version", lambda v: isinstance(v, str | int), "a string", "1")
    if kind == "crown":
        return _crown(r, name, str(version))
    return _segmentation(r, name, str(version))


@dataclass(frozen=True)
class ModelListing:
    """Result of scanning a folder: the valid specs and the manifests that failed, with why."""

    models: list[ModelSpec]
    errors: list[ModelError]


def scan_models(folder: str | Path) -> ModelListing:
    """Load every ``*.json`` manifest in ``folder`` (not recursive), sorted by file name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(folder, "models folder does not exist")
    models: list[ModelSpec] = []
    errors: list[ModelError] = []
    for path in sorted(folder.glob("*.json")):
        try:
            models.append(load_manifest(path))
        except ModelError as exc:
            errors.append(exc)
    return ModelListing(models, errors)


def find_model(
    ref: str | Path | None, kind: str, folder: str | Path, preferred: str | None = None
) -> ModelSpec:
    """Resolve ``ref`` (a manifest path, a model id in ``folder``, or None for the default of
    ``kind`` there) to a validated spec of that kind whose ONNX files load with the inputs and
    outputs the manifest declares.

    The default is ``preferred`` (a model id from the settings), else a manifest marked
    ``"default": true``, else the first by file name, each only when it is usable: a broken
    model is skipped, never chosen (see :mod:`app.core.model_choice`).
    """
    from app.core.model_choice import choose_default, model_problem

    if ref is not None and (str(ref).endswith(".json") or Path(ref).is_file()):
        spec = load_manifest(ref)
    elif ref is None:
        return choose_default(scan_models(folder), kind, folder, preferred)
    else:
        listing = scan_models(folder)
        matches = [m for m in listing.models if m.kind == kind and m.id == ref]
        if not matches:
            for err in listing.errors:
                if err.path is not None and err.path.stem == ref:
                    raise err
            raise ModelError(folder, f"no {kind} model '{ref}' in this models folder")
        spec = matches[0]
    if spec.kind != kind:
        raise ModelError(spec.manifest_path, f"is a {spec.kind} model, a {kind} model is needed")
    problem = model_problem(spec)
    if problem is not None:
        raise ModelError(spec.manifest_path, problem)
    return spec
