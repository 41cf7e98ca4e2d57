"""The batched CNN: each instance is an ordinary nn.Conv2d / nn.MaxPool2d / nn.Linear network."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.nets import BatchedConv2d, BatchedMaxPool2d, BlockNet, small_cnn




def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _reference_cnn(net: BlockNet, i: int, channels: tuple[int, ...], in_channels: int) -> nn.Sequential:
    """Instance i of ``small_cnn`` written out as the plain torch network it should equal."""
    layers: list[nn.Module] = []
    c, dtype = in_channels, net.head.weight.dtype
    for k, c_out in enumerate(channels):
        conv = nn.utils.skip_init(nn.Conv2d, c, c_out, 3, padding=1, dtype=dtype)  # no global-RNG draw
        batched = net.blocks[k][0]
        with torch.no_grad():
            conv.weight.copy_(batched.weight[i])
            conv.bias.copy_(batched.bias[i])
        layers += [conv, nn.ReLU(), nn.MaxPool2d(2)]
        c = c_out
    layers.append(nn.Flatten())
    for j, batched in enumerate((net.blocks[-1][1], net.head)):
        lin = nn.utils.skip_init(nn.Linear, batched.d_in, batched.d_out, dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(batched.weight[i].T)
            lin.bias.copy_(batched.bias[i, 0])
        layers += [lin, nn.ReLU()] if j == 0 else [lin]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-input", "per-instance-input"])
def test_each_instance_equals_a_plain_torch_cnn(shared: bool) -> None:
    net = small_cnn((2, 12, 10), (4, 6), 16, 5, instances=3, generator=_gen())
    g = _gen(1)
    x = torch.randn(7, 2, 12, 10, generator=g) if shared else torch.randn(3, 7, 2, 12, 10, generator=g)
    out = net(x)
    assert out.shape == (3, 7, 5)
    for i in range(3):
        ref = _reference_cnn(net, i, (4, 6), 2)(x if shared else x[i])
        # float32: sums of <= 54 products per conv output and 48 per dense output; rounding << 1e-5
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-6)


def test_gradients_equal_the_plain_network() -> None:
    """The grouped convolution's backward gives each instance the gradient of its own network."""
    net = small_cnn((1, 8, 8), (3,), 6, 4, instances=2, generator=_gen(2), dtype=torch.float64)
    x = torch.randn(5, 1, 8, 8, generator=_gen(3), dtype=torch.float64)
    net(x).pow(2).sum().backward()
    for i in range(2):
        ref = _reference_cnn(net, i, (3,), 1)
        ref(x).pow(2).sum().backward()
        conv = net.blocks[0][0]
        # float64: the two backward passes sum the same products in different orders (~1e-15 relative)
        torch.testing.assert_close(conv.weight.grad[i], ref[0].weight.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(conv.bias.grad[i], ref[0].bias.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("stride", "padding", "kernel"), [(1, 1, 3), (2, 0, 3), (1, 2, 5)])
def test_batched_conv_equals_nn_conv2d(stride: int, padding: int, kernel: int) -> None:
    conv = BatchedConv2d(4, 3, 5, kernel, stride=stride, padding=padding, generator=_gen(4))
    x = torch.randn(4, 6, 3, 11, 9, generator=_gen(5))
    out = conv(x)
    for i in range(4):
        ref = nn.functional.conv2d(x[i], conv.weight[i], conv.bias[i], stride=stride, padding=padding)
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-6)  # float32, <= 75-term sums


def test_conv_init_matches_nn_conv2d_default() -> None:
    """nn.Conv2d's default (kaiming-uniform, a = sqrt 5) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for W and b."""
    a, b = (BatchedConv2d(50, 4, 8, 3, generator=_gen(6)) for _ in range(2))
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)  # same seed, same draws
    assert not torch.equal(a.weight[0], a.weight[1])  # instances drawn independently
    bound = 1 / math.sqrt(4 * 9)
    assert a.weight.shape == (50, 8, 4, 3, 3) and a.bias.shape == (50, 8)
    # 14,400 uniform draws: the extremes lie within 0.1 % of the bound, the variance within 5 % of bound^2 / 3
    assert bound * 0.999 < a.weight.abs().max() <= bound
    assert abs(a.weight.var().item() / (bound**2 / 3) - 1) < 0.05
    assert a.bias.abs().max() <= bound
    with pytest.raises(ConfigError, match="Generator"):
        BatchedConv2d(2, 1, 1, 3)


def test_max_pool_keeps_both_layouts() -> None:
    pool = BatchedMaxPool2d(2)
    x = torch.randn(3, 4, 5, 7, 6, generator=_gen(7))  # (I, n, C, H, W), contiguous
    transposed = x.transpose(0, 1).contiguous().transpose(0, 1)  # same values, (n, I, ...) memory (conv output)
    want = torch.stack([nn.functional.max_pool2d(x[i], 2) for i in range(3)])
    assert want.shape == (3, 4, 5, 3, 3)
    assert torch.equal(pool(x), want) and torch.equal(pool(transposed), want)  # max is exact


def test_blocks_names_and_feature_shapes() -> None:
    net = small_cnn(instances=2, generator=_gen(8))  # defaults: (1, 28, 28), channels (16, 32), 128, 10
    assert net.block_names == ("conv1", "conv2", "dense")
    x = torch.rand(3, 1, 28, 28, generator=_gen(9))
    shapes = [tuple(net.features(x, k).shape) for k in range(4)]
    assert shapes == [(2, 3, 1, 28, 28), (2, 3, 16, 14, 14), (2, 3, 32, 7, 7), (2, 3, 128)]
    for k in range(4):
        torch.testing.assert_close(net.forward_from(net.features(x, k), k), net(x), rtol=0, atol=0)


def test_bad_configs() -> None:
    with pytest.raises(ConfigError, match="too small"):
        small_cnn((1, 4, 4), (2, 2, 2), 4, 2, generator=_gen())
    with pytest.raises(ConfigError, match="channels, height, width"):
        small_cnn((28, 28), generator=_gen())
    with pytest.raises(ConfigError, match="at least one"):
        small_cnn(channels=(), generator=_gen())
