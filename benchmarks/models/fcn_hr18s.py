"""Recipe for the benchmark segmentation model: mmseg ``fcn_hr18s``, random weights.

The network a lab runs on its 1400x1600 model-scan images: HRNetV2-W18-Small with an FCN head,
built by MMSegmentation 1.2.2 itself from its own config
(``hrnet/fcn_hr18s_4xb2-40k_cityscapes-512x1024.py``) with these changes only:

- ``SyncBN`` becomes ``BN`` (one CPU process), no pretrained checkpoint (no download), weights
  from mmengine's own initialisation under ``torch.manual_seed(SEED)``;
- the head has the demo model's 3 classes (background, gingiva, tooth) instead of
  Cityscapes' 19: the classifier is a 1x1 conv at 1/4 resolution either way, and 3 planes
  keep the decode the size a dental model's is;
- ``mmcv.ops`` (compiled ops that ``mmcv-lite`` lacks) is replaced by a stub before mmseg is
  imported: ``fcn_hr18s`` uses none of them, and any use raises.

mmseg's HRNet fuse layers upsample with ``Upsample(scale_factor=2**k)``, which computes its
output size as ``int(size * factor)``; the ONNX tracer records those ints as constants, so a
graph exported at one size silently computes garbage at another (max logit difference ~100 at
1400x1600 for a 512x640 dummy). :func:`use_scale_factors` swaps them for interpolations by the
scale factor itself (same sizes, same sampling); the fuse's own resize to the branch's size is
left as mmseg has it. The export is then checked against PyTorch at sizes other than the
dummy's.

Two exports, each with a manifest beside it:

- ``fcn_hr18s_labels.onnx``: the handover's way (mmseg 0.x ``pytorch2onnx``): input fixed at
  (1, 3, 1400, 1600), logits resized to the input, softmax, argmax: int64 labels (1, 1, H, W);
- ``fcn_hr18s_logits.onnx``: dynamic height and width, the head's logits at 1/4 of the input
  (1, 3, H/4, W/4); the app resizes them back as mmseg does. This is the one the ROI crop,
  the reduced inference scale and the int8 model can use.

Needs PyTorch, MMSegmentation 1.2.2, ``mmcv-lite`` 2.1 and mmengine (not the app's
dependencies; the committed ONNX files are what the app and ``crownscan bench`` use):

    python -m benchmarks.models.fcn_hr18s [FOLDER]   # default: benchmarks/models
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import numpy as np

SEED = 0
HEIGHT, WIDTH = 1400, 1600
CONFIG = "hrnet/fcn_hr18s_4xb2-40k_cityscapes-512x1024.py"
CLASSES = (
    ("background", (0, 0, 0)),
    ("gingiva", (230, 120, 120)),
    ("tooth", (240, 230, 140)),
)
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
DUMMY = (512, 640)
"""Export size of the dynamic graph; the check runs it at other sizes."""
CHECK_SIZES = ((704, 832), (HEIGHT, WIDTH), (600, 1000))
OPSET = 17
HERE = Path(__file__).resolve().parent


def stub_mmcv_ops() -> None:
    """Register an ``mmcv.ops`` module whose every name is a class that raises when used."""
    if "mmcv.ops" in sys.modules and not getattr(sys.modules["mmcv.ops"], "_stub", False):
        return
    stub = types.ModuleType("mmcv.ops")
    stub.__path__ = []
    stub._stub = True

    def missing(name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)

        def fail(*_args, **_kwargs):
            raise RuntimeError(f"mmcv.ops.{name} is not available (mmcv-lite, stubbed)")

        return type(name, (), {"__init__": fail, "__call__": fail})

    stub.__getattr__ = missing
    sys.modules["mmcv.ops"] = stub


def build_network(seed: int = SEED):
    """The mmseg ``EncoderDecoder`` for ``fcn_hr18s``, randomly initialised, in eval mode."""
    stub_mmcv_ops()
    import mmseg
    import torch
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    MMLogger.get_instance("mmengine", log_level="WARNING")
    cfg = Config.fromfile(str(Path(mmseg.__file__).parent / ".mim" / "configs" / CONFIG))
    bn = {"type": "BN", "requires_grad": True}
    cfg.model.backbone.norm_cfg = bn
    cfg.model.decode_head.norm_cfg = bn
    cfg.model.decode_head.num_classes = len(CLASSES)
    cfg.model.pretrained = None
    cfg.model.data_preprocessor = None
    torch.manual_seed(seed)
    net = MODELS.build(cfg.model)
    net.init_weights()
    return net.eval()


def use_scale_factors(module) -> int:
    """Replace every size-computing mmseg ``Upsample`` under ``module`` by an interpolation
    with the same scale factor; returns how many were replaced."""
    from mmseg.models.utils import Upsample
    from torch import nn
    from torch.nn import functional as F

    class ScaleUpsample(nn.Module):
        def __init__(self, factor: float, mode: str, align_corners: bool | None) -> None:
            super().__init__()
            self.factor, self.mode, self.align_corners = factor, mode, align_corners

        def forward(self, x):
            return F.interpolate(
                x, scale_factor=self.factor, mode=self.mode, align_corners=self.align_corners
            )

    count = 0
    for name, child in module.named_children():
        if isinstance(child, Upsample) and not child.size:
            swap = ScaleUpsample(child.scale_factor, child.mode, child.align_corners)
            setattr(module, name, swap)
            count += 1
        else:
            count += use_scale_factors(child)
    return count


def export_nets(segmentor):
    """``(logits, labels)`` modules over the segmentor's backbone and head."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = segmentor.backbone
            self.head = segmentor.decode_head

        def forward(self, x):
            return self.head(self.backbone(x))

    class Labels(nn.Module):
        def __init__(self, logits: nn.Module) -> None:
            super().__init__()
            self.logits = logits

        def forward(self, x):
            up = F.interpolate(
                self.logits(x), size=x.shape[2:], mode="bilinear", align_corners=False
            )
            return torch.argmax(F.softmax(up, dim=1), dim=1, keepdim=True)

    logits = Logits().eval()
    return logits, Labels(logits).eval()


def _export(net, path: Path, size: tuple[int, int], dynamic: bool) -> None:
    import torch

    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    axes = {"input": {2: "height", 3: "width"}, "output": {2: "out_h", 3: "out_w"}}
    with torch.no_grad():
        torch.onnx.export(
            net,
            (torch.zeros(1, 3, *size),),
            str(tmp),
            input_names=["input"],
            output_names=["output"],
            opset_version=OPSET,
            dynamic_axes=axes if dynamic else None,
            dynamo=False,
        )
    os.replace(tmp, path)


def check(net, path: Path, sizes: tuple[tuple[int, int], ...], seed: int = 1) -> list[dict]:
    """Run ``path`` in ONNX Runtime and ``net`` in PyTorch on random inputs of each size."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for h, w in sizes:
        x = torch.randn(1, 3, h, w, generator=gen)
        with torch.no_grad():
            ref = net(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        row: dict = {"size": [h, w], "shape": list(got.shape)}
        if got.shape != ref.shape:
            row["error"] = f"shape {list(got.shape)} != torch {list(ref.shape)}"
        elif np.issubdtype(ref.dtype, np.integer):
            row["label_agreement"] = float((got == ref).mean())
        else:
            row["max_abs_diff"] = float(np.abs(got - ref).max())
            row["max_abs_logit"] = float(np.abs(ref).max())
            row["label_agreement"] = float((got.argmax(1) == ref.argmax(1)).mean())
        rows.append(row)
    return rows


def manifest(onnx_name: str, labels: bool) -> dict:
    """The app's manifest for one export (keys as in ``models/scanseg_demo.json``)."""
    return {
        "kind": "segmentation",
        "name": "fcn_hr18s benchmark (random weights, "
        + ("int64 labels at 1400x1600" if labels else "logits, any size")
        + ")",
        "version": "1",
        "onnx": onnx_name,
        "input": "input",
        "output": "output",
        "input_size": [HEIGHT, WIDTH] if labels else None,
        "resize": "stretch",
        "mean": list(MEAN),
        "std": list(STD),
        "to_rgb": True,
        "output_kind": "labels" if labels else "logits",
        "classes": [{"name": n, "color": list(c)} for n, c in CLASSES],
        "size_divisor": 32,
        "roi": {
            "enabled": not labels,
            "method": "threshold",
            "margin": 0.25,
            "min_margin_px": 128,
            "downscale": 8,
        },
    }


def build(folder: Path = HERE, seed: int = SEED) -> dict:
    """Build both exports and their manifests into ``folder``; returns the check figures."""
    import torch

    torch.manual_seed(seed)
    segmentor = build_network(seed)
    replaced = use_scale_factors(segmentor)
    logits, labels = export_nets(segmentor)
    folder.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "parameters": int(sum(p.numel() for p in segmentor.parameters())),
        "upsamples_replaced": replaced,
    }
    for name, net, size, dynamic in (
        ("fcn_hr18s_logits", logits, DUMMY, True),
        ("fcn_hr18s_labels", labels, (HEIGHT, WIDTH), False),
    ):
        path = folder / f"{name}.onnx"
        _export(net, path, size, dynamic)
        (folder / f"{name}.json").write_text(
            json.dumps(manifest(path.name, not dynamic), indent=2) + "\n", "utf-8"
        )
        sizes = CHECK_SIZES if dynamic else ((HEIGHT, WIDTH),)
        mb = round(path.stat().st_size / 2**20, 2)
        report[name] = {"mb": mb, "check": check(net, path, sizes)}
    return report


if __name__ == "__main__":
    torch_threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    import torch

    torch.set_num_threads(torch_threads)
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    print(json.dumps(build(target), indent=2))
