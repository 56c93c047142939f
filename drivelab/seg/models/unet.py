"""U-Net written from scratch (Ronneberger et al. 2015) with configurable depth and width.

``base=64, depth=4`` is the classic 31M-parameter U-Net the seed projects trained; ``base=16``
is a ~2M-parameter model that trains on a laptop CPU. Padding keeps sizes, batch norm after
every conv, bilinear or transposed-conv upsampling.
"""

from __future__ import annotations

import torch
from torch import nn

from drivelab.seg.models.base import SegModel


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class Up(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int, bilinear: bool) -> None:
        super().__init__()
        if bilinear:
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                    nn.Conv2d(cin, cin // 2, 1))
        else:
            self.up = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
        self.conv = conv_block(cin // 2 + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNetNet(nn.Module):
    def __init__(self, num_classes: int, base: int = 64, depth: int = 4, bilinear: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.stem = conv_block(3, widths[0])
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), conv_block(widths[i], widths[i + 1]))
                                   for i in range(depth))
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i], widths[i], bilinear)
                                 for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encode(x)
        y = self.drop(feats[-1])
        for up, skip in zip(self.ups, reversed(feats[:-1]), strict=True):
            y = up(y, skip)
        return self.head(y)


class PlainUNet(SegModel):
    """From-scratch U-Net. ``stages`` are the stem and every downsampling block; ``encode`` is the
    bottleneck (stride 2**depth)."""

    def __init__(self, num_classes: int, base: int = 64, depth: int = 4, bilinear: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__(UNetNet(num_classes, base=base, depth=depth, bilinear=bilinear, dropout=dropout))

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.net.encode(self.normalize(x))
