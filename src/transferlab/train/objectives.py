"""Least-squares objectives of the end-to-end predictor of a deep linear network, in spectral form.

Every objective here is a quadratic L(beta) of beta = W_1 ... W_L in R^d, one per instance, written
in an orthonormal basis Q (r x d, rows) of the directions the loss sees, where it is diagonal:

    L(beta) = min L + sum_k lambda_k (q_k^T beta - b*_k)^2.

- population (source pretraining, infinite data): L = ||beta - beta*||^2; Q = I (r = d),
  lambda = 1, b* = beta*, min L = 0.
- empirical MSE L = (1/n) ||X beta - y||^2 with the thin SVD X = U S V^T: Q = V^T (r = min(n, d),
  the row space of X), lambda = S^2 / n (eigenvalues of A = X^T X / n), b* = U^T y / S (the
  coordinates of the minimum-norm solution X^+ y), min L = ||y - U U^T y||^2 / n.

Directions outside row(X) (the d - r null-space directions when n < d) carry no loss and no
gradient. The trainer uses this to run GD in r-dimensional coordinates ("row-space work", O(n d)
instead of O(d^2) per step when n < d), and the form gives the excess loss L - min L without the
cancellation of subtracting two nearly equal numbers (safe in float32).

Shapes: X (instances, n, d), y (instances, n), beta (instances, d), coordinates (instances, r).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from transferlab.errors import DataError

__all__ = ["LeastSquaresObjective"]


def _bvm(vectors: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Batched vector-matrix product v^T M = M^T v: (I, a) x (I, a, b) -> (I, b).

    Written as a (1 x a) @ (a x b) bmm, which torch's CPU kernels run ~5x faster than the
    equivalent (b x a) @ (a x 1) bmm at a, b ~ 100; use ``_bvm(v, M.mT)`` for M v.
    """
    return torch.bmm(vectors[:, None, :], matrices)[:, 0, :]


@dataclass(frozen=True, eq=False)
class LeastSquaresObjective:
    """A batch of least-squares objectives of the end-to-end predictor (see the module docstring).

    Build with :meth:`population` or :meth:`empirical`.

    Attributes:
        minimum: min L per instance, shape (instances,), float64.
        eigenvalues: lambda, shape (instances, r), in the working dtype.
        target: b*, the minimiser's coordinates in the basis, shape (instances, r).
        basis: Q with orthonormal rows, shape (instances, r, d); None means the identity (population).
        X, y: the data of an empirical objective (None for population), kept for :meth:`loss`.
    """

    minimum: torch.Tensor
    eigenvalues: torch.Tensor
    target: torch.Tensor
    basis: torch.Tensor | None = None
    X: torch.Tensor | None = None
    y: torch.Tensor | None = None

    @classmethod
    def population(cls, beta_star: torch.Tensor) -> LeastSquaresObjective:
        """Population loss L(beta) = ||beta - beta*||^2 for targets ``beta_star`` (instances, d)."""
        if beta_star.ndim != 2 or not bool(torch.isfinite(beta_star).all()):
            raise DataError(f"beta_star must be a finite (instances, d) tensor, got shape {tuple(beta_star.shape)}")
        return cls(
            minimum=torch.zeros(beta_star.shape[0], dtype=torch.float64, device=beta_star.device),
            eigenvalues=torch.ones_like(beta_star),
            target=beta_star,
        )

    @classmethod
    def empirical(cls, X: torch.Tensor, y: torch.Tensor) -> LeastSquaresObjective:
        """Empirical MSE L(beta) = (1/n) ||X beta - y||^2 per instance.

        Args:
            X: inputs, shape (instances, n, d).
            y: labels, shape (instances, n), same dtype as X.

        The SVD is computed once in float64; singular values below d * eps * max S count as zero
        (their directions get lambda = 0, b* = 0, as in the pseudo-inverse).

        Raises:
            DataError: shapes or dtypes disagree, or the data are not finite.
        """
        if X.ndim != 3 or y.ndim != 2 or X.shape[:2] != y.shape:
            raise DataError(f"X must be (instances, n, d) and y (instances, n); got {tuple(X.shape)}, {tuple(y.shape)}")
        if X.dtype != y.dtype or X.dtype not in (torch.float32, torch.float64):
            raise DataError("X and y must share one floating dtype (float32 or float64)")
        if not (bool(torch.isfinite(X).all()) and bool(torch.isfinite(y).all())):
            raise DataError("X and y must be finite")
        n, d = X.shape[1], X.shape[2]
        U, S, Vh = torch.linalg.svd(X.to(torch.float64), full_matrices=False)
        uy = (y.to(torch.float64)[:, None, :] @ U)[:, 0, :]
        residual = y.to(torch.float64) - (U @ uy[..., None])[..., 0]
        keep = S > max(n, d) * torch.finfo(torch.float64).eps * S[:, :1]
        target = torch.where(keep, uy / torch.where(keep, S, 1.0), 0.0)
        eigenvalues = torch.where(keep, S**2 / n, 0.0)
        return cls(
            minimum=(residual**2).sum(-1) / n,
            eigenvalues=eigenvalues.to(X.dtype),
            target=target.to(X.dtype),
            basis=Vh.to(X.dtype),
            X=X,
            y=y,
        )

    @property
    def instances(self) -> int:
        """Size of the leading instances axis."""
        return self.minimum.shape[0]

    @property
    def d(self) -> int:
        """Dimension of beta."""
        return self.target.shape[-1] if self.basis is None else self.basis.shape[-1]

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the per-step work."""
        return self.target.dtype

    @property
    def curvature(self) -> torch.Tensor:
        """lambda_max per instance, (instances,), float64; the Hessian of L in beta is 2 A."""
        return self.eigenvalues.max(-1).values.to(torch.float64)

    @property
    def smallest_curvature(self) -> torch.Tensor:
        """The smallest nonzero lambda per instance, (instances,), float64 (inf where every lambda is 0).

        Since L - min L = sum_k lambda_k delta_k^2 >= lambda_min ||delta||^2 with delta = Q beta - b*,
        an excess loss <= tol * lambda_min bounds the distance to the minimiser in the loss's
        directions: ||delta||^2 <= tol.
        """
        lam = self.eigenvalues.to(torch.float64)
        return torch.where(lam > 0, lam, torch.inf).min(-1).values

    def excess_and_gradient(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Excess L - min L, (instances,), and dL/dcoords = 2 lambda (coords - b*), (instances, r).

        ``coords`` = Q beta, shape (instances, r); the full gradient is dL/dbeta = Q^T dL/dcoords.
        """
        delta = coords - self.target
        weighted = self.eigenvalues * delta
        return (delta * weighted).sum(-1), weighted.mul_(2.0)

    def loss(self, beta: torch.Tensor, outputs: torch.Tensor | None = None) -> torch.Tensor:
        """The plain loss per instance, shape (instances,), differentiable by autograd.

        Population: ||beta - beta*||^2. Empirical: mean((outputs - y)^2) where ``outputs`` are the
        network outputs on X, shape (instances, n) (computed from beta when not given).
        """
        if self.basis is None:
            return ((beta - self.target) ** 2).sum(-1)
        if outputs is None:
            outputs = _bvm(beta, self.X.mT)
        return ((outputs - self.y) ** 2).mean(-1)
