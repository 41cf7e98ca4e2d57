"""Several networks trained as one stack: ``stack_instances``, ``fit``'s per-group generators and
per-instance frozen blocks.

The reference for every stacked run is the same networks trained by separate ``fit`` calls, each with
its own generator and ``freeze_first(k)`` (the single-network path, itself checked against plain torch
loops in test_loop.py). Runs are float64, as in test_loop.py: the stacked and the separate matmuls sum
in different orders (and the stack recomputes frozen blocks that the separate run caches), which leaves
differences of order 1e-15 per step, so early-stopping decisions cannot flip and 1e-9 is a safe bound.
"""

from __future__ import annotations

import copy

import pytest
import torch

from transferlab.errors import ConfigError
from transferlab.nets import BlockNet, mlp, small_cnn, stack_instances
from transferlab.train import TrainSettings, evaluate, fit

F64 = torch.float64
TOL = 1e-9  # float64 rounding, see the module docstring




def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _net(instances: int, seed: int) -> BlockNet:
    return mlp((6,), [8, 8, 8], 3, instances=instances, generator=_gen(seed), dtype=F64)


def _data(instances: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable 3-class task: labels of a fixed linear teacher, one sample set per instance."""
    g = _gen(seed)
    x = torch.randn(instances, n, 6, generator=g, dtype=F64)
    teacher = torch.randn(6, 3, generator=_gen(99), dtype=F64)
    return x, (x @ teacher).argmax(-1)


def _state(net: BlockNet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_stack_concatenates_instances_and_computes_what_each_net_computes() -> None:
    a, b = _net(2, 0), _net(3, 1)
    stack = stack_instances([a, b])
    assert stack.instances == 5 and stack.head.instances == 5 and stack.blocks[0][1].instances == 5
    x = torch.randn(4, 6, dtype=F64, generator=_gen(2))
    # the stack's instance i is exactly net j's instance (same weights, same arithmetic per instance)
    torch.testing.assert_close(stack(x), torch.cat([a(x), b(x)]), rtol=0, atol=TOL)
    assert a.instances == 2 and a.blocks[0][1].weight.shape[0] == 2  # inputs untouched
    cnn = [small_cnn((1, 8, 8), (2, 3), 4, 2, instances=i, generator=_gen(i)) for i in (1, 2)]
    images = torch.randn(3, 1, 8, 8, generator=_gen(5))
    # float32 CNN: the batched convolution may round differently per instance count (1e-6 of outputs ~1)
    torch.testing.assert_close(stack_instances(cnn)(images), torch.cat([n(images) for n in cnn]), rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("nets", "message"),
    [([], "at least one"),
     (["net"], "must be a transferlab BlockNet"),
     ([mlp((6,), [8], 3, generator=_gen(0)), mlp((6,), [9], 3, generator=_gen(0))], "differs from nets\\[0\\]"),
     ([mlp((6,), [8], 3, generator=_gen(0)), mlp((6,), [8, 8], 3, generator=_gen(0))], "differs from nets\\[0\\]")],
)
def test_stack_refuses_what_it_cannot_stack(nets: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        stack_instances(nets)


def test_a_single_generator_is_the_one_group_and_groups_replay_separate_fits() -> None:
    settings = TrainSettings(optimizer="adam", lr=1e-2, batch_size=5, max_epochs=12, patience=3)
    nets = [_net(2, 0), _net(3, 1)]
    data = [_data(2, 17, 10), _data(3, 17, 11)]
    vals = [_data(2, 9, 20), _data(3, 9, 21)]
    # reference: each net trained alone with its own generator
    alone = [copy.deepcopy(n) for n in nets]
    records = [fit(n, x, y, settings=settings, generator=_gen(30 + j), val=v)
               for j, (n, (x, y), v) in enumerate(zip(alone, data, vals, strict=True))]
    stack = stack_instances(nets)
    x, y = (torch.cat(t) for t in zip(*data, strict=True))
    val = tuple(torch.cat(t) for t in zip(*vals, strict=True))
    record = fit(stack, x, y, settings=settings, generator=[(_gen(30), 2), (_gen(31), 3)], val=val)
    torch.testing.assert_close(_state(stack), {k: torch.cat([_state(n)[k] for n in alone]) for k in _state(stack)},
                               rtol=0, atol=TOL)
    assert record.stop_epoch.tolist() == [e for r in records for e in r.stop_epoch.tolist()]
    assert record.best_epoch.tolist() == [e for r in records for e in r.best_epoch.tolist()]
    assert len(set(record.stop_epoch.tolist())) > 1  # early stopping acted per instance
    # one generator = the group [(generator, I)]: the same draws, so the same bits
    one, group = _net(3, 4), _net(3, 4)
    fit(one, *data[1], settings=settings, generator=_gen(7))
    fit(group, *data[1], settings=settings, generator=[(_gen(7), 3)])
    assert all(torch.equal(p, q) for p, q in zip(one.parameters(), group.parameters(), strict=True))


@pytest.mark.parametrize("optimizer", [{"optimizer": "adam", "weight_decay": 0.1},
                                       {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 0.1}])
@pytest.mark.parametrize(("ks", "shared"), [([0, 2, 1, 3], False), ([0, 1, 1, 3], False), ([2, 2, 3, 3], False),
                                           ([0, 1, 1, 3], True)],
                         ids=["unordered", "staged", "staged-deep", "staged-shared-inputs"])
def test_per_instance_frozen_blocks_equal_freeze_first_k_alone(optimizer: dict, ks: list[int], shared: bool) -> None:
    """Instances freezing k_i trained as one stack equal each trained alone with freeze_first(k_i)
    (and frozen-prefix caching, start_block = k_i) -- through every block for unordered k_i, through
    the staged forward (cached prefixes, blocks sliced to the instances that train them) for ordered
    ones; frozen slices keep their initial bits even under weight decay and momentum, which would move
    them if only their gradients were zeroed."""
    settings = TrainSettings(lr=1e-2, batch_size=6, max_epochs=10, patience=4, **optimizer)
    nets = [_net(1, 40 + j) for j in range(4)]
    data = [_data(1, 20, 50 + (0 if shared else j)) for j in range(4)]
    vals = [_data(1, 8, 60 + (0 if shared else j)) for j in range(4)]
    alone = []
    for j, k in enumerate(ks):
        net = copy.deepcopy(nets[j])
        net.freeze_first(k)
        (x, y), (xv, yv) = data[j], vals[j]
        fit(net, net.features(x, k).detach(), y, settings=settings, generator=_gen(70 + j),
            val=(net.features(xv, k).detach(), yv), start_block=k)
        alone.append(net)
    stack = stack_instances(nets)
    initial = _state(stack)
    x, y = (torch.cat(t) for t in zip(*data, strict=True))
    val = tuple(torch.cat(t) for t in zip(*vals, strict=True))
    if shared:  # one (n, 6) sample set for every instance
        (x, y), val = (data[0][0][0], data[0][1][0]), (vals[0][0][0], vals[0][1][0])
    fit(stack, x, y, settings=settings, generator=[(_gen(70 + j), 1) for j in range(4)], val=val, frozen_blocks=ks)
    final = _state(stack)
    torch.testing.assert_close(final, {k: torch.cat([_state(n)[k] for n in alone]) for k in final}, rtol=0, atol=TOL)
    for i, k in enumerate(ks):
        for b in range(1, 4):
            for name in (n for n in final if n.startswith(f"blocks.{b - 1}.")):
                # held blocks are copied back after every step: bit-identical, not merely close
                assert torch.equal(final[name][i], initial[name][i]) == (b <= k), (i, b, name)


def test_frozen_blocks_beyond_start_block_and_bad_arguments() -> None:
    settings = TrainSettings(lr=1e-2, batch_size=8, max_epochs=3, patience=None)
    net = _net(2, 0)
    net.freeze_first(1)
    x, y = _data(2, 16, 1)
    h = net.features(x, 1).detach()
    before = _state(net)
    fit(net, h, y, settings=settings, generator=_gen(2), start_block=1, frozen_blocks=[1, 3])
    after = _state(net)
    assert torch.equal(after["blocks.2.0.weight"][1], before["blocks.2.0.weight"][1])
    assert not torch.equal(after["blocks.2.0.weight"][0], before["blocks.2.0.weight"][0])
    assert evaluate(net, h, y, start_block=1)["error"].shape == (2,)
    for kwargs, message in [({"frozen_blocks": [1]}, "one entry per instance"),
                            ({"frozen_blocks": [0, 1]}, "frozen_blocks\\[0\\]"),
                            ({"frozen_blocks": [1, 4]}, "frozen_blocks\\[1\\]"),
                            ({"frozen_blocks": 2}, "sequence"),
                            ({"generator": [(_gen(0), 1)]}, "cover 1 instances but the network has 2"),
                            ({"generator": [(_gen(0), 1), (0, 1)]}, "generator\\[1\\] must be a pair"),
                            ({"generator": []}, "non-empty sequence"),
                            ({"generator": 3}, "torch.Generator")]:
        args = {"generator": _gen(0), **kwargs}
        with pytest.raises(ConfigError, match=message):
            fit(net, h, y, settings=settings, start_block=1, **args)
