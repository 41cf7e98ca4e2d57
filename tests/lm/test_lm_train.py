"""Next-token training: the schedule, the loss estimator, overfitting a tiny corpus, early stopping, batched
instances equal to separate runs, per-instance streams, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from transferlab.errors import ConfigError, DataError
from transferlab.nets.transformer import TransformerSize, transformer
from transferlab.tasks.text import encode
from transferlab.train.lm import LMSettings, fit_lm, kaplan_lr, lm_loss, lr_at


ENGLISH = encode("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
                 "foolishness, it was the epoch of belief, it was the epoch of incredulity.")
HELD_OUT = encode("We had everything before us, we had nothing before us, we were all going direct to Heaven.")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_schedule_is_warmup_then_cosine_to_the_final_fraction() -> None:
    s = LMSettings(max_steps=1100, warmup_steps=100, final_lr_fraction=0.1)
    # float64 arithmetic on exact inputs: 1e-12 relative
    assert lr_at(50, 2.0, s) == pytest.approx(1.0, rel=1e-12)
    assert lr_at(100, 2.0, s) == pytest.approx(2.0, rel=1e-12)
    assert lr_at(600, 2.0, s) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5), rel=1e-12)  # cos(pi / 2) = 0
    assert lr_at(1100, 2.0, s) == pytest.approx(0.2, rel=1e-12)
    rates = [lr_at(k, 1.0, s) for k in range(100, 1101)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
    # Kaplan et al.'s eq. D.1 at N = 1e6: 0.003239 - 0.0001395 * 13.8155 = 0.0013118
    assert kaplan_lr(1e6) == pytest.approx(0.0013118, abs=1e-7)
    with pytest.raises(ConfigError, match="warmup_steps"):
        LMSettings(max_steps=10, warmup_steps=10)


def test_lm_loss_equals_the_definition_target_by_target() -> None:
    net = transformer("xs", context=16, instances=2, generator=_gen(1))
    stream = encode("A short stream of text, of forty-one bytes")
    n, T = stream.size, 16
    expected = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for p in range(1, n):  # target p is predicted from its window's tokens before it
            start = ((p - 1) // T) * T
            ids = torch.from_numpy(stream[start:p].astype(np.int64)).expand(2, 1, p - start)
            logits = net.forward_from(ids, 0)[:, 0, -1]
            expected -= F.log_softmax(logits.double(), -1)[:, int(stream[p])]
    expected /= n - 1
    # same float32 logits computed on prefixes instead of whole windows: agree to float32 rounding
    torch.testing.assert_close(lm_loss(net, stream, batch_size=1), expected, rtol=1e-5, atol=1e-5)
    # a sample of 2 windows spread over the stream: starts 0 and n - 1 - T = 24, T targets each
    sampled = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for start in (0, n - 1 - T):
            ids = torch.from_numpy(stream[start : start + T + 1].astype(np.int64))
            logits = net.forward_from(ids[:-1].expand(2, 1, T), 0)[:, 0]
            sampled -= F.log_softmax(logits.double(), -1).gather(-1, ids[1:].expand(2, T)[..., None]).sum((1, 2))
    torch.testing.assert_close(lm_loss(net, stream, max_targets=2 * T + 5), sampled / (2 * T), rtol=1e-5, atol=1e-5)


def test_a_tiny_model_overfits_a_tiny_corpus() -> None:
    # each byte occurs once, so each token determines the next: the training loss can reach 0
    rng = np.random.default_rng(0)
    train, held_out = rng.permutation(256)[:150], rng.permutation(256)[:150]
    net = transformer("xs", context=32, generator=_gen(2))
    settings = LMSettings(batch_size=16, max_steps=200, warmup_steps=20, lr=1e-2, eval_every=50, patience=None)
    start = float(lm_loss(net, train)[0])
    result = fit_lm(net, train, train, settings, generator=_gen(3))  # validated on itself: keeps the best fit
    fitted, other = float(lm_loss(net, train)[0]), float(lm_loss(net, held_out)[0])
    assert start > 4.0 and fitted < 0.05  # from ~ln 256 = 5.5 nats/token to near 0
    assert fitted == pytest.approx(float(result.best_val_loss[0]), rel=1e-9)  # the kept weights are the best
    assert math.isfinite(other) and other > fitted + 1.0


def test_early_stopping_keeps_the_best_validation_weights() -> None:
    net = transformer("xs", context=32, generator=_gen(4))
    settings = LMSettings(batch_size=16, max_steps=400, warmup_steps=20, lr=1e-2, eval_every=25, patience=3)
    result = fit_lm(net, ENGLISH, HELD_OUT, settings, generator=_gen(5))
    assert bool(result.converged[0])  # the held-out loss rose for 3 evaluations: stopped by patience
    best, stop = int(result.best_step[0]), int(result.stop_step[0])
    assert 0 < best < stop < 400 and stop == best + 3 * 25 and result.steps == stop
    history = result.val_history[:, 0]
    assert len(result.eval_steps) == len(history) == stop // 25 + 1
    assert float(history.min()) == float(result.best_val_loss[0])
    assert result.eval_steps[int(history.argmin())] == best
    # the restored weights reproduce the recorded best validation loss (same computation: 1e-9)
    assert float(lm_loss(net, HELD_OUT)[0]) == pytest.approx(float(result.best_val_loss[0]), rel=1e-9)
    assert float(lm_loss(net, ENGLISH)[0]) < float(result.best_val_loss[0])  # train below held-out


def _reference_stop(history: list[float], eval_steps: tuple[int, ...], patience: int, min_delta: float) -> int:
    """The stop step by the rule as the docstring states it, one evaluation at a time in Python."""
    anchor, anchor_at = history[0], 0
    for k in range(1, len(history)):
        if history[k] < anchor - min_delta:
            anchor, anchor_at = history[k], k
        if k - anchor_at >= patience:
            return eval_steps[k]
    return eval_steps[-1]


@pytest.mark.parametrize("min_delta", [0.0, 0.05])
def test_min_delta_stops_on_a_plateau_by_the_stated_rule(min_delta: float) -> None:
    # a held-out loss that keeps creeping down: without min_delta the run goes on; with it, it stops once the
    # gains per 3 evaluations fall under 0.05 nats (they are ~0.01 per evaluation by step 200). Either way the
    # stop step is the reference rule's, and the kept weights are the strictly best evaluation (not the last
    # significant one)
    net = transformer("xs", context=32, generator=_gen(4))
    settings = LMSettings(batch_size=16, max_steps=300, warmup_steps=20, lr=3e-3, eval_every=10, patience=3,
                          min_delta=min_delta)
    result = fit_lm(net, ENGLISH, ENGLISH, settings, generator=_gen(5))
    history = [float(v) for v in result.val_history[:, 0]]
    stop = int(result.stop_step[0])
    assert stop == _reference_stop(history, result.eval_steps, 3, min_delta)
    assert bool(result.converged[0]) == (stop < 300)
    assert float(result.best_val_loss[0]) == min(h for h in history if not math.isnan(h))
    if min_delta > 0:
        assert bool(result.converged[0]) and stop < 300  # the plateau stopped it
    else:
        assert not bool(result.converged[0])  # validated on its training text: it never stopped improving


def test_batched_instances_train_as_separate_runs() -> None:
    size = TransformerSize(d_model=32, n_layers=2, n_heads=2)
    both = transformer(size, context=16, instances=2, generator=_gen(6))
    alone = transformer(size, context=16, instances=1, generator=_gen(7))
    with torch.no_grad():
        for p, q in zip(both.parameters(), alone.parameters(), strict=True):
            q.copy_(p[1:2])
    settings = LMSettings(batch_size=8, max_steps=30, warmup_steps=5, lr=3e-3, eval_every=10, patience=None)
    r2 = fit_lm(both, ENGLISH, HELD_OUT, settings, generator=_gen(8))
    r1 = fit_lm(alone, ENGLISH, HELD_OUT, settings, generator=_gen(8))  # same windows: one shared stream
    # float32 rounding of batched vs single matmuls, carried through 30 Adam steps: 1e-4 on losses ~3-5
    torch.testing.assert_close(r2.val_history[:, 1], r1.val_history[:, 0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(r2.val_history[1:, 0], r2.val_history[1:, 1])  # instance 0 differs


def test_each_instance_learns_its_own_stream() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.permutation(128)[:100], 128 + rng.permutation(128)[:100]  # disjoint byte ranges
    net = transformer("xs", context=16, instances=2, generator=_gen(9))
    settings = LMSettings(batch_size=8, max_steps=60, warmup_steps=5, lr=1e-2, eval_every=60, patience=None)
    result = fit_lm(net, [a, b], np.concatenate([a, b]), settings, generator=_gen(10))
    on_a, on_b = lm_loss(net, a), lm_loss(net, b)
    assert on_a[0] < on_a[1] - 1.0 and on_b[1] < on_b[0] - 1.0
    assert result.tokens_per_step == 8 * 16 and not bool(result.converged.any())  # no patience: not converged


def test_bad_input_is_one_clear_error() -> None:
    net = transformer("xs", context=16, instances=2, generator=_gen())
    with pytest.raises(DataError, match="train has 10 tokens; it needs at least 17"):
        fit_lm(net, ENGLISH[:10], HELD_OUT, generator=_gen())
    with pytest.raises(DataError, match="3 streams for 2 instances"):
        fit_lm(net, [ENGLISH] * 3, HELD_OUT, generator=_gen())
    with pytest.raises(DataError, match="1-D array of integer tokens"):
        lm_loss(net, np.zeros((2, 20), dtype=np.int64))
    with pytest.raises(ConfigError, match="context"):
        lm_loss(net, HELD_OUT, context=17)
