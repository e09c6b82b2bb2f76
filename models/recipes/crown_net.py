"""A small implicit occupancy network of the IF-Net family, written from the idea alone.

Encoder: the voxel grid itself plus four 3-D conv stages at falling resolution (R, R/2, R/4,
R/8) give five feature volumes. Decoder: every volume is sampled trilinearly at each query point
and at six copies displaced by +-d along each axis; the concatenated features go through a
point-wise MLP to one occupancy logit.

Points follow the IF-Net convention: a unit-cube point (x, y, z) arrives as 2*(z, y, x), the
order ``grid_sample`` reads an [x, y, z]-indexed volume in, with ``align_corners=True``.
Sampling is written with plain ops (Floor, Gather, Mul, Add) so the ONNX graph has no GridSample
and TensorRT can take it; :func:`trilinear_sample` is that fast path and ``grid_sample`` is the
reference the recipe and tests compare it with.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def trilinear_sample(vol: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Sample ``vol`` (B, C, D, H, W) at ``p`` (B, N, 3) -> (B, C, N).

    Same as ``grid_sample(vol, p[:, :, None, None], align_corners=True, padding_mode="border")``:
    p[..., 0] indexes W, p[..., 1] H, p[..., 2] D, each in [-1, 1]; points outside the cube
    take the border value.
    """
    b, c, d, h, w = vol.shape
    sizes = torch.tensor([w, h, d], dtype=p.dtype, device=p.device)
    idx = (p + 1.0) * 0.5 * (sizes - 1.0)
    idx = torch.minimum(torch.clamp(idx, min=0.0), sizes - 1.0)
    i0 = torch.minimum(torch.floor(idx), torch.clamp(sizes - 2.0, min=0.0))
    t = idx - i0
    i0 = i0.to(torch.int64)
    iw, ih, idd = i0[..., 0], i0[..., 1], i0[..., 2]
    tw, th, td = t[..., 0:1], t[..., 1:2], t[..., 2:3]
    flat = vol.reshape(b, c, d * h * w)
    n = p.shape[1]

    def corner(dd: int, dh: int, dw: int) -> torch.Tensor:
        lin = ((idd + dd) * h + (ih + dh)) * w + (iw + dw)
        return torch.gather(flat, 2, lin.unsqueeze(1).expand(b, c, n))

    twt, tht, tdt = tw.transpose(1, 2), th.transpose(1, 2), td.transpose(1, 2)
    c00 = corner(0, 0, 0) * (1 - twt) + corner(0, 0, 1) * twt
    c01 = corner(0, 1, 0) * (1 - twt) + corner(0, 1, 1) * twt
    c10 = corner(1, 0, 0) * (1 - twt) + corner(1, 0, 1) * twt
    c11 = corner(1, 1, 0) * (1 - twt) + corner(1, 1, 1) * twt
    c0 = c00 * (1 - tht) + c01 * tht
    c1 = c10 * (1 - tht) + c11 * tht
    return c0 * (1 - tdt) + c1 * tdt


def reference_sample(vol: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The plain PyTorch reference for :func:`trilinear_sample`."""
    out = F.grid_sample(
        vol, p[:, :, None, None, :], mode="bilinear", padding_mode="border", align_corners=True
    )
    return out[:, :, :, 0, 0]


def _block(cin: int, cout: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv3d(cin if i == 0 else cout, cout, 3, padding=1),
            nn.BatchNorm3d(cout),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class CrownNet(nn.Module):
    """Multi-scale voxel encoder + displaced trilinear features + point-wise MLP.

    ``forward(x, p)``: x (B, R, R, R) 0/1 floats, p (B, N, 3) IF-Net convention -> (B, N) logits.
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (12, 24, 48, 64),
        convs: tuple[int, ...] = (1, 1, 2, 2),
        hidden: int = 128,
        displacement: float = 0.05,
        use_reference_sampler: bool = False,
    ) -> None:
        super().__init__()
        stages, cin = [], 1
        for cout, k in zip(channels, convs, strict=True):
            stages.append(_block(cin, cout, k))
            cin = cout
        self.stages = nn.ModuleList(stages)
        disp = [[0.0, 0.0, 0.0]]
        for axis in range(3):
            for sign in (-1.0, 1.0):
                v = [0.0, 0.0, 0.0]
                v[axis] = sign * displacement
                disp.append(v)
        self.register_buffer("displacements", torch.tensor(disp, dtype=torch.float32))
        n_feat = (1 + sum(channels)) * len(disp)
        self.decoder = nn.Sequential(
            nn.Linear(n_feat, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, 1),
        )
        self.use_reference_sampler = use_reference_sampler

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        vol = x.unsqueeze(1)
        feats = [vol]
        for i, stage in enumerate(self.stages):
            if i > 0:
                vol = F.max_pool3d(vol, 2)
            vol = stage(vol)
            feats.append(vol)
        return feats

    def decode(self, feats: list[torch.Tensor], p: torch.Tensor) -> torch.Tensor:
        b, n, _ = p.shape
        k = self.displacements.shape[0]
        q = (p.unsqueeze(2) + self.displacements).reshape(b, n * k, 3)
        sample = reference_sample if self.use_reference_sampler else trilinear_sample
        parts = [sample(f, q).reshape(b, f.shape[1], n, k) for f in feats]
        feat = torch.cat(parts, dim=1)  # (B, C, N, K)
        feat = feat.permute(0, 2, 1, 3).reshape(b, n, -1)
        return self.decoder(feat).squeeze(-1)

    def forward(self, x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), p)


def parameter_count(model: nn.Module) -> int:
    return sum(int(t.numel()) for t in model.parameters())
