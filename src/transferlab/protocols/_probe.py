"""Linear probes on frozen features: closed-form ridge and multinomial logistic regression, batched over instances.

Features F (I, n, d) (or (n, d), shared), float64 throughout. With W (d, c), b (1, c) per instance:

- ridge (regression, targets Y (n, c)):

      min_{W,b}  (1/n) ||F W + 1 b - Y||^2 + lambda ||W||^2,

  solved in closed form on centred data: W = (Fc^T Fc + n lambda I)^{-1} Fc^T Yc, b = mean(Y) - mean(F) W
  (lambda = 0: the minimum-norm least-squares W = Fc^+ Yc). scikit-learn's ``Ridge(alpha)`` minimises
  ||Y - F W - b||^2 + alpha ||W||^2, so it is this problem with **alpha = n lambda**.

- multinomial logistic regression (classification, labels y in 0..c-1):

      min_{W,b}  (1/n) sum_j [ logsumexp(z_j) - z_{j, y_j} ] + (lambda / 2) ||W||_F^2,   z_j = f_j W + b,

  convex (strictly in W for lambda > 0; the bias is unpenalised, and adding a constant to every class's
  bias changes nothing, so the returned bias is centred: sum_c b_c = 0). Solved by L-BFGS (history 10,
  Armijo backtracking, per instance) to max |gradient| <= ``tol``. scikit-learn's multinomial
  ``LogisticRegression(C)`` minimises (1/2)||W||^2 + C sum_j CE_j, i.e. this objective times C n with
  **C = 1 / (n lambda)**; its intercept is unpenalised too. (With c = 2 classes scikit-learn fits one
  weight vector instead of two, which is a different regulariser; the mapping holds for c >= 3.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from transferlab._checks import check_int, check_real
from transferlab.errors import ConfigError, DataError
from transferlab.nets.blocks import BatchedLinear, BlockNet

__all__ = ["LinearProbe", "linear_probe"]

#: L-BFGS memory (pairs kept) and Armijo constant.
_HISTORY = 10
_ARMIJO = 1e-4
#: Backtracking halvings before an instance's line search is declared failed.
_MAX_HALVINGS = 60
#: Slack for rounding in the Armijo test, times machine epsilon and max(1, |f|): near the optimum the
#: predicted decrease falls below the rounding error of f, and the gradient (computed exactly) still
#: guides the iteration.
_ROUNDING_SLACK = 8.0

Objective = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class LinearProbe:
    """A fitted linear probe for every instance.

    Attributes:
        weight: (I, d, c) float64; instance i predicts f W_i + b_i (the layout of :class:`BatchedLinear`).
        bias: (I, 1, c) float64 (centred over classes for the logistic probe).
        kind: ``"ridge"`` or ``"logistic"``.
        l2: lambda of the objective (see the module docstring).
        converged: (I,) bool: ridge, always (closed form); logistic, max |gradient| <= tol was reached.
        grad_norm: (I,) float64, max |gradient| of the objective at the returned (W, b).
        iterations: L-BFGS iterations run (0 for ridge).
    """

    weight: torch.Tensor
    bias: torch.Tensor
    kind: Literal["ridge", "logistic"]
    l2: float
    converged: torch.Tensor
    grad_norm: torch.Tensor
    iterations: int

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Outputs (logits or predictions) (I, n, c) on features (n, d) or (I, n, d)."""
        f = _as_features(features, self.weight.shape[0])
        return f @ self.weight + self.bias

    def load_into(self, net: BlockNet) -> None:
        """Copy (W, b) into ``net``'s head, which must be a :class:`BatchedLinear` of shape (I, d, c)."""
        head = net.head
        if not isinstance(head, BatchedLinear) or head.bias is None:
            raise ConfigError(f"the probe loads into a BatchedLinear head with bias, not {type(head).__name__}")
        if head.weight.shape != self.weight.shape:
            raise ConfigError(f"head weight has shape {tuple(head.weight.shape)}, the probe {tuple(self.weight.shape)}")
        with torch.no_grad():
            head.weight.copy_(self.weight)
            head.bias.copy_(self.bias)


def _as_features(features: torch.Tensor, instances: int | None) -> torch.Tensor:
    """Features as float64 (I, n, d) (a shared (n, d) is broadcast to ``instances``, default 1)."""
    if not isinstance(features, torch.Tensor) or not features.is_floating_point():
        raise DataError(f"features must be a floating-point tensor, got {getattr(features, 'dtype', type(features))}")
    if features.ndim == 2:
        features = features.unsqueeze(0).expand(instances or 1, *features.shape)
    if features.ndim != 3 or (instances is not None and features.shape[0] != instances):
        raise DataError(f"features must have shape (n, d) or ({instances or 'I'}, n, d), got {tuple(features.shape)}")
    if features.shape[1] < 1:
        raise DataError("features have no samples (n = 0)")
    if not bool(torch.isfinite(features).all()):
        raise DataError("features contain non-finite values")
    return features.double()


def _ridge(f: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form ridge per instance: f (I, n, d), y (I, n, c) -> W (I, d, c), b (I, 1, c)."""
    f_mean, y_mean = f.mean(1, keepdim=True), y.mean(1, keepdim=True)
    fc, yc = f - f_mean, y - y_mean
    if lam > 0:
        gram = fc.transpose(1, 2) @ fc
        gram = gram + f.shape[1] * lam * torch.eye(f.shape[2], dtype=f.dtype, device=f.device)
        w = torch.linalg.solve(gram, fc.transpose(1, 2) @ yc)
    else:
        w = torch.linalg.pinv(fc) @ yc
    return w, y_mean - f_mean @ w


def _logistic_objective(f: torch.Tensor, onehot: torch.Tensor, lam: float) -> tuple[Objective, Callable[
        [torch.Tensor], torch.Tensor], Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]]:
    """The module docstring's problem in well-conditioned coordinates, for L-BFGS.

    Raw features are often far from centred and of very different scales (ReLU activations), which makes
    L-BFGS crawl. With mu = mean(F) (1, d) and D = diag(std(F)) (each feature's scale floored at 1 % of the RMS scale),
    the exact change of variables W' = D W, b' = b + mu W gives z = F W + b = ((F - mu) D^-1) W' + b' and
    the penalty (lambda/2) ||D^-1 W'||^2: the same problem, the same minimiser, better conditioned.

    Returns:
        objective: theta' (I, d c + c) -> (value (I,), gradient in theta').
        original_gradient: gradient in theta' -> gradient in the original (W, b): dW = D dW' + mu^T db', db = db'.
        to_original: theta' -> (W (I, d, c), b (I, 1, c)).
    """
    I, n, d = f.shape
    c = onehot.shape[2]
    mu = f.mean(1, keepdim=True)
    spread = f.std(1, keepdim=True)
    # a near-constant feature would turn the penalty ill-conditioned instead: floor its scale
    floor = 1e-2 * spread.pow(2).mean(-1, keepdim=True).sqrt()
    scale = torch.where(spread > floor, spread, torch.where(floor > 0, floor, torch.ones_like(floor)))
    fs = (f - mu) / scale
    inv_scale2 = scale.transpose(1, 2).pow(-2)  # (I, d, 1)
    # logits as (I, c, n), classes on the middle axis: torch's CPU softmax and logsumexp over a last axis of
    # a few classes cost 4-13x more per element than over a middle one (48 x 300 x 2 logits), and every
    # matmul stays contiguous
    fs_t, onehot_t = fs.transpose(1, 2).contiguous(), onehot.transpose(1, 2).contiguous()

    def split(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return theta[:, : d * c].reshape(I, d, c), theta[:, d * c :].reshape(I, 1, c)

    def objective(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = split(theta)
        z = torch.baddbmm(b.transpose(1, 2), w.transpose(1, 2).contiguous(), fs_t)  # (I, c, n)
        penalty = 0.5 * lam * (w.pow(2) * inv_scale2).sum((1, 2))
        value = (torch.logsumexp(z, 1) - (z * onehot_t).sum(1)).mean(-1) + penalty
        g = (torch.softmax(z, 1) - onehot_t) / n
        grad_w = torch.bmm(g, fs).transpose(1, 2) + lam * w * inv_scale2
        return value, torch.cat([grad_w.flatten(1), g.sum(2)], 1)

    def original_gradient(grad: torch.Tensor) -> torch.Tensor:
        gw, gb = split(grad)
        return torch.cat([(gw * scale.transpose(1, 2) + mu.transpose(1, 2) @ gb).flatten(1), gb.flatten(1)], 1)

    def to_original(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = split(theta)
        w = w / scale.transpose(1, 2)
        return w, b - mu @ w

    return objective, original_gradient, to_original


def _two_loop(g: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
              gamma: torch.Tensor) -> torch.Tensor:
    """L-BFGS inverse-Hessian product H g per instance (pairs (s, y, rho); rho = 0 marks a skipped pair)."""
    q = g.clone()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * (s * q).sum(-1)
        q -= a[:, None] * y
        alphas.append(a)
    r = gamma[:, None] * q
    for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
        r += (a - rho * (y * r).sum(-1))[:, None] * s
    return r


def _lbfgs(objective: Objective, theta: torch.Tensor, tol: float, max_iter: int,
           measure: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Minimise every instance's objective from ``theta`` (I, P): (theta, max |measure(gradient)| (I,), iterations).

    Each instance has its own curvature pairs, step length and stopping: instance i stops when
    max |measure(g_i)| <= tol (``measure`` maps the gradient to the coordinates the tolerance is stated
    in), or when its backtracking fails (then it keeps its last point, not converged).
    """
    f, g = objective(theta)
    eps = torch.finfo(theta.dtype).eps
    pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    gamma = torch.ones_like(f)
    active = measure(g).abs().amax(-1) > tol
    iterations = 0
    while bool(active.any()) and iterations < max_iter:
        iterations += 1
        d = -_two_loop(g, pairs, gamma)
        slope = (g * d).sum(-1)
        uphill = slope >= 0
        d = torch.where(uphill[:, None], -g, d) * active[:, None]
        slope = (g * d).sum(-1)
        t = torch.ones_like(f)
        slack = _ROUNDING_SLACK * eps * f.abs().clamp_min(1.0)
        for _ in range(_MAX_HALVINGS):
            f_new, g_new = objective(theta + t[:, None] * d)
            ok = f_new <= f + _ARMIJO * t * slope + slack
            if bool(ok.all()):
                break
            t = torch.where(ok, t, t / 2)
        failed = ~ok
        active &= ~failed
        t = torch.where(failed, 0.0, t)
        f_new, g_new = torch.where(failed, f, f_new), torch.where(failed[:, None], g, g_new)
        s = t[:, None] * d
        y = g_new - g
        sy = (s * y).sum(-1)
        yy = (y * y).sum(-1)
        valid = sy > eps * yy
        pairs.append((s, y, torch.where(valid, 1.0 / torch.where(valid, sy, 1.0), 0.0)))
        pairs = pairs[-_HISTORY:]
        gamma = torch.where(valid, sy / torch.where(valid, yy, 1.0), gamma)
        theta, f, g = theta + s, f_new, g_new
        active &= measure(g).abs().amax(-1) > tol
    return theta, measure(g).abs().amax(-1), iterations


def linear_probe(
    features: torch.Tensor,
    y: torch.Tensor,
    *,
    n_classes: int | None,
    l2: float,
    tol: float = 1e-7,
    max_iter: int = 5000,
) -> LinearProbe:
    """Fit a linear probe per instance on frozen features (see the module docstring for the objectives).

    Args:
        features: (n, d) shared or (I, n, d) per instance; any float dtype (computed in float64).
        y: classification (``n_classes`` given): integer labels (n,) or (I, n) in 0..n_classes-1;
            regression (``n_classes=None``): float targets (n,), (n, c) or (I, n, c).
        n_classes: number of classes c (>= 2), or None for ridge regression.
        l2: lambda >= 0 (ridge) or > 0 (logistic; without it separable data has no minimiser).
        tol: logistic only: stop when max |gradient| <= tol.
        max_iter: logistic only: most L-BFGS iterations.

    Returns:
        A :class:`LinearProbe` (weights (I, d, c), bias (I, 1, c)).

    Raises:
        ConfigError: bad l2, tol, max_iter or n_classes.
        DataError: features or targets with the wrong shape, dtype, non-finite values or labels out of range.
    """
    l2 = check_real(l2, "l2", low=0.0)
    if not isinstance(y, torch.Tensor):
        raise DataError(f"y must be a torch.Tensor, got {type(y).__name__}")
    per_instance_y = y.ndim == (2 if n_classes is not None else 3)
    shared_features = isinstance(features, torch.Tensor) and features.ndim == 2
    f = _as_features(features, y.shape[0] if shared_features and per_instance_y else None)
    I, n, d = f.shape
    if n_classes is None:
        if not y.is_floating_point():
            raise DataError(f"regression targets must be floating point, got {y.dtype}")
        target = y.unsqueeze(-1) if y.ndim == 1 else y
        if target.ndim == 2:
            target = target.unsqueeze(0).expand(I, *target.shape)
        if target.ndim != 3 or tuple(target.shape[:2]) != (I, n):
            raise DataError(f"regression targets must have shape ({n},), ({n}, c) or ({I}, {n}, c), "
                            f"got {tuple(y.shape)}")
        if not bool(torch.isfinite(target).all()):
            raise DataError("regression targets contain non-finite values")
        target = target.double()
        w, b = _ridge(f, target, float(l2))
        residual = f @ w + b - target
        grad = torch.cat([(2 / n * f.transpose(1, 2) @ residual + 2 * l2 * w).flatten(1),
                          (2 / n * residual.sum(1))], 1)
        return LinearProbe(w, b, "ridge", float(l2), torch.ones(I, dtype=torch.bool, device=f.device),
                           grad.abs().amax(-1), 0)
    c = check_int(n_classes, "n_classes", low=2)
    if l2 <= 0:
        raise ConfigError("the logistic probe needs l2 > 0 (separable classes have no minimiser without it)")
    tol = check_real(tol, "tol", low=0.0, low_open=True)
    check_int(max_iter, "max_iter", low=1)
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DataError(f"class labels must be integers, got {y.dtype}")
    if tuple(y.shape) not in ((n,), (I, n)):
        raise DataError(f"class labels must have shape ({n},) or ({I}, {n}), got {tuple(y.shape)}")
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= c:
        raise DataError(f"class labels must lie in 0..{c - 1} (n_classes = {c}), got labels in {low}..{high}")
    labels = y.to(f.device, torch.int64).expand(I, n)
    onehot = torch.nn.functional.one_hot(labels, c).double()
    theta0 = torch.zeros(I, d * c + c, dtype=torch.float64, device=f.device)
    objective, original_gradient, to_original = _logistic_objective(f, onehot, float(l2))
    theta, grad_norm, iterations = _lbfgs(objective, theta0, float(tol), max_iter, original_gradient)
    w, b = to_original(theta)
    return LinearProbe(w, b - b.mean(-1, keepdim=True), "logistic", float(l2), grad_norm <= tol, grad_norm,
                       iterations)
