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

Fused full-batch training (:func:`patch_gd`, :func:`patch_pool`). The module above trains through the
generic trainer (:func:`transferlab.train.loop.fit`, autograd). The same full-batch gradient descent is
also written out in closed form for many networks at once, and networks that share their inputs (the
label variants of one data set) run as one wider layer: G input sets, each shared by S networks of N
neurons, are one weight tensor (G, d, S N) and one batched matmul per pass. Its layout is patch-major
(activations (G, S N, P, n)), so the patch sum and the ReLU's gradient run over contiguous memory, and
it works through the G axis in chunks whose activations fit a core's L2 cache (``_CHUNK_BYTES``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from transferlab._checks import check_int, check_real
from transferlab.errors import ConfigError, DataError, TrainingDiverged
from transferlab.nets.blocks import BlockNet

__all__ = ["ClassSum", "PatchGD", "PatchReLU", "neuron_feature_cosines", "patch_cnn", "patch_gd", "patch_pool"]

#: Bytes of ReLU activations (networks x neurons x patches x samples) per chunk of :func:`patch_gd` and
#: :func:`patch_pool`, about one core's L2 cache. Measured on the 2-core development machine (float32,
#: 500 samples x 8 patches x d = 32): the activation matmul of 48 networks stacked in one call ran at
#: 24-28 GFLOP/s against 90-140 GFLOP/s for one network's in cache, and a whole step was 1.2-1.4x slower
#: per network than in chunks; chunks of 0.5-4 MiB were within the noise of each other.
_CHUNK_BYTES = 2**21


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


def neuron_feature_cosines(net: BlockNet | torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """cos(w_j, v) = <w_j, v> / ||w_j|| for every neuron j of block 1 and every unit feature v.

    Args:
        net: a :func:`patch_cnn` network (its first block a :class:`PatchReLU`), or first-layer weights
            (I, d, N) directly (column j = neuron j, the layout of :class:`PatchReLU` and :func:`patch_gd`).
        features: (M, d) unit-norm feature vectors (e.g. a multi-view dictionary) shared by every
            instance, or (I, M, d), one set per instance.

    Returns:
        float64 (I, N, M). With ||v|| = 1 this is the cosine of the angle between w_j and v.
    """
    if isinstance(net, torch.Tensor):
        weight = net
    else:
        block = net.blocks[0]
        if not isinstance(block, PatchReLU):
            raise ConfigError(f"neuron_feature_cosines needs a patch_cnn network, got first block "
                              f"{type(block).__name__}")
        weight = block.weight
    W = weight.detach().double()  # (I, d, N)
    if W.ndim != 3:
        raise ConfigError(f"weights must have shape (I, d, N), got {tuple(W.shape)}")
    V = features.detach().double().to(W.device)
    if V.shape[-1:] != W.shape[1:2] or V.ndim not in (2, 3) or (V.ndim == 3 and V.shape[0] != W.shape[0]):
        raise ConfigError(f"features must have shape (M, {W.shape[1]}) or ({W.shape[0]}, M, {W.shape[1]}), "
                          f"got {tuple(V.shape)}")
    dots = torch.einsum("idn,md->inm", W, V) if V.ndim == 2 else torch.einsum("idn,imd->inm", W, V)
    norms = W.norm(dim=1).clamp_min(math.ulp(1.0))  # (I, N); a zero weight has cosine 0, not NaN
    return dots / norms[..., None]


# --------------------------------------------------------------------------------------------------
# fused full-batch gradient descent (module docstring)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatchGD:
    """What :func:`patch_gd` returns (G input sets, S networks on each, N neurons per network).

    Attributes:
        weight: (G, d, S N), the trained first layers (network s: columns s N .. s N + N - 1).
        head: the trained linear heads (weight (G, S, N, C), bias (G, S, 1, C)), or None (class sums).
        losses: (steps, G, S) float64: L_{g,s} at step t = 0, ..., steps - 1, before that step's update.
        snapshots: {t: (G, d, S N)}, the first layers after t steps, for every t in ``record``.
        converged: (G, S) bool: |L(E) - L(E - 1)| <= 1e-2 L(E - 1) + 1e-4 over the last two steps
            (:func:`transferlab.train.loop.fit`'s rule without validation; False after one step).
    """

    weight: torch.Tensor
    head: tuple[torch.Tensor, torch.Tensor] | None
    losses: torch.Tensor
    snapshots: dict[int, torch.Tensor]
    converged: torch.Tensor


def _chunk(G: int, J: int, P: int, n: int, dtype: torch.dtype) -> int:
    """Input sets per chunk: as many as keep the chunk's activations within ``_CHUNK_BYTES``, at least 1."""
    return max(1, min(G, _CHUNK_BYTES // (J * P * n * torch.finfo(dtype).bits // 8)))


def _patch_major(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x (c, n, P, d) -> rows (c, P n, d) and columns (c, d, P n), row/column p n + i = patch p of sample i."""
    c, n, P, d = x.shape
    rows = x.to(dtype).transpose(1, 2).reshape(c, P * n, d)
    return rows, rows.transpose(1, 2).contiguous()


def _pool(wt: torch.Tensor, cols: torch.Tensor, bias: float, P: int) -> tuple[torch.Tensor, torch.Tensor]:
    """wt (c, J, d), cols (c, d, P n) -> a = ReLU(W^T x + b) (c, J, P, n) and h = sum_p a (c, J, n)."""
    c, J = wt.shape[:2]
    a = torch.bmm(wt, cols)
    a.add_(bias).relu_()
    a = a.view(c, J, P, -1)
    return a, a.sum(2)


def _check_inputs(weight: torch.Tensor, x: torch.Tensor, networks: int) -> tuple[int, int, int, int, int, int]:
    """(G, J, N, n, P, d) of weights (G, d, S N) on inputs (G, n, P, d)."""
    S = check_int(networks, "networks", low=1)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 3 or not weight.is_floating_point():
        raise ConfigError(f"weight must be a float tensor (G, d, S N), got {getattr(weight, 'shape', type(weight))}")
    G, d, J = weight.shape
    if J % S:
        raise ConfigError(f"weight has {J} neurons per input set, not a multiple of networks = {S}")
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] != G or x.shape[3] != d:
        raise DataError(f"x must have shape ({G}, n, P, {d}), got {tuple(getattr(x, 'shape', ()))}")
    if not bool(torch.isfinite(x).all()):
        raise DataError("x contains non-finite values")
    return G, J, J // S, x.shape[1], x.shape[2], d


def patch_pool(weight: torch.Tensor, x: torch.Tensor, *, bias: float) -> torch.Tensor:
    """Patch-pooled activations h_{g,i,j} = sum_p ReLU(<W_g[:, j], x_{g,i,p}> + b) of G weight matrices.

    Args:
        weight: (G, d, J), column j of W_g = neuron j (e.g. S networks' neurons side by side).
        x: (G, n, P, d), the inputs of set g (a stride-0 ``expand`` of one shared set costs no memory).
        bias: b, the fixed bias of every neuron.

    Returns:
        (G, n, J) in ``weight``'s dtype: the features of :class:`PatchReLU` (block 1 of :func:`patch_cnn`).
    """
    G, J, _, n, P, _ = _check_inputs(weight, x, 1)
    wt = weight.detach().transpose(1, 2).contiguous()
    step = _chunk(G, J, P, n, wt.dtype)
    out = torch.empty(G, J, n, dtype=wt.dtype, device=wt.device)
    with torch.no_grad():
        for g in range(0, G, step):
            _, cols = _patch_major(x[g : g + step], wt.dtype)
            out[g : g + step] = _pool(wt[g : g + step], cols, bias, P)[1]
    return out.transpose(1, 2)


def patch_gd(
    weight: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    networks: int,
    bias: float,
    lr: float,
    steps: int,
    classes: int | None = None,
    head: tuple[torch.Tensor, torch.Tensor] | None = None,
    record: Iterable[int] = (),
) -> PatchGD:
    """Full-batch gradient descent on the cross-entropy of many patch networks at once, in closed form.

    Input set g (n samples X_i = (x_{i,1}, ..., x_{i,P})) is shared by S networks; network s of set g
    has the neurons w_j, j in s N .. s N + N - 1 (columns of ``weight[g]``), and features
    h_j(X) = sum_p ReLU(<w_j, x_p> + b). Its outputs are either the class sums of :func:`patch_cnn`,
    out_c = sum_{r < m} h_{c m + r} (``classes`` K, m = N / K; only W trains), or a linear head
    out = h V + c (``head``; W, V and c train: full fine-tuning). With L_{g,s} = (1/n) sum_i
    CE(out(X_i), y_i), every step is

        delta_i = (softmax(out(X_i)) - e_{y_i}) / n,
        dL/dh_j(X_i) = delta_{i, c(j)} (class sums: j's class c(j) = j // m)   or   (V delta_i)_j (head),
        dL/dw_j = sum_i sum_p 1[<w_j, x_{i,p}> + b > 0] dL/dh_j(X_i) x_{i,p},
        dL/dV = sum_i h(X_i) delta_i^T,   dL/dc = sum_i delta_i,
        W <- W - lr dL/dW,   (V, c) <- (V, c) - lr (dL/dV, dL/dc),

    i.e. :func:`transferlab.train.loop.fit` with SGD, batch size n and no momentum on :func:`patch_cnn`
    (or on it with a new linear head: ``protocols.transfer.finetune``), up to float summation order
    (fit also permutes the samples every epoch, which reorders a sum). The ReLU's gradient is torch's own
    (``threshold_backward``, what autograd runs for ``relu``).

    Args:
        weight: (G, d, S N) initial first layers (not modified; the result holds the trained copy).
        x: (G, n, P, d) inputs of every set (cast to ``weight``'s dtype).
        y: int64 labels (G, S, n), or (G, n) shared by the S networks of a set.
        networks: S, networks per input set.
        bias: b, the fixed bias of every neuron (not trained).
        lr: step size (> 0).
        steps: gradient steps (>= 1).
        classes: K, for class-sum outputs (N must be a multiple of K); exactly one of classes, head.
        head: (V (G, S, N, C), c (G, S, 1, C)), the initial linear heads (not modified).
        record: step counts t in 0..steps after which to keep a copy of the first layers.

    Returns:
        A :class:`PatchGD`.

    Raises:
        ConfigError: inconsistent shapes or settings.
        DataError: non-finite inputs, or labels of the wrong shape or out of range.
        TrainingDiverged: a network's loss became non-finite or exceeded 1e4 (1 + its initial loss)
            (fit's test; checked once all steps of a chunk ran).
    """
    from transferlab.train.loop import _CONVERGED_ATOL, _CONVERGED_RTOL, _DIVERGENCE_FACTOR

    G, J, N, n, P, d = _check_inputs(weight, x, networks)
    S = J // N
    check_real(lr, "lr", low=0.0, low_open=True)
    steps = check_int(steps, "steps", low=1)
    record = sorted({check_int(t, "record step", low=0, high=steps) for t in record})
    if (classes is None) == (head is None):
        raise ConfigError("give exactly one of classes (class-sum outputs) and head (a linear head)")
    if head is None:
        K = check_int(classes, "classes", low=1)
        if N % K:
            raise ConfigError(f"{N} neurons per network are not a multiple of classes = {K}")
    else:
        V0, c0 = head
        K = V0.shape[-1]
        if tuple(V0.shape) != (G, S, N, K) or tuple(c0.shape) != (G, S, 1, K):
            raise ConfigError(f"head must be ((G, S, N, C), (G, S, 1, C)) = (({G}, {S}, {N}, C), ({G}, {S}, 1, C)), "
                              f"got {tuple(V0.shape)}, {tuple(c0.shape)}")
    if y.dtype != torch.int64 or tuple(y.shape) not in ((G, S, n), (G, n)):
        raise DataError(f"y must be int64 labels ({G}, {S}, {n}) or ({G}, {n}), got {y.dtype} {tuple(y.shape)}")
    if int(y.min()) < 0 or int(y.max()) >= K:
        raise DataError(f"labels must lie in 0..{K - 1}, got {int(y.min())}..{int(y.max())}")
    dtype = weight.dtype
    labels = (y if y.ndim == 3 else y[:, None].expand(G, S, n)).to(weight.device)
    copy = {"memory_format": torch.contiguous_format}  # always a copy: the caller's tensors stay as they are
    wt = weight.detach().transpose(1, 2).clone(**copy)  # (G, J, d): neuron j's w in row j
    if head is not None:  # per network (G S, C, N) and (G S, C, 1): transposed, so a step is two bmm
        vt = head[0].detach().to(dtype).reshape(G * S, N, K).transpose(1, 2).clone(**copy)
        cb = head[1].detach().to(dtype).reshape(G * S, 1, K).transpose(1, 2).clone(**copy)
    losses = torch.empty(steps, G, S, dtype=torch.float64, device=weight.device)
    kept: dict[int, list[torch.Tensor]] = {t: [] for t in record}
    threshold_backward = torch.ops.aten.threshold_backward
    step = _chunk(G, J, P, n, dtype)
    with torch.no_grad():
        for g0 in range(0, G, step):
            g1 = min(G, g0 + step)
            c = g1 - g0
            rows, cols = _patch_major(x[g0:g1], dtype)
            w = wt[g0:g1]
            index = labels[g0:g1].unsqueeze(2)  # (c, S, 1, n)
            onehot = torch.zeros(c, S, K, n, dtype=dtype, device=w.device).scatter_(2, index, 1.0)
            if head is not None:
                v, b = vt[g0 * S : g1 * S], cb[g0 * S : g1 * S]
            for t in range(steps + 1):
                if t in kept:
                    kept[t].append(w.clone())
                if t == steps:
                    break
                a, h = _pool(w, cols, bias, P)  # (c, J, P, n), (c, J, n)
                if head is None:
                    out = h.view(c, S, K, N // K, n).sum(3)  # (c, S, K, n)
                else:
                    hs = h.view(c * S, N, n)
                    out = torch.baddbmm(b, v, hs).view(c, S, K, n)
                logp = torch.log_softmax(out, 2)
                losses[t, g0:g1] = -logp.gather(2, index).squeeze(2).mean(2)
                delta = logp.exp_().sub_(onehot).div_(n)  # (c, S, K, n)
                if head is None:
                    dh = delta.unsqueeze(3).expand(c, S, K, N // K, n).reshape(c, J, 1, n)
                else:
                    ds = delta.view(c * S, K, n)
                    dh = torch.bmm(v.transpose(1, 2), ds).view(c, J, 1, n)
                    v.sub_(torch.bmm(ds, hs.transpose(1, 2)), alpha=lr)
                    b.sub_(ds.sum(2, keepdim=True), alpha=lr)
                dz = threshold_backward(dh.expand(c, J, P, n), a, 0)
                w.sub_(torch.bmm(dz.view(c, J, P * n), rows), alpha=lr)
            part = losses[:, g0:g1]
            worst = torch.nan_to_num(part, nan=math.inf).amax(0)
            bad = ~(worst <= _DIVERGENCE_FACTOR * (1 + part[0]))
            if bool(bad.any()):
                g, s = (int(i) for i in bad.nonzero()[0])
                raise TrainingDiverged(
                    f"training diverged in network {s} of input set {g0 + g} (and {int(bad.sum()) - 1} other(s)): "
                    f"the loss became non-finite or exceeded {_DIVERGENCE_FACTOR:.0e} x (1 + initial loss "
                    f"{float(part[0, g, s]):.3g}); the step size (lr = {lr:g}) is likely too large")
    if steps >= 2:
        last, previous = losses[-1], losses[-2]
        converged = (last - previous).abs() <= _CONVERGED_RTOL * previous + _CONVERGED_ATOL
    else:
        converged = torch.zeros(G, S, dtype=torch.bool, device=weight.device)
    trained_head = None
    if head is not None:
        trained_head = (vt.transpose(1, 2).reshape(G, S, N, K), cb.transpose(1, 2).reshape(G, S, 1, K))
    return PatchGD(weight=wt.transpose(1, 2), head=trained_head, losses=losses,
                   snapshots={t: torch.cat(parts).transpose(1, 2) for t, parts in kept.items()}, converged=converged)
