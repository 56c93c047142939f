"""What every drivelab semantic model is: [0, 1] RGB in, logits at input size out.

Normalisation lives inside the model (so an exported ONNX graph carries it too) and every
model exposes ``stages(x)``, its encoder's feature maps from the first convolution to the deepest,
and ``encode(x)``, the deepest of them, for embeddings and the data engine.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegModel(nn.Module):
    """Wraps a network ``net`` taking normalised input; subclasses say how to ``features``."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], H and W multiples of 32 -> logits (B, K, H, W)."""
        return self.net(self.normalize(x))

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> the encoder's feature maps, shallowest first (no identity
        stage: the first map is a convolution's output)."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> deepest feature map (B, C, H/32, W/32)."""
        return self.stages(x)[-1]
