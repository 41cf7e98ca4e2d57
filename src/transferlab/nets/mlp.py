"""Batched multilayer perceptrons on the :class:`~transferlab.nets.blocks.BlockNet` interface.

An MLP with hidden widths (h_1, ..., h_L) has L blocks, block k = activation(x W_k + b_k), and a
linear head h_L -> out_features. Inputs of any per-sample shape are flattened by the first block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from transferlab._checks import check_int
from transferlab.errors import ConfigError
from transferlab.nets.blocks import BatchedLinear, BlockNet

__all__ = ["ACTIVATIONS", "Activation", "mlp"]

Activation = Literal["relu", "tanh", "gelu", "linear"]
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "linear": nn.Identity}


class _FlattenSample(nn.Module):
    """(I, n, *s) -> (I, n, prod(s))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2)


def mlp(
    input_shape: Sequence[int],
    widths: Sequence[int],
    out_features: int,
    *,
    instances: int = 1,
    activation: Activation = "relu",
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> BlockNet:
    """``instances`` MLPs input -> widths[0] -> ... -> widths[-1] -> out_features, one block per hidden layer.

    Args:
        input_shape: per-sample input shape (flattened), e.g. ``(784,)`` or ``(1, 28, 28)``.
        widths: hidden widths h_1..h_L (L >= 1 blocks).
        out_features: head outputs (classes, or 1 for scalar regression).
        instances: I independent copies, each drawn independently from ``generator``.
        activation: nonlinearity after every hidden layer (``"linear"`` gives a deep linear net with biases).
        generator: the source of every initial weight (blocks in order, then the head).
    """
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if len(widths) == 0:
        raise ConfigError("widths must name at least one hidden layer")
    dims = [int(torch.Size(input_shape).numel()), *(check_int(w, "width", low=1) for w in widths)]
    check_int(out_features, "out_features", low=1)
    blocks = []
    for k, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers: list[nn.Module] = [_FlattenSample()] if k == 0 else []
        layers += [BatchedLinear(instances, d_in, d_out, generator=generator, dtype=dtype), ACTIVATIONS[activation]()]
        blocks.append(nn.Sequential(*layers))
    head = BatchedLinear(instances, dims[-1], out_features, generator=generator, dtype=dtype)
    return BlockNet(blocks, head, input_shape=input_shape, instances=instances)
