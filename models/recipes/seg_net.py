"""A small fully convolutional segmentation network (FCN-style encoder-decoder) for the demo.

Encoder: strided 3x3 convolutions down to 1/64 with dilated convolutions at 1/16, 1/32 and 1/64
for context; decoder: upsample and add lateral 1x1 projections of the 1/32, 1/16, 1/8 and 1/4
features (skips), a 3x3 conv at each, 3-class logits at 1/4 resized bilinearly to the input size.
Fully convolutional with no global pooling, so its receptive field is bounded (about a thousand
pixels of the full image) and a crop with a margin gives the same labels as the whole frame. Any
input height and width work; multiples of 64 keep every grid exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
NUM_CLASSES = 3
DOWNSCALE = 4
"""The inner network runs on the input average-pooled by this factor."""


def _cbr(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class InnerNet(nn.Module):
    """The network proper, on the image already downscaled by :data:`DOWNSCALE`.

    (N, 3, h, w) -> (N, 3, h, w) logits: encoder to 1/16 of its input with dilated context
    convolutions at 1/4, 1/8 and 1/16, decoder with lateral skips at 1/8, 1/4, 1/2 and 1/1.
    The wide context tells a tinted plate from a stone base of the same colour: a plate region
    has no teeth anywhere near it, a gingiva region always has.
    """

    def __init__(self, widths: tuple[int, int, int, int, int] = (16, 32, 64, 96, 128)) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = widths
        self.stem = _cbr(3, c1)
        self.down2 = nn.Sequential(_cbr(c1, c2, 2), _cbr(c2, c2))
        self.down3 = nn.Sequential(
            _cbr(c2, c3, 2),
            _cbr(c3, c3, dilation=2),
            _cbr(c3, c3, dilation=4),
        )
        self.down4 = nn.Sequential(
            _cbr(c3, c4, 2),
            _cbr(c4, c4, dilation=2),
            _cbr(c4, c4, dilation=4),
        )
        self.down5 = nn.Sequential(_cbr(c4, c5, 2), _cbr(c5, c5, dilation=2))
        self.top5 = nn.Conv2d(c5, c4, 1)
        self.lat4 = nn.Conv2d(c4, c4, 1)
        self.fuse4 = _cbr(c4, c4)
        self.top4 = nn.Conv2d(c4, c3, 1)
        self.lat3 = nn.Conv2d(c3, c3, 1)
        self.fuse3 = _cbr(c3, c3)
        self.top3 = nn.Conv2d(c3, c2, 1)
        self.lat2 = nn.Conv2d(c2, c2, 1)
        self.fuse2 = _cbr(c2, c2)
        self.top2 = nn.Conv2d(c2, c1, 1)
        self.lat1 = nn.Conv2d(c1, c1, 1)
        self.fuse1 = _cbr(c1, c1)
        self.classify = nn.Conv2d(c1, NUM_CLASSES, 1)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1 = self.stem(x)
        f2 = self.down2(f1)
        f3 = self.down3(f2)
        f4 = self.down4(f3)
        f5 = self.down5(f4)
        y = self.fuse4(self.lat4(f4) + self._up(self.top5(f5), f4))
        y = self.fuse3(self.lat3(f3) + self._up(self.top4(y), f3))
        y = self.fuse2(self.lat2(f2) + self._up(self.top3(y), f2))
        y = self.fuse1(self.lat1(f1) + self._up(self.top2(y), f1))
        return self.classify(y)


class ScanSegNet(nn.Module):
    """(1, 3, H, W) normalised RGB -> (1, 3, H, W) logits: average-pool by :data:`DOWNSCALE`,
    :class:`InnerNet` on the pooled image as it is, mirrored left-right, upside down and both
    (the four logit maps flipped back and averaged), bilinear resize back to the input size.

    The pooling is part of the graph, so the inner network always sees structures at the scale
    it was trained at (the training images are area-downscaled by the same factor). The flips
    are test-time augmentation: the network was trained with flips and 90-degree turns, yet its
    mistakes on hard scenes (a plate tinted like the stone, a base nearly as pale as the teeth)
    depend on orientation, and the average of four views removes many of them. Done on the
    pooled image they cost four inner passes and nothing at full size; flips export as ONNX
    ``Slice`` with step -1, which TensorRT takes.
    """

    VIEWS = ((3,), (2,), (2, 3))
    """Flipped views averaged with the unflipped one (dims of an NCHW tensor)."""

    def __init__(self, inner: InnerNet | None = None) -> None:
        super().__init__()
        self.inner = inner or InnerNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = F.avg_pool2d(x, DOWNSCALE, DOWNSCALE)
        logits = self.inner(small)
        for dims in self.VIEWS:
            logits = logits + torch.flip(self.inner(torch.flip(small, dims)), dims)
        logits = logits / (len(self.VIEWS) + 1)
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def normalise(rgb_uint8: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) float, as mmseg's Normalize with to_rgb."""
    x = rgb_uint8.permute(0, 3, 1, 2).float()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def export_onnx(model: ScanSegNet, path, opset: int = 17) -> None:
    """Export with dynamic height and width: input ``input``, output ``output``."""
    model = model.eval()
    dummy = torch.zeros(1, 3, 224, 256)
    torch.onnx.export(
        model,
        (dummy,),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {2: "height", 3: "width"}, "output": {2: "height", 3: "width"}},
        opset_version=opset,
        do_constant_folding=True,
        dynamo=False,
    )
