"""The patch network of Hong et al. (2024): forward against a slow loop written from the formula,
instance independence, the fixed second layer and bias, the alignment measure, training and bad input; the
fused full-batch trainer (patch_gd, patch_pool) against fit / finetune on each network (autograd)."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch

from transferlab.errors import ConfigError, DataError, TrainingDiverged
from transferlab.nets import BlockNet, neuron_feature_cosines, patch_cnn, patch_gd, patch_pool
from transferlab.protocols.transfer import TargetData, finetune, transfer_net
from transferlab.train.loop import TrainSettings, fit

# float64 throughout: a fast and a slow evaluation of the same sums agree to rounding (~1e-15 relative,
# sums of at most P m = 30 terms of order 1), so 1e-12 leaves ample room and fails on any real difference.
TOL = 1e-12


def _net(instances: int = 3, classes: int = 4, width: int = 3, bias: float = -0.1, seed: int = 0) -> BlockNet:
    return patch_cnn(5, 7, classes, width, instances=instances, bias=bias, init_scale=0.5,
                     generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _slow_logits(W: torch.Tensor, b: float, X: torch.Tensor, classes: int, width: int) -> list[list[float]]:
    """F_c(X) = sum_r sum_p ReLU(<w_{c,r}, x_p> + b) by explicit loops, for one instance: W (d, K m), X (n, P, d)."""
    out = []
    for s in range(X.shape[0]):
        row = []
        for c in range(classes):
            total = 0.0
            for r in range(width):
                w = W[:, c * width + r]
                for p in range(X.shape[1]):
                    total += max(0.0, float(sum(w[i] * X[s, p, i] for i in range(X.shape[2]))) + b)
            row.append(total)
        out.append(row)
    return out


def test_forward_matches_a_slow_loop_from_the_formula() -> None:
    net = _net()
    X = torch.randn(3, 6, 5, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    fast = net(X)
    assert fast.shape == (3, 6, 4)
    W = net.blocks[0].weight.detach()
    for i in range(3):
        slow = torch.tensor(_slow_logits(W[i], -0.1, X[i], 4, 3), dtype=torch.float64)
        assert torch.allclose(fast[i], slow, rtol=0, atol=TOL)
    # the features after block 1 are the per-neuron patch sums; the head sums each class's neurons
    h = net.features(X, 1)
    assert h.shape == (3, 6, 12)
    assert torch.allclose(h.view(3, 6, 4, 3).sum(-1), fast, rtol=0, atol=TOL)
    # the bias acts as a threshold: some pre-activations are cut, so the test is not of a linear map
    z = torch.einsum("inpd,idk->inpk", X, W) - 0.1
    assert bool((z < 0).any()) and bool((z > 0).any())


def test_shared_input_broadcasts_and_instances_are_independent() -> None:
    net = _net()
    X = torch.randn(6, 5, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    batched = net(X)
    for i in range(3):
        one = _net(instances=1)
        with torch.no_grad():
            one.blocks[0].weight.copy_(net.blocks[0].weight[i : i + 1])
        assert torch.allclose(one(X)[0], batched[i], rtol=0, atol=TOL)


def test_only_the_first_layer_trains_and_the_bias_stays_fixed() -> None:
    net = patch_cnn(4, 6, 2, 2, instances=2, bias=-0.05, generator=torch.Generator().manual_seed(0))
    assert [name for name, _ in net.named_parameters()] == ["blocks.0.weight"]
    before = net.blocks[0].weight.detach().clone()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 4, 6, generator=g)
    y = (x[:, :, 0].sum(1) > 0).long()
    record = fit(net, x, y, settings=TrainSettings(optimizer="sgd", lr=0.5, batch_size=40, max_epochs=20,
                                                   patience=None), generator=g)
    assert not torch.equal(before, net.blocks[0].weight)
    assert torch.equal(net.blocks[0].bias, torch.full((2, 1, 1), -0.05))  # untouched by training
    assert bool((record.train_loss < math.log(2)).all())  # it learned something from chance level


def test_initial_weights_have_the_stated_scale() -> None:
    d = 50
    net = patch_cnn(2, d, 10, 20, instances=4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    W = net.blocks[0].weight.detach()  # (4, 50, 200): 40,000 N(0, (1/d)^2) draws
    # sample variance of 40,000 normals: relative SE sqrt(2/40,000) = 0.7 %; 5 % is 7 SE
    assert float(W.var()) * d**2 == pytest.approx(1.0, rel=0.05)
    assert abs(float(W.mean())) * d < 5 / math.sqrt(W.numel())  # 5 SE of the mean


def test_neuron_feature_cosines_from_the_definition() -> None:
    net = _net()
    V = torch.linalg.qr(torch.randn(7, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64))[0].T
    cos = neuron_feature_cosines(net, V)
    assert cos.shape == (3, 12, 3)
    W = net.blocks[0].weight.detach()
    for i in range(3):
        for j in range(12):
            for m in range(3):
                expected = float(W[i, :, j] @ V[m]) / float(W[i, :, j].norm())
                assert float(cos[i, j, m]) == pytest.approx(expected, abs=TOL)
    # a neuron pointing along a feature has cosine 1 with it (float64 rounding)
    with torch.no_grad():
        net.blocks[0].weight[0, :, 0] = 2.5 * V[1]
    assert float(neuron_feature_cosines(net, V)[0, 0, 1]) == pytest.approx(1.0, abs=TOL)


@pytest.mark.parametrize(
    ("call", "message"),
    [(lambda: patch_cnn(0, 4, 2, 2, generator=torch.Generator()), "patches"),
     (lambda: patch_cnn(3, 4, 2, 0, generator=torch.Generator()), "width"),
     (lambda: patch_cnn(3, 4, 2, 2, init_scale=0.0, generator=torch.Generator()), "init_scale"),
     (lambda: patch_cnn(3, 4, 2, 2, bias=math.nan, generator=torch.Generator()), "bias"),
     (lambda: neuron_feature_cosines(_net(), torch.eye(3)), "features must have shape")],
)
def test_bad_input_is_refused(call: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        call()  # type: ignore[operator]


# --------------------------------------------------------------------------------------------------
# the fused full-batch trainer against the generic one (autograd through the network, fit)
# --------------------------------------------------------------------------------------------------

# float64, a few steps of lr 0.5 on O(1) losses: the closed form and autograd sum the same terms in another
# order, so they agree to ~1e-16 per step; 1e-12 leaves room for the growth over 7 steps and fails on any
# real difference (a wrong sign, a missing ReLU mask or a stale head gives differences of order 1e-2).
GD_TOL = 1e-12


def _gd_case(chunked: bool, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """G = 3 input sets, S = 2 networks of K = 3 classes x m = 2 neurons each, n = 30 samples of 5 patches."""
    import sys

    if chunked:  # one input set per chunk: the chunk loop must not change anything
        monkeypatch.setattr(sys.modules["transferlab.nets.patch_cnn"], "_CHUNK_BYTES", 1)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 30, 5, 7, generator=g, dtype=torch.float64)
    nets = [_net(classes=3, width=2, seed=s) for s in range(2)]  # instances = 3 = G
    weight = torch.cat([net.blocks[0].weight.detach() for net in nets], 2)  # (3, 7, 2 x 6)
    return x, nets, weight


@pytest.mark.parametrize("chunked", [False, True])
def test_patch_gd_equals_fit_on_each_network(chunked: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    x, nets, weight = _gd_case(chunked, monkeypatch)
    y = torch.randint(0, 3, (3, 2, 30), generator=torch.Generator().manual_seed(6))
    before = weight.clone()
    result = patch_gd(weight, x, y, networks=2, bias=-0.1, lr=0.5, steps=7, classes=3, record=[0, 3, 7])
    assert torch.equal(weight, before)  # the caller's weights are not modified
    settings = TrainSettings(optimizer="sgd", lr=0.5, batch_size=30, max_epochs=7, patience=None)
    for s, net in enumerate(nets):
        columns = slice(6 * s, 6 * s + 6)
        at3 = copy.deepcopy(net)
        fit(at3, x, y[:, s], settings=dataclasses.replace(settings, max_epochs=3), generator=torch.Generator())
        record = fit(net, x, y[:, s], settings=settings, generator=torch.Generator().manual_seed(1))
        W = net.blocks[0].weight.detach()
        assert torch.allclose(result.weight[..., columns], W, rtol=0, atol=GD_TOL)
        assert torch.allclose(result.snapshots[3][..., columns], at3.blocks[0].weight.detach(), rtol=0, atol=GD_TOL)
        assert torch.equal(result.snapshots[0][..., columns], before[..., columns])
        assert torch.equal(result.snapshots[7], result.weight)
        assert torch.allclose(result.losses[-1, :, s], record.train_loss, rtol=0, atol=GD_TOL)  # fit's T(E)
        assert torch.equal(result.converged[:, s], record.converged)
    assert result.losses.shape == (7, 3, 2) and bool((result.losses[-1] < result.losses[0]).all())


@pytest.mark.parametrize("chunked", [False, True])
def test_patch_gd_with_a_head_equals_finetune(chunked: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    x, nets, weight = _gd_case(chunked, monkeypatch)
    y = torch.randint(0, 2, (3, 30), generator=torch.Generator().manual_seed(7))  # shared by both networks
    data = TargetData(x_train=x, y_train=y, x_test=x[0], y_test=y[0], n_classes=2)
    settings = TrainSettings(optimizer="sgd", lr=0.5, batch_size=30, max_epochs=5, patience=None)
    tuned = [finetune(net, data, settings=settings, generator=torch.Generator().manual_seed(10 + s))
             for s, net in enumerate(nets)]
    # the same initial heads: transfer_net draws them first from the protocol's generator
    heads = [transfer_net(net, 0, 2, reinit_unfrozen=False, generator=torch.Generator().manual_seed(10 + s)).head
             for s, net in enumerate(nets)]
    head = (torch.stack([h.weight.detach() for h in heads], 1), torch.stack([h.bias.detach() for h in heads], 1))
    result = patch_gd(weight, x, y, networks=2, bias=-0.1, lr=0.5, steps=5, head=head)
    assert result.head is not None
    for s, done in enumerate(tuned):
        assert done.net is not None and done.training is not None
        assert torch.allclose(result.weight[..., 6 * s : 6 * s + 6], done.net.blocks[0].weight.detach(), rtol=0,
                              atol=GD_TOL)
        assert torch.allclose(result.head[0][:, s], done.net.head.weight.detach(), rtol=0, atol=GD_TOL)
        assert torch.allclose(result.head[1][:, s], done.net.head.bias.detach(), rtol=0, atol=GD_TOL)
        assert torch.allclose(result.losses[-1, :, s], done.training.train_loss, rtol=0, atol=GD_TOL)


def test_patch_pool_is_the_networks_features() -> None:
    net = _net()
    x = torch.randn(3, 6, 5, 7, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    pooled = patch_pool(net.blocks[0].weight, x, bias=-0.1)
    assert pooled.shape == (3, 6, 12)
    assert torch.allclose(pooled, net.features(x, 1), rtol=0, atol=TOL)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [({"classes": 3, "head": (torch.zeros(1), torch.zeros(1))}, ConfigError, "exactly one of classes"),
     ({}, ConfigError, "exactly one of classes"),
     ({"classes": 5}, ConfigError, "not a multiple of classes"),
     ({"classes": 3, "networks": 5}, ConfigError, "not a multiple of networks"),
     ({"classes": 3, "y": torch.zeros(3, 2, 29, dtype=torch.int64)}, DataError, "y must be int64 labels"),
     ({"classes": 3, "y": torch.full((3, 30), 3)}, DataError, "labels must lie in 0..2"),
     ({"classes": 3, "x": torch.full((3, 30, 5, 7), math.nan, dtype=torch.float64)}, DataError, "non-finite"),
     ({"classes": 3, "steps": 0}, ConfigError, "steps")],
)
def test_patch_gd_refuses_bad_input(kwargs: dict, error: type, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x, _, weight = _gd_case(False, monkeypatch)
    args = {"x": x, "y": torch.zeros(3, 30, dtype=torch.int64), "networks": 2, "steps": 2, **kwargs}
    with pytest.raises(error, match=message):
        patch_gd(weight, args.pop("x"), args.pop("y"), bias=-0.1, lr=0.5, **args)


def test_patch_gd_reports_divergence(monkeypatch: pytest.MonkeyPatch) -> None:
    x, _, weight = _gd_case(False, monkeypatch)
    y = torch.randint(0, 3, (3, 30), generator=torch.Generator().manual_seed(9))
    with pytest.raises(TrainingDiverged, match="diverged"):  # a step of 1e8 blows every loss up
        patch_gd(weight * 10, x, y, networks=2, bias=-0.1, lr=1e8, steps=4, classes=3)
