"""The BlockNet interface and the batched MLP: each instance is an ordinary torch network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferlab.errors import ConfigError, DataError
from transferlab.nets import BatchedLinear, BlockNet, mlp


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _instance_as_sequential(net: BlockNet, i: int) -> nn.Sequential:
    """Instance i of a batched MLP rebuilt as plain nn.Linear + nn.ReLU layers (the reference)."""
    layers: list[nn.Module] = [nn.Flatten()]
    linears = [m for m in net.modules() if isinstance(m, BatchedLinear)]
    for j, lin in enumerate(linears):
        ref = nn.Linear(lin.d_in, lin.d_out)
        with torch.no_grad():
            ref.weight.copy_(lin.weight[i].T)
            ref.bias.copy_(lin.bias[i, 0])
        layers.append(ref)
        if j < len(linears) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def test_each_instance_equals_a_plain_torch_mlp() -> None:
    net = mlp((1, 6, 6), [20, 15, 10], 4, instances=3, generator=_gen())
    x = torch.rand(7, 1, 6, 6, generator=_gen(1))
    out = net(x)
    assert out.shape == (3, 7, 4)
    for i in range(3):
        # float32: one matmul chain of width <= 36, rounding well below 1e-5
        torch.testing.assert_close(out[i], _instance_as_sequential(net, i)(x), rtol=1e-5, atol=1e-6)


def test_instances_are_drawn_independently_and_reproducibly() -> None:
    a, b = mlp((5,), [8], 2, instances=2, generator=_gen(3)), mlp((5,), [8], 2, instances=2, generator=_gen(3))
    wa = a.blocks[0][1].weight
    assert torch.equal(wa, b.blocks[0][1].weight)  # same seed, same draws (exact: no arithmetic differs)
    assert not torch.equal(wa[0], wa[1])
    bound = 1 / 5**0.5  # nn.Linear's default init range for fan-in 5
    assert wa.abs().max() <= bound


def test_features_and_forward_from_compose_to_forward_for_every_k() -> None:
    net = mlp((10,), [12, 9, 7], 3, instances=2, generator=_gen())
    x = torch.randn(2, 5, 10, generator=_gen(2))
    full = net(x)
    for k in range(net.n_blocks + 1):
        h = net.features(x, k)
        torch.testing.assert_close(net.forward_from(h, k), full, rtol=0, atol=0)
    assert net.features(x, 2).shape == (2, 5, 9)


def test_freeze_first_and_block_parameters() -> None:
    net = mlp((4,), [6, 6, 6], 2, instances=2, generator=_gen())
    net.freeze_first(2)
    grads = [[p.requires_grad for p in net.block_parameters(k)] for k in range(1, 5)]
    assert grads == [[False, False], [False, False], [True, True], [True, True]]
    net.freeze_first(0)
    assert all(p.requires_grad for p in net.parameters())


def test_reinit_after_redraws_only_the_unfrozen_part_from_the_generator() -> None:
    net = mlp((4,), [6, 6], 2, instances=2, generator=_gen())
    before = [p.detach().clone() for p in net.parameters()]
    net.reinit_after(1, _gen(9))
    after = list(net.parameters())
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    assert all(not torch.equal(a, b) for a, b in zip(after[2:], before[2:], strict=True))
    other = mlp((4,), [6, 6], 2, instances=2, generator=_gen())
    other.reinit_after(1, _gen(9))
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), other.parameters(), strict=True))


@pytest.mark.parametrize("k", [-1, 4, True, 1.0])
def test_k_out_of_range_is_a_config_error(k: object) -> None:
    net = mlp((4,), [6, 6, 6], 2, generator=_gen())
    with pytest.raises(ConfigError, match="k must be an integer in 0..3"):
        net.features(torch.zeros(1, 4), k)  # type: ignore[arg-type]


def test_wrong_input_shape_is_a_data_error_naming_the_expected_shape() -> None:
    net = mlp((1, 28, 28), [6], 2, instances=3, generator=_gen())
    with pytest.raises(DataError, match=r"input must have shape \(n, 1, 28, 28\) or \(3, n, 1, 28, 28\)"):
        net(torch.zeros(5, 784))
    with pytest.raises(DataError):
        net(torch.zeros(2, 5, 1, 28, 28))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"widths": []}, "at least one hidden layer"), ({"widths": [0]}, "width must be an integer >= 1"),
     ({"activation": "swish"}, "activation must be one of"), ({"instances": True}, "instances must be")],
)
def test_bad_mlp_arguments(kwargs: dict, message: str) -> None:
    args = {"widths": [4], "instances": 1, **kwargs}
    with pytest.raises(ConfigError, match=message):
        mlp((3,), args.pop("widths"), 2, generator=_gen(), **args)


def test_batched_linear_needs_a_generator() -> None:
    with pytest.raises(ConfigError, match="needs a torch.Generator"):
        BatchedLinear(1, 2, 3)


def test_reset_module_resets_layers_that_hold_buffers_only() -> None:
    """A stacked BatchNorm(affine=False) has running statistics and no parameters: a redraw resets them."""
    from transferlab.nets.module import from_module

    module = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8, affine=False), nn.Linear(8, 3))
    with torch.no_grad():
        module[1].running_mean.fill_(5.0)
        module[1].running_var.fill_(9.0)
    net = from_module(module, blocks=[("0", "1")], head="2", input_shape=(4,), instances=2, generator=_gen())
    norm = net.blocks[0][1]
    assert list(norm.parameters()) == [] and torch.equal(norm.get_buffer("running_mean"), torch.full((2, 8), 5.0))
    net.reinit_after(0, _gen(1))
    assert torch.equal(norm.get_buffer("running_mean"), torch.zeros(2, 8))
    assert torch.equal(norm.get_buffer("running_var"), torch.ones(2, 8))
