"""Transfer protocols for deep linear networks and the batched "features are fate" simulator.

Protocols (Tahir, Ganguli & Rotskoff 2024, Sec. 3, as in the authors' code), each on a batch of
instances with a leading axis:

- :func:`pretrain`: GD from the init on the source, either the population loss ||beta_s - beta||^2
  (infinite source data) or the empirical MSE of a finite, noisy source sample.
- :func:`scratch`: GD from the (small) init on the target MSE.
- :func:`finetune`: GD on the target MSE from the pretrained weights, all layers trained.
- :func:`linear_transfer`: freeze H = W_1 ... W_{L-1}, refit the last layer by closed-form ridge on
  the features F = X H:  c = (F^T F + n lambda I)^{-1} F^T y,  beta_hat = H c.
- :func:`teacher_risk`: R = ||beta_hat - beta_t||^2 (the generalisation error for x ~ N(0, I)).

:func:`simulate_fate` runs all of them for B cells x ``instances`` in stacked tensors.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

from transferlab._checks import check_int, check_real
from transferlab.errors import ConfigError, DataError
from transferlab.nets import DeepLinear
from transferlab.tasks import RandomSource, linear_regression_data, teacher_pair
from transferlab.train import GDResult, GDSettings, LeastSquaresObjective, train_gd

__all__ = [
    "PROTOCOLS",
    "finetune",
    "linear_transfer",
    "pretrain",
    "resolve_device",
    "scratch",
    "simulate_fate",
    "teacher_risk",
]

logger = logging.getLogger("transferlab")

#: The protocols :func:`simulate_fate` knows.
PROTOCOLS = ("scratch", "linear_transfer", "finetune")


def _trained_copy(net: DeepLinear, objective: LeastSquaresObjective, settings: GDSettings | None
                  ) -> tuple[DeepLinear, GDResult]:
    """Train a copy of ``net`` (left unchanged) on ``objective``; every GD protocol is this."""
    copy = DeepLinear.from_weights(list(net.weights))
    return copy, train_gd(copy, objective, settings)


def pretrain(
    init: DeepLinear,
    beta_s: torch.Tensor | None = None,
    X: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    settings: GDSettings | None = None,
) -> tuple[DeepLinear, GDResult]:
    """Pretrain a copy of ``init`` on the source.

    Give either ``beta_s`` (instances, d) for the population loss ||beta_s - W_1 ... W_L||^2, or a
    finite source sample ``X`` (instances, n_s, d), ``y`` (instances, n_s) for the empirical MSE
    (GD from small init then converges to the minimum-norm X^+ y).

    Returns:
        The pretrained network (``init`` is left unchanged) and the GD record.
    """
    if (beta_s is None) == (X is None or y is None):
        raise ConfigError("pretrain needs either beta_s (population) or both X and y (finite source)")
    objective = (LeastSquaresObjective.population(beta_s) if beta_s is not None
                 else LeastSquaresObjective.empirical(X, y))
    return _trained_copy(init, objective, settings)


def scratch(init: DeepLinear, X: torch.Tensor, y: torch.Tensor, settings: GDSettings | None = None
            ) -> tuple[DeepLinear, GDResult]:
    """Train a copy of the small-init network ``init`` on the target MSE (1/n)||X beta - y||^2.

    X: (instances, n, d), y: (instances, n). From alpha -> 0 the limit is the minimum-norm
    interpolator X^+ y for n < d and the least-squares solution for n > d (the paper's Thm 3.5).
    """
    return _trained_copy(init, LeastSquaresObjective.empirical(X, y), settings)


def finetune(pretrained: DeepLinear, X: torch.Tensor, y: torch.Tensor, settings: GDSettings | None = None
             ) -> tuple[DeepLinear, GDResult]:
    """Train a copy of the pretrained network, all layers, on the target MSE.

    X: (instances, n, d), y: (instances, n). GD moves beta only inside row(X), so the limit is
    beta_sc + c (I - P) beta_s with c = 1 at sigma = 0 (the paper's Thm 3.9, eq. 14; the scale c is
    derived in docs/derivations/finite_source_finetuning.md). Unlike the authors' fixed 5000 epochs,
    training stops at the same rule as scratch (excess <= tol): the theory describes the converged
    limit.
    """
    return _trained_copy(pretrained, LeastSquaresObjective.empirical(X, y), settings)


def linear_transfer(
    pretrained: DeepLinear,
    X: torch.Tensor,
    y: torch.Tensor,
    ridge: float = 0.1,
    rank: int | None = None,
) -> torch.Tensor:
    """Closed-form ridge probe on frozen pretrained features; returns beta_hat, shape (instances, d).

    With H = W_1 ... W_{L-1} (instances, d, d) and F = X H (instances, n, d):
        c = (F^T F + n lambda I)^{-1} F^T y,   beta_hat = H c,
    solved in the cheaper of the d-dimensional form above and the n-dimensional (push-through) form
    c = F^T (F F^T + n lambda I)^{-1} y. ``ridge = 0`` gives the minimum-norm least-squares c.

    ``rank = k`` first truncates H to its best rank-k approximation U_k S_k V_k^T (the O(alpha) residual
    singular values of a pretrained H give F full row rank when n < d, so an unregularised probe fits
    y through them and leaks below the sin^2 theta floor); the probe then runs on the k features
    Z = X U_k S_k.

    Args:
        pretrained: networks with I instances.
        X: target inputs (I, n, d); y: target labels (I, n).
        ridge: lambda >= 0 (paper's plots: 0.1).
        rank: optional truncation rank, 1 <= k <= d.
    """
    ridge = check_real(ridge, "ridge", low=0.0)
    if X.ndim != 3 or y.shape != X.shape[:2] or X.shape[0] != pretrained.instances or X.shape[2] != pretrained.d:
        raise DataError(f"X must be ({pretrained.instances}, n, {pretrained.d}) and y (instances, n); "
                        f"got {tuple(X.shape)}, {tuple(y.shape)}")
    H = pretrained.hidden_features().detach().to(X.dtype)
    if rank is not None:
        rank = check_int(rank, "rank", low=1, high=pretrained.d)
        U, S, _ = torch.linalg.svd(H)
        H = U[..., :rank] * S[..., None, :rank]  # (I, d, k): beta_hat = H a for the k-dim probe a
    F = X @ H
    n, k = F.shape[1], F.shape[2]
    if ridge == 0 and F.device.type == "cpu":
        coef = torch.linalg.lstsq(F, y[..., None], driver="gelsd").solution[..., 0]
    elif ridge == 0:  # CUDA's lstsq has no rank-revealing driver; the pseudo-inverse is the same minimum-norm c
        coef = (torch.linalg.pinv(F) @ y[..., None])[..., 0]
    elif n < k:
        gram = F @ F.mT + n * ridge * torch.eye(n, dtype=F.dtype, device=F.device)
        coef = (F.mT @ torch.linalg.solve(gram, y[..., None]))[..., 0]
    else:
        gram = F.mT @ F + n * ridge * torch.eye(k, dtype=F.dtype, device=F.device)
        coef = torch.linalg.solve(gram, (F.mT @ y[..., None]))[..., 0]
    return (H @ coef[..., None])[..., 0]


def teacher_risk(beta_hat: torch.Tensor, beta_t: torch.Tensor) -> torch.Tensor:
    """Risk R = ||beta_hat - beta_t||^2 per instance: (instances, d), (instances, d) or (d,) -> (instances,)."""
    diff = beta_hat.to(torch.float64) - beta_t.to(torch.float64)
    return (diff * diff).sum(-1)


def simulate_fate(
    d: int,
    n: int,
    layers: int,
    thetas: np.ndarray | Sequence[float],
    sigmas: np.ndarray | Sequence[float],
    instances: int,
    *,
    generators: Sequence[RandomSource],
    protocols: Sequence[str] = PROTOCOLS,
    source_n: int | None = None,
    source_sigma: float = 0.0,
    init_scale: float = 1e-3,
    ridge: float = 0.1,
    dtype: torch.dtype = torch.float64,
    lr: float | None = None,
    max_steps: int = 20_000,
    tol: float = 1e-6,
    stop_rule: Literal["excess", "distance"] = "excess",
    finetune_warmup: int = 0,
    weight_decay: float = 0.0,
    rank: int | None = None,
    return_training: bool = False,
    device: str | torch.device = "cpu",
) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], dict[str, GDResult]]:
    """Simulate paper 1's transfer protocols for B cells x ``instances`` deep linear networks.

    Cell b has angle thetas[b] (radians), target label noise sigmas[b] and its own generator
    ``generators[b]``, which supplies ALL of the cell's randomness in this fixed order: the teacher
    pair (beta_s, beta_t), the init (random, scale ``init_scale``), the target data
    X (instances, n, d), y = X beta_t + sigma eps, and then, if ``source_n`` is given, the source
    sample (source_n, d) with noise ``source_sigma``. So a cell's results do not depend on which
    other cells share the call. As in the authors' code, the instances of a cell share beta_s,
    beta_t, the init and the pretrained network; only the target data differ.

    Every draw is made on the CPU (so a cell's data do not depend on the device); the networks, the
    data and all training then live on ``device``, and the results come back as CPU arrays/tensors.

    All B * instances networks are trained in one stacked tensor (instances axis of size
    B * instances) by :func:`~transferlab.train.train_gd` -- :func:`scratch` and :func:`finetune`
    on one shared target objective; pretraining (:func:`pretrain`) runs once per cell.

    Args:
        d: input dimension = width (>= 2).
        n: target samples per instance (gamma = n / d).
        layers: depth L >= 1.
        thetas, sigmas: shape (B,) angles (radians) and target noise levels (>= 0).
        instances: target data draws per cell (>= 1).
        generators: B generators (``torch.Generator`` or ``numpy.random.Generator``), one per cell
            (keyword-only, like everything after ``instances``).
        protocols: a non-empty subset of ``("scratch", "linear_transfer", "finetune")``.
        source_n: None for population pretraining, else the source sample size.
        source_sigma: source label noise (finite source only).
        init_scale: alpha > 0 (theory: alpha -> 0).
        ridge: lambda of the linear-transfer probe (0.1 as in the paper's plots).
        dtype: torch.float64 (default) or torch.float32 for all training.
        lr: GD step size for pretraining, scratch and fine-tuning; None = 0.2 / lambda_max(X^T X / n)
            per instance (see :class:`~transferlab.train.GDSettings`).
        max_steps: most GD steps per phase (default 20000).
        tol: stop when train loss <= least-squares minimum + tol (default 1e-6, the paper's).
        stop_rule: ``"excess"`` (default, the rule above) or ``"distance"``: stop when the excess is
            <= tol * lambda_min(X^T X / n), i.e. within squared distance tol of the least-squares
            solution (:class:`~transferlab.train.GDSettings`); removes the stopping-rule bias near n = d.
        finetune_warmup: fine-tuning's first steps at a tenth of the step size (default 0); removes
            most of the discrete-step bias of fine-tuning (benchmarks/fate_offsets.py).
        weight_decay: weight decay of SCRATCH training only (the paper's Fig. 5 knob); pretraining and
            fine-tuning use none.
        rank: optional rank truncation of the frozen features in linear transfer.
        return_training: also return the gradient-descent record of every trained phase.
        device: where the simulation's tensors live: ``"cpu"`` (default), ``"cuda"`` or ``"cuda:k"``.

    Returns:
        ``{protocol: risks}`` with risks = ||beta_hat - beta_t||^2 as a float64 array (B, instances);
        with ``return_training`` the pair ``(risks, {phase: GDResult})`` for the phases that ran GD:
        ``"pretrain"`` (fields of shape (B,), one pretraining per cell), ``"scratch"`` and
        ``"finetune"`` (fields of shape (B * instances,), cell-major).

    Raises:
        ConfigError: invalid sizes, angles, noise levels, protocols, generators or knobs, or a device
            that this machine does not have.
        TrainingDiverged: GD diverged (the message says whether to lower ``lr`` or ``init_scale``).
    """
    d = check_int(d, "d", low=2)
    n = check_int(n, "n", low=1)
    layers = check_int(layers, "layers", low=1)
    instances = check_int(instances, "instances", low=1)
    thetas = np.asarray(thetas, dtype=float)
    sigmas = np.asarray(sigmas, dtype=float)
    if thetas.ndim != 1 or thetas.size == 0 or sigmas.shape != thetas.shape:
        raise ConfigError(f"thetas and sigmas must be 1-D arrays of equal length B >= 1, got shapes "
                          f"{thetas.shape} and {sigmas.shape}")
    if not np.isfinite(thetas).all():
        raise ConfigError("thetas must be finite")
    if not (np.isfinite(sigmas).all() and (sigmas >= 0).all()):
        raise ConfigError("sigmas must be finite and >= 0")
    cells = thetas.size
    protocols = tuple(protocols)
    unknown = set(protocols) - set(PROTOCOLS)
    if not protocols or unknown or len(set(protocols)) != len(protocols):
        raise ConfigError(f"protocols must be a non-empty subset of {PROTOCOLS} without repeats, got {protocols}")
    generators = list(generators)
    if len(generators) != cells:
        raise ConfigError(f"need one generator per cell: {cells} cells, {len(generators)} generators")
    source_n = check_int(source_n, "source_n", low=1, optional=True)
    source_sigma = check_real(source_sigma, "source_sigma", low=0.0)
    init_scale = check_real(init_scale, "init_scale", low=0.0, low_open=True)
    ridge = check_real(ridge, "ridge", low=0.0)
    if dtype not in (torch.float32, torch.float64):
        raise ConfigError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    rank = check_int(rank, "rank", low=1, high=d, optional=True)
    device = resolve_device(device)
    settings = GDSettings(lr=lr, max_steps=max_steps, tol=tol, stop_rule=stop_rule)
    scratch_settings = dataclasses.replace(settings, weight_decay=weight_decay)
    finetune_settings = dataclasses.replace(settings, warmup_steps=finetune_warmup)

    beta_s, beta_t, inits, X_t, y_t, X_s, y_s = [], [], [], [], [], [], []
    for theta, sigma, generator in zip(thetas, sigmas, generators, strict=True):
        pair = teacher_pair(d, float(theta), generator)
        beta_s.append(pair.beta_s)
        beta_t.append(pair.beta_t)
        inits.append(DeepLinear(d, layers, 1, init_scale=init_scale, generator=generator, dtype=dtype))
        X, y = linear_regression_data(pair.beta_t, n, float(sigma), generator, instances)
        X_t.append(X)
        y_t.append(y)
        if source_n is not None:
            Xs, ys = linear_regression_data(pair.beta_s, source_n, source_sigma, generator)
            X_s.append(Xs)
            y_s.append(ys)
    init = DeepLinear.from_weights([torch.cat(ws).to(device) for ws in zip(*(net.weights for net in inits),
                                                                            strict=True)])
    X_t = torch.cat(X_t).to(device=device, dtype=dtype)
    y_t = torch.cat(y_t).to(device=device, dtype=dtype)
    beta_t_rows = torch.stack(beta_t).to(device).repeat_interleave(instances, dim=0)

    risks: dict[str, np.ndarray] = {}
    results: dict[str, GDResult] = {}
    # one SVD of the target data, shared by scratch and fine-tuning (linear transfer needs none)
    target = LeastSquaresObjective.empirical(X_t, y_t) if {"scratch", "finetune"} & set(protocols) else None
    if "scratch" in protocols:
        net, results["scratch"] = _trained_copy(init.repeat_instances(instances), target, scratch_settings)
        risks["scratch"] = teacher_risk(net.end_to_end().detach(), beta_t_rows)
    if "linear_transfer" in protocols or "finetune" in protocols:
        if source_n is None:
            source, results["pretrain"] = pretrain(init, beta_s=torch.stack(beta_s).to(device=device, dtype=dtype),
                                                   settings=settings)
        else:
            source, results["pretrain"] = pretrain(init, X=torch.cat(X_s).to(device=device, dtype=dtype),
                                                   y=torch.cat(y_s).to(device=device, dtype=dtype), settings=settings)
        source = source.repeat_instances(instances)
        if "linear_transfer" in protocols:
            risks["linear_transfer"] = teacher_risk(linear_transfer(source, X_t, y_t, ridge, rank), beta_t_rows)
        if "finetune" in protocols:
            net, results["finetune"] = _trained_copy(source, target, finetune_settings)
            risks["finetune"] = teacher_risk(net.end_to_end().detach(), beta_t_rows)
    for phase, result in results.items():
        missed = int((~result.converged).sum())
        if missed and tol > 0:
            logger.warning("simulate_fate: %s: %d of %d runs stopped at max_steps=%d before the %s stopping rule "
                           "(tol %g)", phase, missed, result.converged.numel(), max_steps, stop_rule, tol)
    out = {p: risks[p].cpu().numpy().reshape(cells, instances) for p in protocols}
    if not return_training:
        return out
    return out, {phase: GDResult(**{f.name: getattr(r, f.name).cpu() for f in dataclasses.fields(r)})
                 for phase, r in results.items()}


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`, checked to exist on this machine.

    Raises:
        ConfigError: an unknown device string, or a CUDA device where torch sees none (or fewer).
    """
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:k'") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {str(device)!r} requested, but no CUDA device is available here "
                              f"(torch {torch.__version__}, torch.cuda.is_available() is False); use device 'cpu'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(f"device {str(device)!r} requested, but only {torch.cuda.device_count()} CUDA "
                              "device(s) exist here")
    elif resolved.type != "cpu":
        raise ConfigError(f"device {str(device)!r} is not supported; use 'cpu', 'cuda' or 'cuda:k'")
    return resolved
