"""Transfer protocols on BlockNets: what is frozen stays bitwise, what is redrawn comes from the generator,
frozen-prefix caching is exact, and the staged protocols start where they say."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from transferlab.errors import ConfigError, DataError
from transferlab.nets import BlockNet, mlp
from transferlab.nets.module import from_module
from transferlab.protocols import transfer
from transferlab.protocols._probe import linear_probe
from transferlab.protocols.transfer import (
    TargetData,
    finetune,
    freeze_first_k,
    incremental_defrost,
    linear_probe_transfer,
    lp_ft,
    scratch,
    transfer_net,
)
from transferlab.train.loop import TrainSettings, fit

L = 3
SETTINGS = TrainSettings(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, max_epochs=3, patience=None)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _source() -> BlockNet:
    """A 'pretrained' source: 3 blocks, 5 source classes, 2 instances (random weights suffice here)."""
    return mlp((6,), [10, 9, 8], 5, instances=2, generator=_gen(0))


def _data(val: bool = False, seed: int = 1) -> TargetData:
    g = _gen(seed)
    x = torch.randn(96, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    extra = {"x_val": x[48:64], "y_val": y[48:64]} if val else {}
    return TargetData(x[:48], y[:48], x[64:], y[64:], n_classes=3, **extra)


def _params(net: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in net.named_parameters()}


def _block(net: BlockNet, j: int) -> list[torch.Tensor]:
    return [p.detach() for p in net.block_parameters(j)]


@pytest.mark.parametrize("k", range(L + 1))
def test_freeze_first_k_keeps_frozen_blocks_bitwise_and_trains_the_rest(k: int) -> None:
    source = _source()
    before = _params(source)
    result = freeze_first_k(source, k, _data(), settings=SETTINGS, generator=_gen(2))
    assert result.k == k and result.protocol == "freeze_first_k" and result.net is not None
    assert result.test_accuracy is not None and result.test_accuracy.shape == (2,)
    for j in range(1, L + 1):
        for p, q in zip(_block(result.net, j), _block(source, j), strict=True):
            assert torch.equal(p, q) == (j <= k), (j, k)
    assert result.net.head.weight.shape == (2, 8, 3)  # a new head for the 3 target classes
    assert all(torch.equal(p, before[n]) for n, p in source.named_parameters())  # the source is not mutated


def test_reinit_unfrozen_draws_fresh_reproducible_weights_from_the_generator() -> None:
    source = _source()
    a = transfer_net(source, 1, 3, reinit_unfrozen=True, generator=_gen(5))
    b = transfer_net(source, 1, 3, reinit_unfrozen=True, generator=_gen(5))
    c = transfer_net(source, 1, 3, reinit_unfrozen=True, generator=_gen(6))
    kept = transfer_net(source, 1, 3, reinit_unfrozen=False, generator=_gen(5))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    for j in (2, 3):
        for pa, pc, ps, pk in zip(_block(a, j), _block(c, j), _block(source, j), _block(kept, j), strict=True):
            assert not torch.equal(pa, ps) and not torch.equal(pa, pc)
            assert torch.equal(pk, ps)
    for pa, ps in zip(_block(a, 1), _block(source, 1), strict=True):
        assert torch.equal(pa, ps)
    assert not a.blocks[0][1].weight.requires_grad and a.blocks[1][0].weight.requires_grad
    # end to end: the same seed gives the same trained network and test loss
    r1 = freeze_first_k(source, 1, _data(), reinit_unfrozen=True, settings=SETTINGS, generator=_gen(5))
    r2 = freeze_first_k(source, 1, _data(), reinit_unfrozen=True, settings=SETTINGS, generator=_gen(5))
    assert r1.reinit and torch.equal(r1.test_loss, r2.test_loss)


@pytest.mark.parametrize("k", [1, L])
def test_prefix_caching_equals_recomputing_the_frozen_prefix(k: int) -> None:
    source, data = _source(), _data(val=True)
    settings = TrainSettings(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=16, max_epochs=4, patience=2)
    cached = freeze_first_k(source, k, data, settings=settings, generator=_gen(7))
    g = _gen(7)
    full = transfer_net(source, k, 3, reinit_unfrozen=False, generator=g)
    record = fit(full, data.x_train, data.y_train, settings=settings, generator=g, val=(data.x_val, data.y_val))
    # the same float32 products, batched differently (whole split vs minibatch): rounding ~1e-7, and SGD
    # over 12 steps keeps it at that level
    assert cached.net is not None
    for (name, p), q in zip(cached.net.named_parameters(), full.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert torch.equal(cached.stop_epoch, record.stop_epoch)


def test_linear_probe_transfer_is_the_probe_as_a_network() -> None:
    source, data = _source(), _data()
    result = linear_probe_transfer(source, data, l2=0.01)
    assert result.k == L and result.stop_epoch is None and bool(result.converged.all())
    features = source.features(data.x_train, L).detach()
    probe = linear_probe(features, data.y_train, n_classes=3, l2=0.01)
    assert result.net is not None
    torch.testing.assert_close(result.net.head.weight, probe.weight.float(), rtol=0, atol=1e-6)
    logits = probe.predict(source.features(data.x_test, L).detach())
    accuracy = (logits.argmax(-1) == data.y_test).double().mean(-1)
    torch.testing.assert_close(result.test_accuracy, accuracy, rtol=0, atol=0)


def test_regression_targets_train_with_mse_and_ridge() -> None:
    g = _gen(3)
    x = torch.randn(60, 6, generator=g)
    y = torch.stack([x[:, 0] - x[:, 1], x[:, 2]], -1)
    data = TargetData(x[:40], y[:40], x[40:], y[40:])
    settings = TrainSettings(optimizer="sgd", lr=0.05, batch_size=16, max_epochs=2, patience=None, loss="mse")
    result = freeze_first_k(_source(), 2, data, settings=settings, generator=_gen(4))
    assert result.test_accuracy is None and torch.equal(result.test_error, result.test_loss)
    probed = linear_probe_transfer(_source(), data, l2=0.1)
    assert probed.probe is not None and probed.probe.kind == "ridge" and probed.net is not None
    out = probed.net(data.x_test).double()
    expected = probed.probe.predict(_source().features(data.x_test, L).detach())
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)  # float32 head vs float64 probe


def test_scratch_redraws_everything_and_finetune_is_freeze_zero() -> None:
    source, data = _source(), _data()
    fresh = transfer_net(source, 0, 3, reinit_unfrozen=True, generator=_gen(8))
    assert all(not torch.equal(p, q) for p, q in zip(fresh.parameters(), source.parameters(), strict=True))
    r_scratch = scratch(source, data, settings=SETTINGS, generator=_gen(8))
    assert r_scratch.protocol == "scratch" and r_scratch.reinit and r_scratch.k == 0
    r_ft = finetune(source, data, settings=SETTINGS, generator=_gen(8))
    r_k0 = freeze_first_k(source, 0, data, settings=SETTINGS, generator=_gen(8))
    assert torch.equal(r_ft.test_loss, r_k0.test_loss)
    assert not torch.equal(r_ft.test_loss, r_scratch.test_loss)


@dataclass(frozen=True)
class _Call:
    """One call of the trainer: its start block, the weights it started from, which parameters train."""

    k: int
    params: dict[str, torch.Tensor]
    trainable: list[bool]


def _recording_fit(monkeypatch: pytest.MonkeyPatch) -> list[_Call]:
    """Wrap the protocols' ``fit``: record every call's start."""
    calls: list[_Call] = []

    def recording(net: BlockNet, *args: object, start_block: int = 0, **kwargs: object) -> object:
        calls.append(_Call(start_block, _params(net), [p.requires_grad for p in net.parameters()]))
        return fit(net, *args, start_block=start_block, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(transfer, "fit", recording)
    return calls


def test_incremental_defrost_visits_k_from_L_to_0_continuing_each_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _recording_fit(monkeypatch)
    after: list[dict[str, torch.Tensor]] = []
    results = incremental_defrost(_source(), _data(), settings=SETTINGS, generator=_gen(9),
                                  on_stage=lambda _r, net: after.append(_params(net)))
    assert [r.k for r in results] == [3, 2, 1, 0] == [c.k for c in calls]
    assert [r.net is None for r in results] == [True, True, True, False]
    for stage, call in enumerate(calls):
        k = L - stage
        net = results[-1].net
        assert net is not None
        n_frozen = sum(len(net.block_parameters(j)) for j in range(1, k + 1))
        assert call.trainable == [i >= n_frozen for i in range(len(call.trainable))]
        if stage > 0:  # each stage starts from the previous stage's trained weights
            assert all(torch.equal(p, after[stage - 1][n]) for n, p in call.params.items())


def test_lp_ft_starts_fine_tuning_from_the_probe_head(monkeypatch: pytest.MonkeyPatch) -> None:
    source, data = _source(), _data()
    probed = linear_probe_transfer(source, data, l2=0.05)
    calls = _recording_fit(monkeypatch)
    result = lp_ft(source, data, l2=0.05, settings=SETTINGS, generator=_gen(10))
    assert len(calls) == 1 and calls[0].k == 0 and all(calls[0].trainable)
    assert probed.net is not None and probed.probe is not None and result.probe is not None
    assert torch.equal(calls[0].params["head.weight"], probed.net.head.weight)
    assert torch.equal(calls[0].params["head.bias"], probed.net.head.bias)
    assert torch.equal(result.probe.weight, probed.probe.weight)
    assert result.protocol == "lp_ft" and result.k == 0


def test_an_adapted_module_transfers_with_frozen_batchnorm() -> None:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 4),
                               nn.ReLU(), nn.Linear(4, 2))
    source = from_module(module, blocks=[("0", "1", "2", "3"), ("4", "5")], head="6", input_shape=(1, 6, 6),
                         instances=2, generator=_gen())
    g = _gen(11)
    x = torch.rand(40, 1, 6, 6, generator=g)
    y = (x.mean((1, 2, 3)) > 0.5).long()
    data = TargetData(x[:24], y[:24], x[24:], y[24:], n_classes=2)
    buffers = {n: b.clone() for n, b in source.named_buffers()}
    result = freeze_first_k(source, 1, data, settings=SETTINGS, generator=_gen(12))
    assert result.net is not None
    for p, q in zip(_block(result.net, 1), _block(source, 1), strict=True):
        assert torch.equal(p, q)
    assert not torch.equal(_block(result.net, 2)[0], _block(source, 2)[0])
    for n, b in result.net.named_buffers():
        assert torch.equal(b, buffers[n]), n


def test_bad_input_gives_one_clear_error_each() -> None:
    source, data = _source(), _data()
    for k in (-1, L + 1, True, 1.0):
        with pytest.raises(ConfigError, match=f"k must be an integer in 0..{L}"):
            freeze_first_k(source, k, data, settings=SETTINGS, generator=_gen())  # type: ignore[arg-type]
    wide = TargetData(torch.randn(10, 7), torch.zeros(10, dtype=torch.long), data.x_test, data.y_test, n_classes=3)
    with pytest.raises(DataError, match="x_train"):
        finetune(source, wide, settings=SETTINGS, generator=_gen())
    short = TargetData(data.x_train, data.y_train[:5], data.x_test, data.y_test, n_classes=3)
    with pytest.raises(DataError, match="y_train must have one of the shapes"):
        finetune(source, short, settings=SETTINGS, generator=_gen())
    with pytest.raises(DataError, match=r"y_test labels must lie in 0..2"):
        TargetData(data.x_train, data.y_train, data.x_test, data.y_test + 1, n_classes=3)
    with pytest.raises(DataError, match="integer class labels"):
        TargetData(data.x_train, data.y_train.float(), data.x_test, data.y_test, n_classes=3)
    with pytest.raises(ConfigError, match="both x_val and y_val"):
        TargetData(data.x_train, data.y_train, data.x_test, data.y_test, x_val=data.x_test, n_classes=3)
    with pytest.raises(ConfigError, match="settings.loss is 'mse'"):
        finetune(source, data, settings=TrainSettings(loss="mse"), generator=_gen())
    with pytest.raises(ConfigError, match="generator"):
        finetune(source, data, settings=SETTINGS, generator=0)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="BlockNet"):
        finetune(nn.Linear(2, 2), data, settings=SETTINGS, generator=_gen())  # type: ignore[arg-type]
