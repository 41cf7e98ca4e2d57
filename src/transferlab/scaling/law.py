"""Algebra of the transfer scaling law (Hernandez, Kaplan, Henighan, McCandlish 2021).

The law (eq. 1.1) gives the *effective data transferred* by pretraining to a model of ``N``
non-embedding parameters fine-tuned on ``D_F`` target characters/tokens::

    D_T = k * D_F**alpha * N**beta

From it follow the effective-data multiplier (eq. 1.2), the fraction of effective data that comes
from transfer (eq. B.2), the critical model size ``N*`` of the fit-the-fits form (eq. C.1) and the
tentative unified loss (eq. 6.1), which substitutes ``D_F + D_T`` for the data size in Kaplan's
``L(N, D)``.

Every function is vectorised: array arguments broadcast against each other under the usual numpy
rules and the result has the broadcast shape; everything is computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from transferlab.errors import ConfigError, DataError

__all__ = [
    "KAPLAN_WEBTEXT2_JOINT",
    "TEXT_CODE_TO_PYTHON",
    "TEXT_TO_PYTHON",
    "KaplanLoss",
    "TransferLaw",
    "critical_model_size",
    "effective_data_size",
    "effective_data_multiplier",
    "fraction_from_transfer",
    "transferred_data",
    "unified_transfer_loss",
]

Array = NDArray[np.float64]


def _positive(name: str, value: ArrayLike) -> Array:
    """``value`` as float64, checked finite and > 0 (DataError naming ``name`` otherwise)."""
    arr = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name} must be finite; got {arr[~np.isfinite(arr)].ravel()[:3].tolist()}")
    if np.any(arr <= 0):
        raise DataError(f"{name} must be > 0; got {arr[arr <= 0].ravel()[:3].tolist()}")
    return arr


@dataclass(frozen=True)
class TransferLaw:
    """Parameters of ``D_T = k * D_F**alpha * N**beta`` (eq. 1.1).

    Attributes:
        k: prefactor (> 0); larger k means more transfer in the low-data regime.
        alpha: exponent of the fine-tuning data size; the smaller, the closer the distributions.
        beta: exponent of the model size; thought to depend only on architecture and target.
    """

    k: float
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.k) and self.k > 0):
            raise ConfigError(f"k must be finite and > 0; got {self.k}")
        if not (np.isfinite(self.alpha) and np.isfinite(self.beta)):
            raise ConfigError(f"alpha and beta must be finite; got {self.alpha}, {self.beta}")

    @property
    def log10_k(self) -> float:
        return float(np.log10(self.k))

    def transferred_data(self, d_f: ArrayLike, n: ArrayLike) -> Array:
        """``D_T(D_F, N)``; see :func:`transferred_data`."""
        return transferred_data(d_f, n, self)

    def fraction_from_transfer(self, d_f: ArrayLike, n: ArrayLike) -> Array:
        """``D_T / (D_F + D_T)``; see :func:`fraction_from_transfer`."""
        return fraction_from_transfer(d_f, n, self)


# Hernandez et al. (2021), Table 1; the same beta for both pretraining mixes.
TEXT_TO_PYTHON = TransferLaw(k=1.9e4, alpha=0.18, beta=0.38)
TEXT_CODE_TO_PYTHON = TransferLaw(k=2.1e5, alpha=0.096, beta=0.38)


def transferred_data(d_f: ArrayLike, n: ArrayLike, law: TransferLaw) -> Array:
    """Effective data transferred, eq. 1.1: ``D_T = k * D_F**alpha * N**beta``.

    Args:
        d_f: fine-tuning data sizes (> 0), any shape.
        n: non-embedding model sizes (> 0), broadcastable with ``d_f``.
        law: the law's parameters.

    Returns:
        ``D_T`` with the broadcast shape of ``d_f`` and ``n`` (float64).
    """
    d_f = _positive("fine-tuning data size D_F", d_f)
    n = _positive("model size N", n)
    return np.exp(np.log(law.k) + law.alpha * np.log(d_f) + law.beta * np.log(n))


def effective_data_size(d_f: ArrayLike, n: ArrayLike, law: TransferLaw) -> Array:
    """Effective data ``D_E = D_F + D_T`` (the from-scratch data worth the fine-tuned model)."""
    return np.asarray(d_f, dtype=np.float64) + transferred_data(d_f, n, law)


def effective_data_multiplier(d_f: ArrayLike, n: ArrayLike, law: TransferLaw) -> Array:
    """Effective-data multiplier, eq. 1.2: ``(D_F + D_T) / D_F = 1 + k * N**beta / D_F**(1 - alpha)``.

    The paper quotes the low-data approximation ``D_T / D_F``; this returns the exact ratio, which
    exceeds it by exactly 1. Shapes broadcast as in :func:`transferred_data`.
    """
    d_f = _positive("fine-tuning data size D_F", d_f)
    return 1.0 + transferred_data(d_f, n, law) / d_f


def fraction_from_transfer(d_f: ArrayLike, n: ArrayLike, law: TransferLaw) -> Array:
    """Fraction of effective data that comes from transfer, eq. B.2::

        D_T / (D_F + D_T) = k D_F**(alpha-1) N**beta / (1 + k D_F**(alpha-1) N**beta)
                          = expit(log D_T - log D_F)

    (computed as the logistic function of ``log(D_T / D_F)``, stable for very large or small ratios).
    Shapes broadcast as in :func:`transferred_data`; values lie in (0, 1).
    """
    d_f = _positive("fine-tuning data size D_F", d_f)
    n = _positive("model size N", n)
    log_ratio = np.log(law.k) + (law.alpha - 1.0) * np.log(d_f) + law.beta * np.log(n)
    return expit(log_ratio)


def critical_model_size(d_f: ArrayLike, law: TransferLaw) -> Array:
    """Critical model size of the fit-the-fits form, eq. C.1.

    With ``N* = (D_F**(1-alpha) / k)**(1/beta)`` the fraction from transfer is the logistic curve
    ``D_T / (D_F + D_T) = 1 / (1 + (N*/N)**beta)``, so ``N*`` is the model size at which half of the
    effective data is transferred. ``log N*`` is linear in ``log D_F`` with slope ``(1-alpha)/beta``
    and intercept ``-log(k)/beta``. Requires ``beta != 0``. Returns the shape of ``d_f``.
    """
    if law.beta == 0:
        raise ConfigError("critical model size N* is undefined for beta = 0")
    d_f = _positive("fine-tuning data size D_F", d_f)
    return np.exp(((1.0 - law.alpha) * np.log(d_f) - np.log(law.k)) / law.beta)


@dataclass(frozen=True)
class KaplanLoss:
    """Kaplan et al. (2020) data- and size-limited loss ``L(N, D) = [(N_c/N)**(a_N/a_D) + D_c/D]**a_D``.

    Attributes:
        alpha_n: model-size exponent ``a_N`` (> 0).
        alpha_d: data exponent ``a_D`` (> 0).
        n_c: model-size scale ``N_c`` (> 0).
        d_c: data scale ``D_c`` (> 0, same unit as D).
    """

    alpha_n: float
    alpha_d: float
    n_c: float
    d_c: float

    def __post_init__(self) -> None:
        for name in ("alpha_n", "alpha_d", "n_c", "d_c"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ConfigError(f"KaplanLoss.{name} must be finite and > 0; got {value}")

    def loss(self, n: ArrayLike, d: ArrayLike) -> Array:
        """``L(N, D)`` for broadcastable ``n`` and ``d`` (> 0); returns the broadcast shape."""
        n = _positive("model size N", n)
        d = _positive("data size D", d)
        log_size = (self.alpha_n / self.alpha_d) * (np.log(self.n_c) - np.log(n))
        log_data = np.log(self.d_c) - np.log(d)
        return np.exp(self.alpha_d * np.logaddexp(log_size, log_data))

    def infinite_data_loss(self, n: ArrayLike) -> Array:
        """``L(N, inf) = (N_c / N)**a_N``; shape of ``n``."""
        n = _positive("model size N", n)
        return np.exp(self.alpha_n * (np.log(self.n_c) - np.log(n)))

    def data_for_fraction(self, n: ArrayLike, fraction: float = 0.99) -> Array:
        """``D(N)``: the data size at which ``L(N, D) = L(N, inf) / fraction`` (closed form)::

            D(N) = D_c / [ (N_c/N)**(a_N/a_D) * (fraction**(-1/a_D) - 1) ]

        i.e. the model reaches ``fraction`` of its infinite-data performance. Shape of ``n``.
        """
        if not 0 < fraction < 1:
            raise ConfigError(f"fraction must lie in (0, 1); got {fraction}")
        n = _positive("model size N", n)
        log_size = (self.alpha_n / self.alpha_d) * (np.log(self.n_c) - np.log(n))
        return self.d_c / (np.exp(log_size) * np.expm1(-np.log(fraction) / self.alpha_d))


# Kaplan et al. (2020) joint L(N, D) fit on WebText2 (data in tokens), as used in eq. 6.1 of
# Hernandez et al. (2021).
KAPLAN_WEBTEXT2_JOINT = KaplanLoss(alpha_n=0.076, alpha_d=0.103, n_c=6.4e13, d_c=1.8e13)


def unified_transfer_loss(n: ArrayLike, d_f: ArrayLike, law: TransferLaw, kaplan: KaplanLoss) -> Array:
    """Tentative unified law, eq. 6.1: the fine-tuned loss ``L(N, D_F + D_T(D_F, N))``.

    Kaplan's ``L(N, D)`` with the data size replaced by the effective data ``D_E = D_F + D_T``.
    ``n`` and ``d_f`` broadcast; returns the broadcast shape.
    """
    return kaplan.loss(n, effective_data_size(d_f, n, law))
