"""Batched deep linear networks (Tahir, Ganguli & Rotskoff 2024, Sec. 3; the authors' ``model.py``).

f(x) = x^T W_1 W_2 ... W_L with W_l in R^{d x d} for l < L and W_L in R^{d x 1}; the width equals
the input dimension d. A :class:`DeepLinear` holds ``instances`` independent networks stacked along a
leading axis: hidden weights have shape (instances, d, d), the last layer (instances, d, 1).

Initialisation with scale alpha (``init_scale``):

- ``"random"`` (the authors' ``rand``): W_l = alpha G_l / sqrt(d) for l < L, W_L = alpha g,
  G_l, g standard normal; one draw shared by all instances (the authors tile one init).
- ``"identity"``: W_l = alpha I_d for l < L, W_L = alpha 1_d / sqrt(d); deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from transferlab._checks import check_int, check_real
from transferlab.errors import ConfigError, DataError
from transferlab.tasks import RandomSource, standard_normal

__all__ = ["DeepLinear", "InitKind"]

InitKind = Literal["random", "identity"]


class DeepLinear(nn.Module):
    """``instances`` deep linear networks of depth ``layers`` and width ``d``, stacked.

    Args:
        d: input dimension and width.
        layers: depth L >= 1 (L = 1 is linear regression).
        instances: size of the leading instances axis; all instances start from the same init.
        init_scale: alpha > 0.
        init: ``"random"`` (needs ``generator``) or ``"identity"``; see the module docstring.
        generator: source of the random init (consumed: L - 1 matrices (d, d), then one (d,) vector).
        dtype: torch.float32 or torch.float64.

    Attributes:
        weights: ``nn.ParameterList`` [W_1, ..., W_L], shapes (instances, d, d) ... (instances, d, 1).
    """

    def __init__(
        self,
        d: int,
        layers: int,
        instances: int = 1,
        *,
        init_scale: float = 1e-3,
        init: InitKind = "random",
        generator: RandomSource | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        for name, value in (("d", d), ("layers", layers), ("instances", instances)):
            check_int(value, name, low=1)
        check_real(init_scale, "init_scale", low=0.0, low_open=True)
        if dtype not in (torch.float32, torch.float64):
            raise ConfigError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if init == "random":
            if generator is None:
                raise ConfigError("init='random' needs a generator (transferlab never uses global RNG)")
            hidden = [init_scale * standard_normal((d, d), generator) / math.sqrt(d) for _ in range(layers - 1)]
            last = init_scale * standard_normal((d, 1), generator)
        elif init == "identity":
            hidden = [init_scale * torch.eye(d, dtype=torch.float64) for _ in range(layers - 1)]
            last = torch.full((d, 1), init_scale / math.sqrt(d), dtype=torch.float64)
        else:
            raise ConfigError(f"init must be 'random' or 'identity', got {init!r}")
        self.weights = nn.ParameterList(
            nn.Parameter(w.to(dtype).expand(instances, *w.shape).clone()) for w in (*hidden, last)
        )

    @classmethod
    def from_weights(cls, weights: Sequence[torch.Tensor]) -> DeepLinear:
        """A network holding copies of ``weights`` = [W_1 (I, d, d), ..., W_L (I, d, 1)].

        Raises:
            DataError: the shapes, dtypes or devices do not form a deep linear network.
        """
        if len(weights) == 0:
            raise DataError("weights must hold at least one layer")
        last = weights[-1]
        if last.ndim != 3 or last.shape[-1] != 1:
            raise DataError(f"the last layer must have shape (instances, d, 1), got {tuple(last.shape)}")
        instances, d = last.shape[0], last.shape[1]
        for w in weights[:-1]:
            if tuple(w.shape) != (instances, d, d):
                raise DataError(f"hidden layers must have shape {(instances, d, d)}, got {tuple(w.shape)}")
        if len({w.dtype for w in weights}) != 1 or last.dtype not in (torch.float32, torch.float64):
            raise DataError("all layers must share one floating dtype (float32 or float64)")
        net = cls.__new__(cls)
        nn.Module.__init__(net)
        net.weights = nn.ParameterList(nn.Parameter(w.detach().clone()) for w in weights)
        return net

    @property
    def d(self) -> int:
        """Input dimension and width."""
        return self.weights[-1].shape[1]

    @property
    def layers(self) -> int:
        """Depth L."""
        return len(self.weights)

    @property
    def instances(self) -> int:
        """Size of the leading instances axis."""
        return self.weights[-1].shape[0]

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the weights."""
        return self.weights[-1].dtype

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Outputs f(X) = X W_1 ... W_L, X of shape (instances, n, d) -> (instances, n).

        This is the plain layer-by-layer forward pass (O(n d^2) per hidden layer), the one autograd
        differentiates in the reference trainer.
        """
        if X.ndim != 3 or X.shape[0] != self.instances or X.shape[2] != self.d:
            raise DataError(f"X must have shape ({self.instances}, n, {self.d}), got {tuple(X.shape)}")
        h = X
        for w in self.weights:
            h = torch.bmm(h, w)
        return h[..., 0]

    def hidden_features(self) -> torch.Tensor:
        """The feature map H = W_1 ... W_{L-1}, shape (instances, d, d) (identity when L = 1)."""
        w = self.weights
        if len(w) == 1:
            eye = torch.eye(self.d, dtype=self.dtype, device=w[0].device)
            return eye.expand(self.instances, self.d, self.d).clone()
        h = w[0]
        for layer in w[1:-1]:
            h = torch.bmm(h, layer)
        return h

    def end_to_end(self) -> torch.Tensor:
        """The end-to-end predictor beta_hat = W_1 ... W_L, shape (instances, d).

        Computed right to left as L - 1 matrix-vector products (O(L d^2) per instance).
        """
        v = self.weights[-1][..., 0]
        for w in reversed(self.weights[:-1]):
            v = torch.bmm(w, v[..., None])[..., 0]
        return v

    def repeat_instances(self, repeats: int) -> DeepLinear:
        """A new network where each instance is repeated ``repeats`` times consecutively.

        Instance i of ``self`` becomes instances i * repeats ... (i + 1) * repeats - 1.
        """
        repeats = check_int(repeats, "repeats", low=1)
        return DeepLinear.from_weights([w.detach().repeat_interleave(repeats, dim=0) for w in self.weights])
