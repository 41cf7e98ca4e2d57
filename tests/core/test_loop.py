"""The minibatch trainer: every instance follows an independent torch training loop exactly.

The reference for instance i is a plain ``nn.Sequential`` of ``nn.Linear`` / ``nn.Conv2d`` layers
holding instance i's initial weights, trained by ``torch.optim.SGD`` / ``torch.optim.Adam`` on the
same minibatches (the permutations replayed from the documented draw order) with its own early
stopping. Equivalence runs in float64 so that the early-stopping decisions (strict comparisons of
validation losses) cannot flip on rounding; the batched and the plain matmuls sum in different
orders, which leaves differences of order 1e-15 per step, far below the 1e-9 asserted.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from transferlab.errors import ConfigError, DataError, TrainingDiverged
from transferlab.nets import BatchedConv2d, BatchedLinear, BatchedMaxPool2d, BlockNet, mlp, small_cnn
from transferlab.train import TrainResult, TrainSettings, evaluate, fit

F64 = torch.float64




def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------------ reference
def _plain(module: nn.Module, i: int) -> nn.Module:
    """Instance i of a batched module as the ordinary torch module (weights copied, no RNG used)."""
    if isinstance(module, BatchedLinear):
        ref = nn.utils.skip_init(nn.Linear, module.d_in, module.d_out, dtype=module.weight.dtype)
        with torch.no_grad():
            ref.weight.copy_(module.weight[i].T)
            ref.bias.copy_(module.bias[i, 0])
        return ref
    if isinstance(module, BatchedConv2d):
        ref = nn.utils.skip_init(nn.Conv2d, module.in_channels, module.out_channels, module.kernel_size,
                                 stride=module.stride, padding=module.padding, dtype=module.weight.dtype)
        with torch.no_grad():
            ref.weight.copy_(module.weight[i])
            ref.bias.copy_(module.bias[i])
        return ref
    if isinstance(module, BatchedMaxPool2d):
        return nn.MaxPool2d(module.kernel_size)
    if isinstance(module, nn.Sequential):
        return nn.Sequential(*(_plain(m, i) for m in module))
    if isinstance(module, nn.ReLU):
        return nn.ReLU()
    assert type(module).__name__ == "_FlattenSample", type(module)
    return nn.Flatten()


def _instance_params(net: BlockNet, i: int, start_block: int) -> list[torch.Tensor]:
    """Instance i's parameters of blocks start_block+1..L and the head, in the plain modules' layout."""
    out: list[torch.Tensor] = []
    for module in [*net.blocks[start_block:], net.head]:
        for m in module.modules():
            if isinstance(m, BatchedLinear):
                out += [m.weight[i].T, m.bias[i, 0]]
            elif isinstance(m, BatchedConv2d):
                out += [m.weight[i], m.bias[i]]
    return out


def _replay_perms(seed: int, epochs: int, instances: int, n: int) -> list[list[torch.Tensor]]:
    """perms[e][i]: the documented draw order, one randperm per instance at the start of every epoch."""
    g = _gen(seed)
    return [[torch.randperm(n, generator=g) for _ in range(instances)] for _ in range(epochs)]


def _reference_fit(
    net: BlockNet, i: int, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings, perms: list[torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None, start_block: int = 0, frozen_blocks: int = 0,
) -> dict:
    """Train instance i alone: nn.Sequential + torch.optim, own early stopping (validating after epochs
    val_every, 2 val_every, ... and the last). x, y: instance i's data."""
    model = nn.Sequential(*(_plain(m, i) for m in [*net.blocks[start_block:], net.head]))
    for block in list(model)[: max(frozen_blocks - start_block, 0)]:
        block.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    loss_fn = nn.CrossEntropyLoss() if settings.loss == "cross_entropy" else nn.MSELoss()

    def val_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(model(val[0]), val[1]))

    best_val = val_loss() if val is not None else float("inf")
    best_state, best_epoch, epoch, train_loss = copy.deepcopy(model.state_dict()), 0, 0, float("nan")
    for epoch, perm in enumerate(perms[: settings.max_epochs], start=1):
        total = 0.0
        for s in range(0, len(perm), settings.batch_size):
            idx = perm[s : s + settings.batch_size]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        train_loss = total / len(perm)
        if val is not None and (epoch % settings.val_every == 0 or epoch == settings.max_epochs):
            v = val_loss()
            if v < best_val:
                best_val, best_epoch, best_state = v, epoch, copy.deepcopy(model.state_dict())
            if settings.patience is not None and epoch - best_epoch >= settings.patience:
                break
    if val is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = epoch
    return {"params": [p.detach() for p in model.parameters()], "stop_epoch": epoch, "best_epoch": best_epoch,
            "best_val_loss": best_val, "train_loss": train_loss}


def _assert_matches_reference(net: BlockNet, result: TrainResult, refs: list[dict], start_block: int = 0,
                              atol: float = 1e-9) -> None:
    for i, ref in enumerate(refs):
        assert int(result.stop_epoch[i]) == ref["stop_epoch"], i
        assert int(result.best_epoch[i]) == ref["best_epoch"], i
        assert bool(result.improved[i]) == (ref["best_epoch"] > 0 or math.isinf(ref["best_val_loss"])), i
        torch.testing.assert_close(float(result.best_val_loss[i]), ref["best_val_loss"], rtol=0, atol=atol)
        torch.testing.assert_close(float(result.train_loss[i]), ref["train_loss"], rtol=0, atol=atol)
        for got, want in zip(_instance_params(net, i, start_block), ref["params"], strict=True):
            torch.testing.assert_close(got.detach(), want, rtol=0, atol=atol)


def _noise_task(seed: int, n: int, d: int, classes: int, dtype: torch.dtype = F64) -> tuple[torch.Tensor, ...]:
    """Inputs with labels that are partly a function of x, partly noise: training overfits, so
    validation loss turns up after a few epochs at different times for different instances."""
    g = _gen(seed)
    x = torch.randn(2 * n, d, generator=g, dtype=dtype)
    signal = (x[:, :classes] * 2).argmax(1)
    noise = torch.randint(0, classes, (2 * n,), generator=g)
    y = torch.where(torch.rand(2 * n, generator=g) < 0.5, signal, noise)
    return x[:n], y[:n], x[n:], y[n:]


# ------------------------------------------------------------------------------------------ equivalence
@pytest.mark.parametrize(
    "optimizer",
    [dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3),
     dict(optimizer="adam", lr=1e-2, weight_decay=1e-3)],
    ids=["sgd-momentum-wd", "adam-wd"],
)
def test_early_stopping_matches_independent_loops(optimizer: dict) -> None:
    I, n = 4, 60
    x, y, xv, yv = _noise_task(0, n, 6, 3)
    net = mlp((6,), [16, 16], 3, instances=I, generator=_gen(1), dtype=F64)
    settings = TrainSettings(**optimizer, batch_size=16, max_epochs=25, patience=2)
    refs_init = copy.deepcopy(net)
    result = fit(net, x, y, settings=settings, generator=_gen(2), val=(xv, yv))
    perms = _replay_perms(2, settings.max_epochs, I, n)
    refs = [_reference_fit(refs_init, i, x, y, settings, [p[i] for p in perms], (xv, yv)) for i in range(I)]
    _assert_matches_reference(net, result, refs)
    # the case exercises per-instance stopping: some instances stop early, not all at the same epoch
    assert bool(result.converged.any())
    assert len(set(result.stop_epoch.tolist())) > 1
    assert result.steps == int(result.stop_epoch.max()) * 4  # ceil(60 / 16) = 4 steps per epoch


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_without_validation_per_instance_mse_data_matches_independent_loops(optimizer: str) -> None:
    I, n, d = 3, 40, 5
    g = _gen(3)
    x = torch.randn(I, n, d, generator=g, dtype=F64)  # one data set per instance
    y = torch.randn(I, n, 2, generator=g, dtype=F64)
    net = mlp((d,), [12], 2, instances=I, generator=_gen(4), dtype=F64)
    settings = TrainSettings(optimizer=optimizer, lr=0.02, momentum=0.5 if optimizer == "sgd" else 0.0,
                             weight_decay=1e-2, batch_size=12, max_epochs=4, loss="mse")
    refs_init = copy.deepcopy(net)
    result = fit(net, x, y, settings=settings, generator=_gen(5))
    perms = _replay_perms(5, settings.max_epochs, I, n)
    refs = [_reference_fit(refs_init, i, x[i], y[i], settings, [p[i] for p in perms], None) for i in range(I)]
    _assert_matches_reference(net, result, refs)
    assert torch.equal(result.best_epoch, torch.full((I,), 4)) and torch.isinf(result.best_val_loss).all()


def test_frozen_prefix_and_start_block() -> None:
    """start_block = 1 on cached features, block 2 frozen: blocks 1-2 bitwise unchanged, 3 and head trained."""
    I, n = 3, 50
    x, y, xv, yv = _noise_task(6, n, 7, 4)
    net = mlp((7,), [10, 9, 8], 4, instances=I, generator=_gen(7), dtype=F64)
    net.freeze_first(2)
    before = copy.deepcopy(net)
    h, hv = net.features(x, 1).detach(), net.features(xv, 1).detach()  # (I, n, 10): per-instance inputs
    settings = TrainSettings(optimizer="adam", lr=1e-2, batch_size=10, max_epochs=6, patience=2)
    result = fit(net, h, y, settings=settings, generator=_gen(8), val=(hv, yv), start_block=1)
    for k in (1, 2):
        for p, q in zip(net.block_parameters(k), before.block_parameters(k), strict=True):
            assert torch.equal(p, q)  # frozen or outside the trained model: not one bit changes
    for k in (3, 4):
        for p, q in zip(net.block_parameters(k), before.block_parameters(k), strict=True):
            assert not torch.equal(p, q)
    perms = _replay_perms(8, settings.max_epochs, I, n)
    refs = [_reference_fit(before, i, h[i], y, settings, [p[i] for p in perms], (hv[i], yv),
                           start_block=1, frozen_blocks=2) for i in range(I)]
    _assert_matches_reference(net, result, refs, start_block=1)


def test_cnn_matches_independent_loops() -> None:
    I, n = 2, 24
    g = _gen(9)
    x = torch.randn(n, 1, 8, 8, generator=g, dtype=F64)
    y = torch.randint(0, 3, (n,), generator=g)
    xv, yv = torch.randn(10, 1, 8, 8, generator=g, dtype=F64), torch.randint(0, 3, (10,), generator=g)
    net = small_cnn((1, 8, 8), (3, 4), 8, 3, instances=I, generator=_gen(10), dtype=F64)
    settings = TrainSettings(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=8, max_epochs=3, patience=1)
    refs_init = copy.deepcopy(net)
    result = fit(net, x, y, settings=settings, generator=_gen(11), val=(xv, yv))
    perms = _replay_perms(11, settings.max_epochs, I, n)
    refs = [_reference_fit(refs_init, i, x, y, settings, [p[i] for p in perms], (xv, yv)) for i in range(I)]
    _assert_matches_reference(net, result, refs)


def test_float32_matches_independent_loops_to_float32_tolerance() -> None:
    """float32 (the default dtype): batched bmm vs per-instance mm differ by ~1e-7 relative per
    product; over 3 epochs x 5 Adam steps with O(1) weights that stays below 1e-5."""
    I, n = 3, 40
    x, y, _, _ = _noise_task(12, n, 6, 3, dtype=torch.float32)
    net = mlp((6,), [16], 3, instances=I, generator=_gen(13))
    settings = TrainSettings(optimizer="adam", lr=1e-3, batch_size=8, max_epochs=3)
    refs_init = copy.deepcopy(net)
    result = fit(net, x, y, settings=settings, generator=_gen(14))
    perms = _replay_perms(14, settings.max_epochs, I, n)
    refs = [_reference_fit(refs_init, i, x, y, settings, [p[i] for p in perms], None) for i in range(I)]
    _assert_matches_reference(net, result, refs, atol=1e-5)
    assert net.head.weight.dtype == torch.float32


@pytest.mark.parametrize(("val_every", "patience", "max_epochs"), [(3, 3, 25), (2, 5, 25), (4, 4, 7)])
def test_validating_every_few_epochs_matches_independent_loops(val_every: int, patience: int,
                                                                max_epochs: int) -> None:
    """Validation after epochs val_every, 2 val_every, ... and the last: the best epoch and the stopping
    epoch are validated epochs, the permutations are the documented ones (val_every draws nothing)."""
    I, n = 4, 60
    x, y, xv, yv = _noise_task(0, n, 6, 3)
    net = mlp((6,), [16, 16], 3, instances=I, generator=_gen(1), dtype=F64)
    settings = TrainSettings(optimizer="adam", lr=1e-2, weight_decay=1e-3, batch_size=16, max_epochs=max_epochs,
                             patience=patience, val_every=val_every)
    refs_init = copy.deepcopy(net)
    result = fit(net, x, y, settings=settings, generator=_gen(2), val=(xv, yv))
    perms = _replay_perms(2, settings.max_epochs, I, n)
    refs = [_reference_fit(refs_init, i, x, y, settings, [p[i] for p in perms], (xv, yv)) for i in range(I)]
    _assert_matches_reference(net, result, refs)
    validated = {e for e in range(1, max_epochs + 1) if e % val_every == 0 or e == max_epochs}
    assert set(result.best_epoch.tolist()) <= validated | {0}
    assert set(result.stop_epoch.tolist()) <= validated
    assert result.steps == int(result.stop_epoch.max()) * 4


def test_patience_shorter_than_the_validation_interval_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^patience must be an integer >= 3 or None \(.*val_every"):
        TrainSettings(patience=2, val_every=3)
    assert TrainSettings(patience=None, val_every=3).val_every == 3
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="val_every"):
            TrainSettings(val_every=bad)


def test_same_generator_seed_is_bitwise_reproducible() -> None:
    x, y, xv, yv = _noise_task(15, 30, 4, 2, dtype=torch.float32)
    nets = [mlp((4,), [8], 2, instances=3, generator=_gen(16)) for _ in range(2)]
    settings = TrainSettings(batch_size=7, max_epochs=4, patience=2)
    results = [fit(net, x, y, settings=settings, generator=_gen(17), val=(xv, yv)) for net in nets]
    for p, q in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(p, q)
    assert torch.equal(results[0].best_val_loss, results[1].best_val_loss)


def test_kept_weights_give_the_reported_validation_loss() -> None:
    x, y, xv, yv = _noise_task(18, 40, 5, 3)
    net = mlp((5,), [12], 3, instances=3, generator=_gen(19), dtype=F64)
    result = fit(net, x, y, settings=TrainSettings(lr=1e-2, batch_size=8, max_epochs=15, patience=2),
                 generator=_gen(20), val=(xv, yv))
    # the same evaluation code on the same weights: equal up to float64 summation order (none differs here)
    torch.testing.assert_close(evaluate(net, xv, yv)["loss"], result.best_val_loss, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------ convergence
def test_converged_means_stopped_by_patience() -> None:
    x, y, xv, yv = _noise_task(21, 60, 6, 3)
    net = mlp((6,), [16, 16], 3, instances=4, generator=_gen(22), dtype=F64)
    result = fit(net, x, y, settings=TrainSettings(lr=1e-2, batch_size=16, max_epochs=30, patience=2),
                 generator=_gen(23), val=(xv, yv))
    assert torch.equal(result.converged, result.stop_epoch - result.best_epoch == 2)
    assert bool(result.converged.all())


def test_improved_flags_instances_that_never_beat_their_initial_weights() -> None:
    """Labels unrelated to the inputs: validation never beats the initial weights in some instances, which
    stop by patience (converged) with best_epoch 0 and improved False; the others improved."""
    g = _gen(0)
    x, y = torch.randn(40, 5, generator=g, dtype=F64), torch.randint(0, 3, (40,), generator=g)
    xv, yv = torch.randn(40, 5, generator=g, dtype=F64), torch.randint(0, 3, (40,), generator=g)
    net = mlp((5,), [16], 3, instances=6, generator=_gen(1), dtype=F64)
    result = fit(net, x, y, settings=TrainSettings(lr=1e-2, batch_size=8, max_epochs=50, patience=3),
                 generator=_gen(2), val=(xv, yv))
    assert result.improved.dtype == torch.bool and result.improved.shape == (6,)
    assert torch.equal(result.improved, result.best_epoch > 0)
    assert not bool(result.improved.all()) and bool(result.improved.any())
    assert bool(result.converged[~result.improved].all())  # stopped by patience, yet learned nothing
    without_val = fit(mlp((5,), [16], 3, instances=6, generator=_gen(1), dtype=F64), x, y,
                      settings=TrainSettings(lr=1e-2, batch_size=8, max_epochs=2), generator=_gen(2))
    assert bool(without_val.improved.all())


def test_still_improving_at_max_epochs_is_not_converged() -> None:
    g = _gen(24)
    x = torch.randn(80, 4, generator=g, dtype=F64)
    y = (x[:, 0] > 0).long()  # learnable: validation loss keeps falling at a small learning rate
    net = mlp((4,), [8], 2, instances=3, generator=_gen(25), dtype=F64)
    result = fit(net, x[:60], y[:60], settings=TrainSettings(lr=1e-3, batch_size=10, max_epochs=3, patience=3),
                 generator=_gen(26), val=(x[60:], y[60:]))
    assert not bool(result.converged.any())
    assert torch.equal(result.stop_epoch, torch.full((3,), 3)) and torch.equal(result.best_epoch, result.stop_epoch)


def test_converged_without_validation_is_a_flat_training_loss() -> None:
    x, y, _, _ = _noise_task(27, 40, 5, 3)
    settings = dict(batch_size=10, max_epochs=3, optimizer="sgd")
    flat = fit(mlp((5,), [8], 3, instances=2, generator=_gen(28), dtype=F64), x, y,
               settings=TrainSettings(lr=1e-9, **settings), generator=_gen(29))
    assert bool(flat.converged.all())  # the weights barely move: epoch losses agree to ~1e-9
    moving = fit(mlp((5,), [8], 3, instances=2, generator=_gen(28), dtype=F64), x, y,
                 settings=TrainSettings(lr=0.5, **settings), generator=_gen(29))
    assert not bool(moving.converged.any())
    single = fit(mlp((5,), [8], 3, instances=2, generator=_gen(28), dtype=F64), x, y,
                 settings=TrainSettings(lr=1e-9, batch_size=10, max_epochs=1), generator=_gen(29))
    assert not bool(single.converged.any())  # one epoch: nothing to compare with


# ------------------------------------------------------------------------------------------ divergence
def test_divergence_names_instance_epoch_and_cause() -> None:
    g = _gen(30)
    x = torch.randn(2, 32, 4, generator=g)
    x[1] *= 30.0  # instance 1's inputs are 30x larger: the same lr makes it blow up, instance 0 trains
    y = torch.randn(32, 1, generator=g)
    net = mlp((4,), [16], 1, instances=2, generator=_gen(31))
    with pytest.raises(TrainingDiverged, match=r"epoch \d+ in instance\(s\) 1 .*lr = 0.05.*too large"):
        fit(net, x, y, settings=TrainSettings(optimizer="sgd", lr=0.05, batch_size=8, max_epochs=20, loss="mse"),
            generator=_gen(32))


def test_stopped_instances_do_not_raise_divergence() -> None:
    """Only still-active instances are checked: a stopped one may keep computing anything."""
    x, y, xv, yv = _noise_task(33, 40, 5, 3)
    net = mlp((5,), [8], 3, instances=2, generator=_gen(34), dtype=F64)
    result = fit(net, x, y, settings=TrainSettings(lr=1e-2, batch_size=10, max_epochs=40, patience=1),
                 generator=_gen(35), val=(xv, yv))
    assert bool(torch.isfinite(result.best_val_loss).all())


# ------------------------------------------------------------------------------------------ bad input
def _small() -> tuple[BlockNet, torch.Tensor, torch.Tensor]:
    net = mlp((5,), [6], 3, instances=2, generator=_gen(40))
    g = _gen(41)
    return net, torch.randn(10, 5, generator=g), torch.randint(0, 3, (10,), generator=g)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda x, y: (x[:, :4], y, None), r"^x must have shape \(n, 5\) or \(2, n, 5\)"),
        (lambda x, y: (x.expand(3, 10, 5), y, None), r"^x must have shape"),
        (lambda x, y: (x[:0], y[:0], None), r"^x has no samples"),
        (lambda x, y: (x.long(), y, None), r"^x must be a floating-point"),
        (lambda x, y: (x, y[:9], None), r"^y must have shape \(10,\) or \(2, 10\)"),
        (lambda x, y: (x, y.float(), None), r"^y must hold integer class labels"),
        (lambda x, y: (x, torch.where(y == 0, 3, y), None), r"^y labels must lie in 0\.\.2"),
        (lambda x, y: (x, y - 1, None), r"^y labels must lie in 0\.\.2"),
        (lambda x, y: (x * torch.nan, y, None), r"^x contains non-finite"),
        (lambda x, y: (x, y, (x[:, :3], y)), r"^val\[0\] must have shape"),
        (lambda x, y: (x, y, (x, y[:4])), r"^val\[1\] must have shape"),
    ],
)
def test_bad_data_raises_data_error_naming_the_argument(change, match: str) -> None:
    net, x, y = _small()
    x, y, val = change(x, y)
    with pytest.raises(DataError, match=match):
        fit(net, x, y, settings=TrainSettings(max_epochs=1), generator=_gen(0), val=val)


def test_bad_mse_targets() -> None:
    net, x, _ = _small()
    settings = TrainSettings(max_epochs=1, loss="mse")
    with pytest.raises(DataError, match=r"^y must have one of the shapes"):
        fit(net, x, torch.zeros(10), settings=settings, generator=_gen(0))  # 3 outputs need (10, 3)
    with pytest.raises(DataError, match=r"^y must hold float targets"):
        fit(net, x, torch.zeros(10, 3, dtype=torch.int64), settings=settings, generator=_gen(0))
    scalar = mlp((5,), [6], 1, instances=2, generator=_gen(40))
    for y in (torch.zeros(10), torch.zeros(10, 1), torch.zeros(2, 10), torch.zeros(2, 10, 1)):
        fit(scalar, x, y, settings=settings, generator=_gen(0))  # every documented shape for one output


@pytest.mark.parametrize(
    "kwargs",
    [dict(optimizer="rmsprop"), dict(lr=0.0), dict(lr=float("nan")), dict(momentum=1.0),
     dict(optimizer="adam", momentum=0.9), dict(weight_decay=-1.0), dict(batch_size=0), dict(max_epochs=0),
     dict(patience=0), dict(loss="hinge"), dict(batch_size=True)],
)
def test_bad_settings_raise_config_error(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        TrainSettings(**kwargs)


def test_bad_calls_raise_config_error() -> None:
    net, x, y = _small()
    with pytest.raises(ConfigError, match="start_block"):
        fit(net, x, y, settings=TrainSettings(), generator=_gen(0), start_block=2)
    net.freeze_first(1)
    for p in net.head.parameters():
        p.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        fit(net, x, y, settings=TrainSettings(), generator=_gen(0))
    with pytest.raises(ConfigError, match="loss"):
        evaluate(net, x, y, loss="hinge")


# ------------------------------------------------------------------------------------------ evaluate
def test_evaluate_matches_plain_computation() -> None:
    net, x, y = _small()
    out = net(x)  # (2, 10, 3)
    got = evaluate(net, x, y, batch_size=3)  # several batches, the last one short
    for i in range(2):
        want_loss = nn.functional.cross_entropy(out[i], y).double()
        want_acc = (out[i].argmax(-1) == y).double().mean()
        # float32 forward; the per-sample losses summed in float64 vs torch's float32 mean: <= 1e-6
        torch.testing.assert_close(got["loss"][i], want_loss.detach(), rtol=0, atol=1e-6)
        assert float(got["accuracy"][i]) == float(want_acc) and float(got["error"][i]) == 1 - float(want_acc)
    targets = torch.randn(10, 3, generator=_gen(42))
    mse = evaluate(net, x, targets, loss="mse")
    for i in range(2):
        torch.testing.assert_close(mse["loss"][i], ((out[i] - targets) ** 2).mean().double().detach(),
                                   rtol=0, atol=1e-6)
    assert torch.equal(mse["error"], mse["loss"]) and "accuracy" not in mse
