"""The two-layer convolutional ReLU network over patches of Hong et al. (2024), batched over instances.

For an input X = (x_1, ..., x_P), x_p in R^d (the patches of a multi-view sample,
:mod:`transferlab.tasks.multiview`), and K output classes with m neurons each,

    F_c(X) = sum_{r in [m]} sum_{p in [P]} ReLU(<w_{c,r}, x_p> + b),        c in [K],

a convolution with kernel and stride one patch (the same w_{c,r} on every patch), a ReLU, a sum over
the patches, and a second layer fixed at a_{c,r} = 1 (class c sums its own m neurons). Only the first
layer trains. On the :class:`~transferlab.nets.blocks.BlockNet` interface it is one block and a head:

    block 1   :class:`PatchReLU`   (I, n, P, d) -> (I, n, K m):  h_{c,r}(X) = sum_p ReLU(<w_{c,r}, x_p> + b)
    head      :class:`ClassSum`    (I, n, K m)  -> (I, n, K):    F_c = sum_r h_{c,r}   (no parameters)

so ``features(x, 1)`` are the patch-pooled neuron activations h (neuron index c m + r), on which a
downstream task puts a new linear head (the transfer protocols of :mod:`transferlab.protocols.transfer`:
the linear probe on frozen h, or fine-tuning W with the new head).

What is the paper's and what is ours. The architecture -- patch convolution, ReLU, sum over patches,
second layer fixed to one, m neurons per output class, only the first layer trained, SGD on
cross-entropy -- is Hong et al.'s (after Allen-Zhu & Li 2023). The initialisation w ~ N(0, sigma_0^2 I_d)
with ``init_scale`` sigma_0, and the bias b as one fixed number shared by every neuron (``bias``, not
trained; a negative b is an activation threshold), are transferlab's choices: the paper's exact bias
and initialisation scalings were not recovered.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from transferlab._checks import check_int, check_real
from transferlab.errors import ConfigError
from transferlab.nets.blocks import BlockNet

__all__ = ["ClassSum", "PatchReLU", "neuron_feature_cosines", "patch_cnn"]


class PatchReLU(nn.Module):
    """``I`` independent patch convolutions with ReLU and a sum over patches.

    Parameters: ``weight`` (I, d, N), column j of instance i is neuron j's w. Buffer: ``bias``, the fixed
    b of every neuron, shape (I, 1, 1) (one value, stored per instance so that networks stack along the
    instances axis, :func:`~transferlab.nets.blocks.stack_instances`). Input (I, n, P, d) -> output (I, n, N):

        h_{i,s,j} = sum_p ReLU(<W_i[:, j], x_{i,s,p}> + b).

    Initialisation: every entry of W i.i.d. N(0, ``init_scale``^2), drawn instance by instance from the
    generator (float64 normals, cast), so ||w|| is about init_scale sqrt(d).
    """

    def __init__(
        self,
        instances: int,
        d: int,
        neurons: int,
        *,
        init_scale: float,
        bias: float = 0.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.instances = check_int(instances, "instances", low=1)
        self.d = check_int(d, "d", low=1)
        self.neurons = check_int(neurons, "neurons", low=1)
        self.init_scale = check_real(init_scale, "init_scale", low=0.0, low_open=True)
        self.weight = nn.Parameter(torch.empty(instances, d, neurons, dtype=dtype))
        self.register_buffer("bias", torch.full((instances, 1, 1), check_real(bias, "bias"), dtype=dtype))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None) -> None:
        """Redraw every instance's W from ``generator`` (required: no global RNG); b stays fixed."""
        if generator is None:
            raise ConfigError("PatchReLU needs a torch.Generator to draw its weights")
        with torch.no_grad():
            draw = torch.randn(self.weight.shape, generator=generator, dtype=torch.float64)
            self.weight.copy_(draw * self.init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        I, n, P, d = x.shape
        z = torch.bmm(x.reshape(I, n * P, d), self.weight)  # (I, n P, N)
        return torch.relu(z + self.bias).view(I, n, P, self.neurons).sum(2)

    def extra_repr(self) -> str:
        return (f"instances={self.instances}, d={self.d}, neurons={self.neurons}, "
                f"init_scale={self.init_scale:g}, bias={float(self.bias[0]):g}")


class ClassSum(nn.Module):
    """The fixed second layer a_{c,r} = 1: (I, n, K m) -> (I, n, K), F_c = sum_{r < m} h_{c m + r}."""

    def __init__(self, classes: int, per_class: int) -> None:
        super().__init__()
        self.classes = check_int(classes, "classes", low=1)
        self.per_class = check_int(per_class, "per_class", low=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.unflatten(-1, (self.classes, self.per_class)).sum(-1)

    def extra_repr(self) -> str:
        return f"classes={self.classes}, per_class={self.per_class}"


def patch_cnn(
    patches: int,
    d: int,
    classes: int,
    width: int,
    *,
    instances: int = 1,
    init_scale: float | None = None,
    bias: float = 0.0,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> BlockNet:
    """``instances`` patch networks F_c(X) = sum_r sum_p ReLU(<w_{c,r}, x_p> + b) (module docstring).

    Args:
        patches: P, patches per input (input shape (P, d)).
        d: patch dimension.
        classes: K output classes (e.g. C superclasses for coarse, C k subclasses for fine pretraining).
        width: m neurons per class (N = K m neurons in all; neuron c m + r belongs to class c).
        instances: I independent copies, drawn one after the other from ``generator``.
        init_scale: sigma_0, the standard deviation of every initial weight (default 1/d, so that
            ||w|| is about 1/sqrt(d) at initialisation: small against the unit-norm features).
        bias: the fixed b of every neuron (not trained).
        generator: the source of the initial weights.
        dtype: parameter dtype.

    Returns:
        A :class:`BlockNet` with input shape (P, d), one block (:class:`PatchReLU`, features (K m,)) and
        the fixed :class:`ClassSum` head (K outputs).
    """
    P = check_int(patches, "patches", low=1)
    d = check_int(d, "d", low=1)
    K = check_int(classes, "classes", low=1)
    m = check_int(width, "width", low=1)
    scale = 1.0 / d if init_scale is None else init_scale
    block = PatchReLU(instances, d, K * m, init_scale=scale, bias=bias, generator=generator, dtype=dtype)
    return BlockNet([block], ClassSum(K, m), input_shape=(P, d), instances=instances, block_names=("patch_relu",))


def neuron_feature_cosines(net: BlockNet, features: torch.Tensor) -> torch.Tensor:
    """cos(w_j, v) = <w_j, v> / ||w_j|| for every neuron j of block 1 and every unit feature v.

    Args:
        net: a :func:`patch_cnn` network (its first block a :class:`PatchReLU`).
        features: (M, d) unit-norm feature vectors (e.g. a multi-view dictionary).

    Returns:
        float64 (I, N, M). With ||v|| = 1 this is the cosine of the angle between w_j and v.
    """
    block = net.blocks[0]
    if not isinstance(block, PatchReLU):
        raise ConfigError(f"neuron_feature_cosines needs a patch_cnn network, got first block {type(block).__name__}")
    W = block.weight.detach().double()  # (I, d, N)
    V = features.detach().double().to(W.device)
    if V.ndim != 2 or V.shape[1] != W.shape[1]:
        raise ConfigError(f"features must have shape (M, {W.shape[1]}), got {tuple(V.shape)}")
    dots = torch.einsum("idn,md->inm", W, V)
    norms = W.norm(dim=1).clamp_min(math.ulp(1.0))  # (I, N); a zero weight has cosine 0, not NaN
    return dots / norms[..., None]
