"""The batched-network interface of the transfer core: ordered blocks plus a head.

A :class:`BlockNet` holds ``I`` independent networks (the *instances*) stacked along a leading axis of
every parameter and activation, so I copies train as one tensor program. Each network is the
composition

    f(x) = head(B_L(... B_2(B_1(x))))

of ``L`` blocks and a head. Transfer protocols address it by block index k:

- ``features(x, k)``: the activations after block k (k = 0 is the input itself), shape (I, n, *s_k);
- ``forward_from(h, k)``: blocks k+1..L and the head applied to such activations;
- ``freeze_first(k)``: blocks 1..k stop requiring gradients, the rest (and the head) train;
- ``reinit_after(k, generator)``: fresh, independent draws for blocks k+1..L and the head.

Inputs are ``(I, n, *input_shape)`` (one data set per instance) or ``(n, *input_shape)`` (one data
set shared by every instance, broadcast without a copy). Outputs are ``(I, n, out_features)``.

Every layer inside a block is *batched*: its parameters carry the leading instances axis and it
maps ``(I, n, ...) -> (I, n, ...)``; :class:`BatchedLinear` is the basic one. A batched layer that
has parameters or buffers implements ``reset_parameters(generator)``, drawing each instance
independently from the generator it is given (never the global RNG).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from transferlab._checks import check_int
from transferlab.errors import ConfigError, DataError

__all__ = ["BatchedLinear", "BlockNet", "check_count", "reset_module", "stack_instances"]


def check_count(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; bools and non-integers raise :class:`ConfigError`.

    Kept for callers outside the package; it is :func:`transferlab._checks.check_int`.
    """
    return check_int(value, name, low=minimum)


class BatchedLinear(nn.Module):
    """``I`` independent affine maps x -> x W_i + b_i.

    Parameters: ``weight`` (I, d_in, d_out), ``bias`` (I, 1, d_out). Input (I, n, d_in) -> (I, n, d_out).
    Initialisation matches ``torch.nn.Linear``'s default for each instance: W and b uniform on
    [-1/sqrt(d_in), 1/sqrt(d_in)], so instance i equals an ``nn.Linear`` with ``weight = W_i^T``.
    """

    def __init__(
        self,
        instances: int,
        d_in: int,
        d_out: int,
        *,
        bias: bool = True,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.instances = check_int(instances, "instances", low=1)
        self.d_in = check_int(d_in, "d_in", low=1)
        self.d_out = check_int(d_out, "d_out", low=1)
        self.weight = nn.Parameter(torch.empty(instances, d_in, d_out, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(instances, 1, d_out, dtype=dtype)) if bias else None
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None) -> None:
        """Redraw every instance's weights from ``generator`` (required: no global RNG)."""
        if generator is None:
            raise ConfigError("BatchedLinear needs a torch.Generator to draw its weights")
        bound = 1.0 / math.sqrt(self.d_in)
        with torch.no_grad():
            for p in (self.weight, self.bias):
                if p is not None:
                    draw = torch.rand(p.shape, generator=generator, dtype=torch.float64)
                    p.copy_((2 * draw - 1) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return torch.bmm(x, self.weight)
        return torch.baddbmm(self.bias, x, self.weight)

    def extra_repr(self) -> str:
        return f"instances={self.instances}, d_in={self.d_in}, d_out={self.d_out}, bias={self.bias is not None}"


def reset_module(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw every batched layer inside ``module`` that holds state of its own (parameters or buffers,
    e.g. a stacked ``BatchNorm(affine=False)`` with running statistics only) from ``generator``, in
    module order (the order is part of the seeding contract: same generator state, same weights)."""
    for sub in module.modules():
        owns_state = any(True for _ in sub.parameters(recurse=False)) or any(True for _ in sub.buffers(recurse=False))
        if hasattr(sub, "reset_parameters") and owns_state:
            sub.reset_parameters(generator)


class BlockNet(nn.Module):
    """``instances`` independent networks made of ordered blocks and a head (see module docstring).

    Args:
        blocks: the L blocks, each a batched module (I, n, *s_{k-1}) -> (I, n, *s_k).
        head: batched module (I, n, *s_L) -> (I, n, out_features).
        input_shape: per-sample input shape s_0 (e.g. ``(784,)`` or ``(1, 28, 28)``).
        instances: I, the leading axis of every parameter.
        block_names: one name per block (default ``"block1"``, ...), used in results and errors.
    """

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        head: nn.Module,
        *,
        input_shape: Sequence[int],
        instances: int,
        block_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.input_shape = tuple(int(s) for s in input_shape)
        self.instances = check_int(instances, "instances", low=1)
        names = tuple(block_names) if block_names is not None else tuple(f"block{i + 1}" for i in range(len(blocks)))
        if len(names) != len(self.blocks) or len(set(names)) != len(names):
            raise ConfigError(f"block_names must be {len(self.blocks)} distinct names, got {names!r}")
        self.block_names = names

    @property
    def n_blocks(self) -> int:
        """L, the number of blocks before the head."""
        return len(self.blocks)

    def _check_k(self, k: int) -> int:
        return check_int(k, "k", low=0, high=self.n_blocks, note="the number of blocks")

    def batch_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as (I, n, *input_shape): a shared (n, *input_shape) array is broadcast (no copy).

        Raises:
            DataError: the trailing shape is not ``input_shape`` or the instances axis differs from I.
        """
        s = self.input_shape
        if x.ndim == len(s) + 1 and tuple(x.shape[1:]) == s:
            return x.unsqueeze(0).expand(self.instances, *x.shape)
        if x.ndim == len(s) + 2 and tuple(x.shape[2:]) == s and x.shape[0] == self.instances:
            return x
        raise DataError(
            f"input must have shape (n, {', '.join(map(str, s))}) or ({self.instances}, n, "
            f"{', '.join(map(str, s))}), got {tuple(x.shape)}"
        )

    def features(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Activations after block k (k = 0: the input, broadcast to I instances): (I, n, *s_k)."""
        h = self.batch_input(x)
        for block in self.blocks[: self._check_k(k)]:
            h = block(h)
        return h

    def forward_from(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """Blocks k+1..L and the head on activations ``h`` after block k: (I, n, out_features)."""
        for block in self.blocks[self._check_k(k) :]:
            h = block(h)
        return self.head(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) for every instance: (n, *s_0) or (I, n, *s_0) -> (I, n, out_features)."""
        return self.forward_from(self.batch_input(x), 0)

    def block_parameters(self, k: int) -> list[nn.Parameter]:
        """The parameters of block k (1-based; k = L + 1 means the head)."""
        k = check_int(k, "block index", low=1, high=self.n_blocks + 1, note="L + 1 = head")
        module = self.head if k == self.n_blocks + 1 else self.blocks[k - 1]
        return list(module.parameters())

    def freeze_first(self, k: int) -> None:
        """Blocks 1..k stop requiring gradients; blocks k+1..L and the head require them."""
        self._check_k(k)
        for i, block in enumerate(self.blocks, start=1):
            for p in block.parameters():
                p.requires_grad_(i > k)
        for p in self.head.parameters():
            p.requires_grad_(True)

    def reinit_after(self, k: int, generator: torch.Generator) -> None:
        """Fresh independent weights for blocks k+1..L and the head, drawn from ``generator``."""
        for block in self.blocks[self._check_k(k) :]:
            reset_module(block, generator)
        reset_module(self.head, generator)


def stack_instances(nets: Sequence[BlockNet]) -> BlockNet:
    """One :class:`BlockNet` whose instances are those of ``nets``, in order (equal architectures).

    Net j with I_j instances contributes instances I_1 + ... + I_{j-1} .. I_1 + ... + I_j - 1 of the
    result; every parameter and buffer is the concatenation along its leading instances axis, so
    instance i of the stack computes exactly what its net's instance computed. The result is a deep
    copy of ``nets[0]`` with the stacked tensors (the inputs are not modified) and ``instances`` =
    sum I_j on the stack and on every submodule that records an int ``instances`` (BatchedLinear,
    BatchedConv2d, StackedModule). A parameter requires gradients when it does in any net.

    Raises:
        ConfigError: no nets, a non-BlockNet, or nets that differ in module types, block names,
            input shape, or the names or per-instance shapes of their parameters and buffers; or a
            tensor without a leading instances axis (nothing to stack it along).
    """
    nets = list(nets)
    if not nets:
        raise ConfigError("stack_instances needs at least one network")
    for j, net in enumerate(nets):
        if not isinstance(net, BlockNet):
            raise ConfigError(f"nets[{j}] must be a transferlab BlockNet, got {type(net).__name__}")
    first = nets[0]

    def layout(net: BlockNet) -> tuple:
        modules = tuple((name, type(m).__name__) for name, m in net.named_modules())
        tensors = tuple((name, tuple(t.shape[1:])) for name, t in [*net.named_parameters(), *net.named_buffers()])
        return modules, tensors, net.block_names, net.input_shape

    for j, net in enumerate(nets[1:], start=1):
        if layout(net) != layout(first):
            raise ConfigError(f"nets[{j}] differs from nets[0] in architecture (module types, block names, input "
                              "shape or parameter shapes): only equal architectures stack")
        for name, t in [*net.named_parameters(), *net.named_buffers()]:
            if t.ndim == 0 or t.shape[0] != net.instances:
                raise ConfigError(f"nets[{j}].{name} has shape {tuple(t.shape)}, no leading instances axis of "
                                  f"{net.instances}: cannot stack it")
    for name, t in [*first.named_parameters(), *first.named_buffers()]:
        if t.ndim == 0 or t.shape[0] != first.instances:
            raise ConfigError(f"nets[0].{name} has shape {tuple(t.shape)}, no leading instances axis of "
                              f"{first.instances}: cannot stack it")
    total = sum(net.instances for net in nets)
    out = copy.deepcopy(first)
    sources = [dict(net.named_modules()) for net in nets]
    with torch.no_grad():
        for name, module in out.named_modules():
            for pname, p in list(module._parameters.items()):
                if p is not None:
                    parts = [src[name]._parameters[pname] for src in sources]
                    module._parameters[pname] = nn.Parameter(torch.cat([q.detach() for q in parts]),
                                                             requires_grad=any(q.requires_grad for q in parts))
            for bname, b in list(module._buffers.items()):
                if b is not None:
                    module._buffers[bname] = torch.cat([src[name]._buffers[bname] for src in sources])
            if isinstance(getattr(module, "instances", None), int):
                module.instances = total
    return out
