"""MobileNetV2 (Sandler et al. 2018) laid out as resolution stages, private to :mod:`transferlab.nets.pretrained`.

The layers are torchvision's ``features.0`` ... ``features.18`` (same submodule structure, same
parameter and buffer names below the layer index), grouped into six stages. Inside a stage each
layer keeps its checkpoint index as its child name, so ``stages.stride8.5.conv.1.0.weight`` is the
checkpoint's ``features.5.conv.1.0.weight``: :func:`checkpoint_key` is that renaming.

Stages (the spatial stride relative to the input closes each stage):

========== ================ ============ =================================
stage      checkpoint layers out channels  stride (64x64 input -> map size)
========== ================ ============ =================================
stem       features.0-1     16           2 (32x32)
stride4    features.2-3     24           4 (16x16)
stride8    features.4-6     32           8 (8x8)
stride16   features.7-13    96           16 (4x4)
stride32   features.14-17   320          32 (2x2)
conv_head  features.18      1280         32 (2x2), the 1x1 conv to 1280
========== ================ ============ =================================
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

__all__ = ["FEATURE_DIM", "STAGES", "build_stages", "checkpoint_key"]

# Inverted-residual settings of the paper's Table 2: (expansion t, output channels c, repeats n, first stride s).
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
_STEM_CHANNELS = 32
FEATURE_DIM = 1280

# Stage name -> the checkpoint layer indices [start, stop) it holds.
STAGES: tuple[tuple[str, int, int], ...] = (
    ("stem", 0, 2),
    ("stride4", 2, 4),
    ("stride8", 4, 7),
    ("stride16", 7, 14),
    ("stride32", 14, 18),
    ("conv_head", 18, 19),
)


def _conv_bn_relu6(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias, symmetric padding) -> BatchNorm -> ReLU6: children ``0``, ``1``, ``2``."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    """1x1 expansion (omitted when t = 1) -> 3x3 depthwise -> linear 1x1 projection, residual when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = [] if expansion == 1 else [_conv_bn_relu6(c_in, hidden, 1)]
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.residual else y


def _layers() -> list[nn.Module]:
    """The 19 layers ``features.0`` ... ``features.18`` in order."""
    layers: list[nn.Module] = [_conv_bn_relu6(3, _STEM_CHANNELS, 3, stride=2)]
    c_in = _STEM_CHANNELS
    for t, c, n, s in _SETTINGS:
        for i in range(n):
            layers.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
            c_in = c
    layers.append(_conv_bn_relu6(c_in, FEATURE_DIM, 1))
    return layers


def build_stages() -> nn.Sequential:
    """The backbone as ``nn.Sequential`` of the :data:`STAGES`, each an ``nn.Sequential`` keyed by checkpoint index."""
    layers = _layers()
    return nn.Sequential(
        OrderedDict(
            (name, nn.Sequential(OrderedDict((str(i), layers[i]) for i in range(start, stop))))
            for name, start, stop in STAGES
        )
    )


def checkpoint_key(key: str) -> str:
    """Key of the torchvision checkpoint for ``key`` of :func:`build_stages`' state dict: ``<stage>.<i>.rest`` ->
    ``features.<i>.rest``."""
    _, rest = key.split(".", 1)
    return f"features.{rest}"
