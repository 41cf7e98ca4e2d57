"""Small batched decoder-only transformers (GPT-style) on the :class:`~transferlab.nets.blocks.BlockNet` interface.

Architecture (pre-norm, as GPT-2 and Kaplan et al. 2020; the family is ours, sized for CPUs). With
model width d, L layers, H heads of width d / H, context T and vocabulary V, one instance maps tokens
t_1..t_T to next-token logits:

    h_0 = E[t] + P                                    E: (V, d) token embedding, P: (T, d) learned positions
    h'_l = h_{l-1} + W_o Attn(LN_1(h_{l-1}))          causal multi-head self-attention, l = 1..L
    h_l  = h'_l + W_2 GELU(W_1 LN_2(h'_l))            W_1: d -> 4d, W_2: 4d -> d
    logits = LN_f(h_L) U + c                          U: (d, V) unembedding (not tied to E)

with Attn(x) the concatenation over heads of softmax(q k^T / sqrt(d/H) + M) v, q, k, v = x W_qkv
split in three and per head, and M the causal mask (M_ij = -inf for j > i). Every linear map has a
bias; LN is a layer norm with gain and bias; GELU is the exact (erf) one. No dropout: early stopping
on validation loss is the regulariser (as in the transfer paper, Hernandez et al. 2021).

Blocks. Block 1 (``"embed"``) is the embedding h_0, blocks 2..L+1 (``"layer1"``, ...) the transformer
layers, the head is LN_f and the unembedding. Inputs are int64 token ids (n, T) or (I, n, T) (T <= the
context), activations (I, n, T, d), outputs (I, n, T, V) -- one more axis than the classifier nets.

Parameter count. N, the *non-embedding* parameters of Kaplan et al. (2020), excludes the token and
position embeddings and the unembedding (U, c); per instance

    N = L (12 d^2 + 13 d) + 2 d

(per layer: W_qkv 3d^2 + 3d, W_o d^2 + d, W_1 4d^2 + 4d, W_2 4d^2 + d, two layer norms 4d; plus LN_f),
:func:`non_embedding_params`. Kaplan's approximation 12 L d^2 drops the biases and norms.

Initialisation: torch's defaults for each layer, per instance, from the generator it is given:
linear maps as ``nn.Linear`` (:class:`~transferlab.nets.blocks.BatchedLinear`), embeddings as
``nn.Embedding`` (standard normal), layer norms gain 1 and bias 0.

Sizes. :data:`TRANSFORMER_SIZES` names five shapes from N = 1.3e4 to 7.9e5 (1.8 orders of magnitude),
with H = max(2, d / 32) heads (width 32 from d = 64 on: on CPU, torch's attention kernel runs width-32
heads about 20 % faster per FLOP than width-16 ones at d = 128) and depth growing with width, so a larger
model is both wider and deeper as in Kaplan et al.'s families.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transferlab._checks import check_int
from transferlab.errors import ConfigError, DataError
from transferlab.nets.blocks import BatchedLinear, BlockNet

__all__ = [
    "TRANSFORMER_SIZES",
    "BatchedEmbedding",
    "BatchedLayerNorm",
    "TransformerLayer",
    "TransformerSize",
    "non_embedding_params",
    "training_flops_per_token",
    "transformer",
]


@dataclass(frozen=True)
class TransformerSize:
    """A shape of the family: width d, depth L, heads H (d divisible by H)."""

    d_model: int
    n_layers: int
    n_heads: int

    def __post_init__(self) -> None:
        check_int(self.d_model, "d_model", low=1)
        check_int(self.n_layers, "n_layers", low=1)
        check_int(self.n_heads, "n_heads", low=1)
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model = {self.d_model} is not divisible by n_heads = {self.n_heads}")

    @property
    def non_embedding_params(self) -> int:
        """N = L (12 d^2 + 13 d) + 2 d (see the module docstring)."""
        d, L = self.d_model, self.n_layers
        return L * (12 * d * d + 13 * d) + 2 * d


#: The named sizes, smallest first; N = 12 768, 56 640, 150 080, 335 712, 793 344.
TRANSFORMER_SIZES: dict[str, TransformerSize] = {
    "xs": TransformerSize(d_model=32, n_layers=1, n_heads=2),
    "s": TransformerSize(d_model=48, n_layers=2, n_heads=2),
    "m": TransformerSize(d_model=64, n_layers=3, n_heads=2),
    "l": TransformerSize(d_model=96, n_layers=3, n_heads=3),
    "xl": TransformerSize(d_model=128, n_layers=4, n_heads=4),
}


def _size(size: str | TransformerSize) -> TransformerSize:
    if isinstance(size, TransformerSize):
        return size
    if size not in TRANSFORMER_SIZES:
        raise ConfigError(f"transformer size must be one of {list(TRANSFORMER_SIZES)} or a TransformerSize, "
                          f"got {size!r}")
    return TRANSFORMER_SIZES[size]


def non_embedding_params(size: str | TransformerSize) -> int:
    """N of a named size or shape: L (12 d^2 + 13 d) + 2 d parameters per instance."""
    return _size(size).non_embedding_params


class BatchedLayerNorm(nn.Module):
    """``I`` independent layer norms over the last axis: (x - mean) / sqrt(var + eps) * g_i + b_i.

    Parameters: ``weight`` and ``bias`` (I, d). Input (I, ..., d) -> same shape.
    """

    def __init__(self, instances: int, d: int, *, eps: float = 1e-5, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.d, self.eps = check_int(d, "d", low=1), eps
        self.weight = nn.Parameter(torch.ones(instances, d, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(instances, d, dtype=dtype))

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Gain 1, bias 0 (nothing is drawn; ``generator`` is accepted for the batched-layer contract)."""
        with torch.no_grad():
            self.weight.fill_(1.0)
            self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (self.d,)
        return torch.addcmul(self.bias.view(shape), F.layer_norm(x, (self.d,), eps=self.eps), self.weight.view(shape))


class BatchedEmbedding(nn.Module):
    """Token embedding plus learned positions for ``I`` instances: ids (I, n, T) -> E_i[t] + P_i[:T], (I, n, T, d).

    Parameters: ``token`` (I, V, d), ``position`` (I, T_max, d); both drawn standard normal per instance
    (``nn.Embedding``'s default).
    """

    def __init__(self, instances: int, vocab: int, context: int, d: int, *, generator: torch.Generator,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.vocab, self.context = vocab, context
        self.token = nn.Parameter(torch.empty(instances, vocab, d, dtype=dtype))
        self.position = nn.Parameter(torch.empty(instances, context, d, dtype=dtype))
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None) -> None:
        """Redraw both tables from ``generator`` (required: no global RNG)."""
        if generator is None:
            raise ConfigError("BatchedEmbedding needs a torch.Generator to draw its weights")
        with torch.no_grad():
            for p in (self.token, self.position):
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dtype not in (torch.int64, torch.int32, torch.uint8, torch.int16):
            raise DataError(f"token ids must be an integer tensor, got dtype {ids.dtype}")
        T = ids.shape[-1]
        if T > self.context:
            raise DataError(f"sequences of {T} tokens exceed the model's context of {self.context}")
        I, n = ids.shape[0], ids.shape[1]
        ids = ids.long()
        if int(ids.min()) < 0 or int(ids.max()) >= self.vocab:
            raise DataError(f"token ids must lie in 0..{self.vocab - 1}, got {int(ids.min())}..{int(ids.max())}")
        rows = (ids + torch.arange(I, device=ids.device).view(I, 1, 1) * self.vocab).flatten()
        h = F.embedding(rows, self.token.flatten(0, 1)).view(I, n, T, -1)
        return h + self.position[:, None, :T]


class TransformerLayer(nn.Module):
    """One pre-norm layer h + W_o Attn(LN_1 h), then + W_2 GELU(W_1 LN_2 h), for ``I`` instances: (I, n, T, d)."""

    def __init__(self, instances: int, d: int, n_heads: int, *, generator: torch.Generator,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.d, self.n_heads = d, n_heads
        self.norm1 = BatchedLayerNorm(instances, d, dtype=dtype)
        self.qkv = BatchedLinear(instances, d, 3 * d, generator=generator, dtype=dtype)
        self.proj = BatchedLinear(instances, d, d, generator=generator, dtype=dtype)
        self.norm2 = BatchedLayerNorm(instances, d, dtype=dtype)
        self.fc1 = BatchedLinear(instances, d, 4 * d, generator=generator, dtype=dtype)
        self.fc2 = BatchedLinear(instances, 4 * d, d, generator=generator, dtype=dtype)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Causal multi-head self-attention of normalised inputs x (I, n, T, d), before W_o: (I, n*T, d)."""
        I, n, T, d = x.shape
        H = self.n_heads
        qkv = self.qkv(x.reshape(I, n * T, d)).view(I * n, T, 3, H, d // H).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)  # (I n, H, T, d/H)
        return out.transpose(1, 2).reshape(I, n * T, d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        I, n, T, d = h.shape
        h = h + self.proj(self.attention(self.norm1(h))).view(I, n, T, d)
        flat = self.norm2(h).view(I, n * T, d)
        return h + self.fc2(F.gelu(self.fc1(flat))).view(I, n, T, d)


class _Head(nn.Module):
    """LN_f then the unembedding: (I, n, T, d) -> logits (I, n, T, V)."""

    def __init__(self, instances: int, d: int, vocab: int, *, generator: torch.Generator, dtype: torch.dtype) -> None:
        super().__init__()
        self.norm = BatchedLayerNorm(instances, d, dtype=dtype)
        self.unembed = BatchedLinear(instances, d, vocab, generator=generator, dtype=dtype)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        I, n, T, d = h.shape
        return self.unembed(self.norm(h).view(I, n * T, d)).view(I, n, T, -1)


def transformer(
    size: str | TransformerSize,
    *,
    vocab: int = 256,
    context: int = 128,
    instances: int = 1,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> BlockNet:
    """``instances`` independent decoder-only transformers of shape ``size`` (see the module docstring).

    Args:
        size: a name of :data:`TRANSFORMER_SIZES` or a :class:`TransformerSize`.
        vocab: V, token ids 0..V-1 (256 for the byte-level corpora of :mod:`transferlab.tasks.text`).
        context: T_max, the longest input sequence (the learned position table's length).
        instances: I, each drawn independently from ``generator``.
        generator: the source of every initial weight (blocks in order, then the head).

    Returns:
        A :class:`BlockNet` with blocks ``("embed", "layer1", ..., "layerL")``, ``input_shape = (context,)``
        (shorter sequences are accepted by ``forward_from``), mapping (n, T) or (I, n, T) int64 ids to
        logits (I, n, T, V). Its attributes ``size`` and ``context`` record the shape.
    """
    shape = _size(size)
    check_int(vocab, "vocab", low=1)
    check_int(context, "context", low=1)
    check_int(instances, "instances", low=1)
    d = shape.d_model
    blocks: list[nn.Module] = [BatchedEmbedding(instances, vocab, context, d, generator=generator, dtype=dtype)]
    blocks += [TransformerLayer(instances, d, shape.n_heads, generator=generator, dtype=dtype)
               for _ in range(shape.n_layers)]
    head = _Head(instances, d, vocab, generator=generator, dtype=dtype)
    names = ["embed", *(f"layer{i + 1}" for i in range(shape.n_layers))]
    net = BlockNet(blocks, head, input_shape=(context,), instances=instances, block_names=names)
    net.size = shape  # type: ignore[assignment]
    net.context = context  # type: ignore[assignment]
    return net


def training_flops_per_token(size: str | TransformerSize, context: int) -> float:
    """Training FLOPs per token, C = 6 N + 6 L T d (Kaplan et al. 2020, Table 1: forward 2 N + 2 L T d,
    the second term the attention scores and their weighted sum over the full T x T product, causal half
    not discounted; backward twice the forward). The unembedding (6 d V) is left out, as in N."""
    shape = _size(size)
    return 6.0 * shape.non_embedding_params + 6.0 * shape.n_layers * context * shape.d_model
