"""Batched convolutional networks on the :class:`~transferlab.nets.blocks.BlockNet` interface.

:func:`small_cnn` builds ``I`` independent CNNs for small images (28 x 28 grey by default): one block
per channel stage, ``conv3x3 (padding 1) -> ReLU -> maxpool 2x2``, then one dense block
``flatten -> linear -> ReLU`` and a linear head. For channels (16, 32) on 1 x 28 x 28 inputs the
per-sample activation shapes are

    (1, 28, 28) -> conv1 (16, 14, 14) -> conv2 (32, 7, 7) -> dense (128,) -> head (10,).

Batched layers take and return ``(I, n, C, H, W)``. :class:`BatchedConv2d` runs all instances as one
grouped convolution: with x_i the input of instance i,

    (I, n, C, H, W) -> (n, I*C, H, W) --conv2d(groups=I)--> (n, I*C', H', W') -> (I, n, C', H', W'),

so group i sees only x_i and instance i's filters. Its output is a transposed *view* of the
``(n, I, C', H', W')`` buffer. Elementwise activations (``nn.ReLU``) need no wrapper: they accept any
shape and keep the input's memory layout; :class:`BatchedMaxPool2d` keeps whichever of the two
layouts it is given, so a conv -> ReLU -> pool -> conv chain never copies between layers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from transferlab._checks import check_int
from transferlab.errors import ConfigError
from transferlab.nets.blocks import BatchedLinear, BlockNet
from transferlab.nets.mlp import _FlattenSample

__all__ = ["BatchedConv2d", "BatchedMaxPool2d", "small_cnn"]


def _fold(x: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(I, n, C, H, W) as a 4-D tensor for a per-channel op, without a copy when possible.

    Returns the 4-D tensor and the map back to (I, n, C', H', W'). If the memory is laid out as
    (n, I, C, H, W) (a :class:`BatchedConv2d` output) the fold is (n, I*C, H, W), else (I*n, C, H, W).
    Both are valid for ops that act on every (sample, channel) plane separately (pooling, ReLU).
    """
    I, n, C = x.shape[:3]
    if x.transpose(0, 1).is_contiguous():
        folded = x.transpose(0, 1).reshape(n, I * C, *x.shape[3:])
        return folded, lambda z: z.reshape(n, I, C, *z.shape[2:]).transpose(0, 1)
    return x.reshape(I * n, C, *x.shape[3:]), lambda z: z.reshape(I, n, *z.shape[1:])


class BatchedConv2d(nn.Module):
    """``I`` independent 2-D convolutions (cross-correlations, as ``torch.nn.Conv2d``).

    Parameters: ``weight`` (I, C_out, C_in, k, k), ``bias`` (I, C_out). Input (I, n, C_in, H, W), or
    (n, C_in, H, W) broadcast to every instance, -> (I, n, C_out, H', W') with
    H' = floor((H + 2 padding - k) / stride) + 1 (W' likewise). Instance i computes

        y_i[:, o] = b_i[o] + sum_c W_i[o, c] * x_i[:, c]   (* = 2-D cross-correlation),

    i.e. equals ``nn.Conv2d(C_in, C_out, k, stride, padding)`` with ``weight = W_i``, ``bias = b_i``.
    Initialisation matches ``nn.Conv2d``'s default for each instance: kaiming-uniform with a = sqrt(5)
    gives W and b uniform on [-1/sqrt(fan_in), 1/sqrt(fan_in)], fan_in = C_in k^2.
    """

    def __init__(
        self,
        instances: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        padding: int = 1,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.instances = check_int(instances, "instances", low=1)
        self.in_channels = check_int(in_channels, "in_channels", low=1)
        self.out_channels = check_int(out_channels, "out_channels", low=1)
        self.kernel_size = check_int(kernel_size, "kernel_size", low=1)
        self.stride = check_int(stride, "stride", low=1)
        self.padding = check_int(padding, "padding", low=0)
        shape = (instances, out_channels, in_channels, kernel_size, kernel_size)
        self.weight = nn.Parameter(torch.empty(shape, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(instances, out_channels, dtype=dtype))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None) -> None:
        """Redraw every instance's weights (then biases) from ``generator`` (required: no global RNG)."""
        if generator is None:
            raise ConfigError("BatchedConv2d needs a torch.Generator to draw its weights")
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size**2)
        with torch.no_grad():
            for p in (self.weight, self.bias):
                draw = torch.rand(p.shape, generator=generator, dtype=torch.float64)
                p.copy_((2 * draw - 1) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        I, C_out = self.instances, self.out_channels
        weight = self.weight.reshape(I * C_out, self.in_channels, self.kernel_size, self.kernel_size)
        bias = self.bias.reshape(I * C_out)
        if x.ndim == 5 and x.stride(0) == 0:
            x = x[0]  # one input broadcast to every instance: an ungrouped conv with all I*C_out filters
        if x.ndim == 4:
            out = F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding)
        else:
            n = x.shape[1]
            folded = x.transpose(0, 1).reshape(n, I * self.in_channels, *x.shape[3:])
            out = F.conv2d(folded, weight, bias, stride=self.stride, padding=self.padding, groups=I)
        return out.reshape(out.shape[0], I, C_out, *out.shape[2:]).transpose(0, 1)

    def extra_repr(self) -> str:
        return (f"instances={self.instances}, in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}")


class BatchedMaxPool2d(nn.Module):
    """``nn.MaxPool2d(kernel_size)`` (stride = kernel_size) per instance: (I, n, C, H, W) ->
    (I, n, C, floor(H / k), floor(W / k))."""

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.kernel_size = check_int(kernel_size, "kernel_size", low=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        folded, unfold = _fold(x)
        return unfold(F.max_pool2d(folded, self.kernel_size))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


def small_cnn(
    input_shape: Sequence[int] = (1, 28, 28),
    channels: Sequence[int] = (16, 32),
    hidden: int = 128,
    out_features: int = 10,
    *,
    instances: int = 1,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> BlockNet:
    """``instances`` CNNs: one conv block per entry of ``channels``, a dense block, a linear head.

    Blocks (named ``conv1``, ``conv2``, ..., ``dense``): ``BatchedConv2d(3x3, padding 1) ->
    ReLU -> BatchedMaxPool2d(2)`` per stage, then ``flatten -> BatchedLinear(C_L H_L W_L,
    hidden) -> ReLU`` with H_L = floor(H / 2^L) (W_L likewise); head ``BatchedLinear(hidden,
    out_features)``. Weights are drawn from ``generator`` block by block, then the head (each layer:
    all instances' weights, then biases), every instance independently, matching ``nn.Conv2d`` /
    ``nn.Linear`` default initialisation.

    Args:
        input_shape: per-sample (C, H, W).
        channels: output channels of each conv stage (>= 1 stage).
        hidden: width of the dense block.
        out_features: head outputs (classes).
        instances: I independent networks.
        generator: the source of every initial weight.

    Raises:
        ConfigError: bad sizes, or an image too small for ``len(channels)`` 2x2 poolings.
    """
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ConfigError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    c, h, w = (check_int(s, "input_shape entry", low=1) for s in shape)
    if len(channels) == 0:
        raise ConfigError("channels must name at least one conv stage")
    check_int(hidden, "hidden", low=1)
    check_int(out_features, "out_features", low=1)
    blocks: list[nn.Module] = []
    for c_out in channels:
        check_int(c_out, "channels entry", low=1)
        h, w = h // 2, w // 2
        if h < 1 or w < 1:
            raise ConfigError(f"input_shape {shape} is too small for {len(channels)} 2x2 max-poolings")
        conv = BatchedConv2d(instances, c, c_out, 3, padding=1, generator=generator, dtype=dtype)
        blocks.append(nn.Sequential(conv, nn.ReLU(), BatchedMaxPool2d(2)))
        c = c_out
    dense = BatchedLinear(instances, c * h * w, hidden, generator=generator, dtype=dtype)
    blocks.append(nn.Sequential(_FlattenSample(), dense, nn.ReLU()))
    head = BatchedLinear(instances, hidden, out_features, generator=generator, dtype=dtype)
    names = [f"conv{i + 1}" for i in range(len(channels))] + ["dense"]
    return BlockNet(blocks, head, input_shape=shape, instances=instances, block_names=names)
