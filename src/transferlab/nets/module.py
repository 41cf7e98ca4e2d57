"""Any user ``nn.Module`` as a :class:`~transferlab.nets.blocks.BlockNet`: named blocks, a head, I instances.

:func:`from_module` takes a module ``M``, an ordered list of its blocks and its head, each given by
dotted submodule paths (``"features.0"``, ``"layer2"``, ``"fc"``), and returns a BlockNet of ``I``
copies of it.

The contract (checked at construction on a probe input, :class:`ConfigError` naming the first broken
link otherwise): for every input x of shape (n, *input_shape),

    M(x) = head(B_L(... B_1(x))),

where block B_j is its submodules applied in order (a block may be one name or a tuple of names, e.g.
``("adapter", "stages.stem")`` for a parameter-free input map followed by the first stage), and the
head likewise; the head's output is (n, out_features). In words: ``M.forward`` may do nothing between
or around the named submodules; each of them is called exactly once, in the listed order, on one
positional tensor, and receives exactly what the previous one returned. A functional step in
``forward`` (``torch.flatten(x, 1)``, a residual around two blocks) breaks it: move such a step into an
``nn.Module`` and name it inside a block. Every parameter of ``M`` must belong to exactly one named
submodule.

How the copies run. Each named submodule becomes a :class:`StackedModule`: its parameters and buffers
stacked along a leading instances axis (``torch.func.stack_module_state``), run as

    out[i] = functional_call(submodule, (params[i], buffers[i]), (x[i],)),   i = 1..I,

vectorised by ``torch.vmap`` (mode ``"vmap"``), or by a plain loop over the instances (mode ``"loop"``)
where vmap cannot run the submodule (data-dependent Python control flow, ``.item()``). With ``mode="auto"`` each submodule gets vmap if vmap runs it on the probe input and
reproduces the module's own output there, and the loop otherwise; both modes give the same numbers.
A named submodule must not write into its input in place (``nn.ReLU(inplace=True)`` named on its own,
``x.mul_(2)``): the adapter hands blocks broadcast inputs and cached features that must stay unchanged,
so such a submodule is refused (:class:`ConfigError` naming it); in-place steps on tensors a submodule
computes itself are fine.

Eval mode, always. The submodules run in eval mode whatever ``train()``/``eval()`` says: BatchNorm
normalises with its stored running statistics (which stay fixed, like any frozen buffer), dropout is
off. Two reasons: under vmap a BatchNorm in train mode would write its running statistics in place
into a stacked buffer, which functional transforms do not support; and fine-tuning a pretrained net
on a small target set with frozen BatchNorm statistics is standard practice (batch statistics of small
target batches are noisy, and updating the stored ones drifts a frozen prefix away from its source).
BatchNorm's affine weight and bias remain ordinary trainable parameters. A block redrawn with
:meth:`StackedModule.reset_parameters` gets BatchNorm statistics mean 0, variance 1 (torch's reset),
so there its BatchNorm is a learnable per-channel affine map.

Initial weights: every instance starts as a copy of ``M``'s weights (pretrained use); ``reinit=True``
redraws every instance from the generator (see :meth:`StackedModule.reset_parameters`), as do
``BlockNet.reinit_after`` and ``transferlab.nets.blocks.reset_module``. A redraw uses ``init`` when one
is given (``from_module(..., init=model.init)`` for a :class:`~transferlab.nets.pretrained.PretrainedModel`:
He fan-in convolutions, which keep activations of order 1 through the stages) and the submodules' own
``reset_parameters`` otherwise (torch's defaults; ``Conv2d``'s has 1/6 of the He fan-in variance, so
with BatchNorm at the identity a deep convolutional stack's signal vanishes).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from transferlab._checks import check_int
from transferlab.errors import ConfigError
from transferlab.nets.blocks import BlockNet

__all__ = ["Init", "Mode", "StackedModule", "from_module"]

Mode = Literal["auto", "vmap", "loop"]
#: An initialiser: draws every parameter (and resets every buffer it means to) of a module in place,
#: from the generator it is given, never from the global RNG.
Init = Callable[[nn.Module, torch.Generator], None]
_MODES = ("auto", "vmap", "loop")

#: Closeness of the adapter's outputs to the module's own, relative to max(1, max |reference|):
#: 1000 machine epsilons (1.2e-4 in float32, 2.2e-13 in float64) -- vmap may reorder a reduction.
_EPS_FACTOR = 1000.0

#: Samples in the probe input drawn at construction.
_PROBE_N = 2


def _reset_function(module: nn.Module) -> Callable[[], None] | None:
    """The module's own parameter reset: ``reset_parameters``, or ``_reset_parameters`` (torch's
    ``MultiheadAttention`` convention); None when it has neither."""
    for name in ("reset_parameters", "_reset_parameters"):
        fn = getattr(module, name, None)
        if callable(fn):
            return fn
    return None


def _mangle(name: str) -> str:
    """A dotted parameter path as a registrable attribute name (``"0.weight"`` -> ``"0-weight"``)."""
    return name.replace(".", "-")


class StackedModule(nn.Module):
    """``instances`` copies of one plain module, parameters and buffers stacked on a leading axis.

    Parameter ``p`` of shape s in the submodule becomes a parameter of shape (I, *s) here (registered
    under its dotted path with ``.`` -> ``-``), and likewise each buffer. Forward maps (I, n, *a) to
    (I, n, *b) where the submodule maps (n, *a) to (n, *b); the submodule runs in eval mode (see the
    module docstring) whatever this wrapper's ``training`` flag says. Buffers keep their persistence
    (a non-persistent buffer stays out of ``state_dict``).

    Args:
        module: the submodule; it is deep-copied (the caller's object is never touched) and kept as
            an unregistered skeleton whose own tensors are never read by forward.
        instances: I.
        mode: ``"vmap"`` or ``"loop"`` (see the module docstring).
        init: the initialiser :meth:`reset_parameters` applies, or None for the submodule's own resets.
    """

    def __init__(self, module: nn.Module, instances: int, mode: Literal["vmap", "loop"] = "vmap",
                 init: Init | None = None) -> None:
        super().__init__()
        if mode not in ("vmap", "loop"):
            raise ConfigError(f"mode must be 'vmap' or 'loop', got {mode!r}")
        if init is not None and not callable(init):
            raise ConfigError(f"init must be a callable (module, generator) -> None or None, got {init!r}")
        self.instances = check_int(instances, "instances", low=1)
        self.mode = mode
        self.init = init
        skeleton = copy.deepcopy(module).eval()
        skeleton.requires_grad_(False)
        # Stored outside nn.Module's registries: its tensors are scaffolding, the stacks below are the state.
        object.__setattr__(self, "_skeleton", skeleton)
        params, buffers = stack_module_state([skeleton] * instances)
        self._param_names = tuple(params)
        self._buffer_names = tuple(buffers)
        for name, value in params.items():
            self.register_parameter(_mangle(name), nn.Parameter(value.detach().clone()))
        for name, value in buffers.items():
            owner, _, leaf = name.rpartition(".")
            persistent = leaf not in skeleton.get_submodule(owner)._non_persistent_buffers_set
            self.register_buffer(_mangle(name), value.detach().clone(), persistent=persistent)

    def stacked_state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The stacked parameters and buffers keyed by the submodule's own dotted names: (I, *s) each."""
        params = {n: self._parameters[_mangle(n)] for n in self._param_names}
        buffers = {n: self._buffers[_mangle(n)] for n in self._buffer_names}
        return params, buffers  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(I, n, *a) -> (I, n, *b): instance i runs with its own parameters on x[i]."""
        params, buffers = self.stacked_state()
        skeleton: nn.Module = self._skeleton  # type: ignore[assignment]
        if self.mode == "vmap":
            def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
                return functional_call(skeleton, (p, b), (h,))

            return torch.vmap(one)(params, buffers, x)
        outs = [
            functional_call(skeleton, ({n: p[i] for n, p in params.items()}, {n: b[i] for n, b in buffers.items()}),
                            (x[i],))
            for i in range(self.instances)
        ]
        return torch.stack(outs)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Redraw every instance independently, with ``init`` or else the submodule's own initialisation.

        For each instance i, in order: draw an integer seed s_i from ``generator``; on a fresh CPU copy of
        the submodule, inside ``torch.random.fork_rng`` after ``torch.manual_seed(s_i)`` (the global RNG
        state is restored afterwards), call ``init(copy, torch.Generator().manual_seed(s_i))`` when an
        initialiser was given, and otherwise every ``reset_parameters`` (or ``_reset_parameters``) of the
        copy in module order. The weights thus depend on ``generator``'s state only, not on the device.
        Parameters and buffers are copied from the reset copy (BatchNorm statistics become mean 0,
        variance 1; buffers the reset leaves alone keep their values).

        Raises:
            ConfigError: ``generator`` is missing, or (without ``init``) some parameter has no reset
                function in its module or any enclosing module of the submodule (the parameters are named).
        """
        if not isinstance(generator, torch.Generator):
            raise ConfigError("StackedModule.reset_parameters needs a torch.Generator (no global RNG)")
        skeleton: nn.Module = self._skeleton  # type: ignore[assignment]
        if self.init is None:
            covered: set[int] = set()
            for sub in skeleton.modules():
                if _reset_function(sub) is not None:
                    covered.update(id(p) for p in sub.parameters())
            orphans = [n for n, p in skeleton.named_parameters() if id(p) not in covered]
            if orphans:
                raise ConfigError(
                    f"cannot redraw parameters {orphans} of {type(skeleton).__name__}: neither their module nor an "
                    "enclosing one defines reset_parameters(); pass an initialiser (from_module(..., init=...))"
                )
        params, buffers = self.stacked_state()
        for i in range(self.instances):
            seed = int(torch.randint(0, 2**62, (), generator=generator))
            fresh = copy.deepcopy(skeleton).to("cpu")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                if self.init is not None:
                    self.init(fresh, torch.Generator().manual_seed(seed))
                else:
                    for sub in fresh.modules():
                        reset = _reset_function(sub)
                        if reset is not None:
                            reset()
            fresh_params = dict(fresh.named_parameters())
            fresh_buffers = dict(fresh.named_buffers())
            with torch.no_grad():
                for n, p in params.items():
                    p[i].copy_(fresh_params[n])
                for n, b in buffers.items():
                    b[i].copy_(fresh_buffers[n])

    def extra_repr(self) -> str:
        skeleton: nn.Module = self._skeleton  # type: ignore[assignment]
        init = "" if self.init is None else f", init={getattr(self.init, '__name__', repr(self.init))}"
        return f"{type(skeleton).__name__}, instances={self.instances}, mode={self.mode!r}{init}"


def _as_group(spec: str | Sequence[str], what: str) -> tuple[str, ...]:
    """A block or head spec as a non-empty tuple of names."""
    names = (spec,) if isinstance(spec, str) else tuple(spec)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{what} must be a submodule name or a non-empty sequence of names, got {spec!r}")
    return names


def _lookup(module: nn.Module, name: str) -> nn.Module:
    """``module.get_submodule(name)``, with a ConfigError listing close and available names."""
    try:
        return module.get_submodule(name)
    except AttributeError:
        pass
    available = [n for n, _ in module.named_modules() if n]
    close = difflib.get_close_matches(name, available, n=5, cutoff=0.5)
    top = [n for n, _ in module.named_children()]
    raise ConfigError(
        f"{type(module).__name__} has no submodule {name!r}; close names: {close or 'none'}; "
        f"top-level submodules: {top}"
    )


def _check_names(module: nn.Module, groups: Sequence[tuple[str, ...]]) -> None:
    """Duplicated or nested names, parameters shared between named submodules or owned by none."""
    flat = [n for g in groups for n in g]
    dup = sorted({n for n in flat if flat.count(n) > 1})
    if dup:
        raise ConfigError(f"submodule names given more than once: {dup}")
    for a in flat:
        for b in flat:
            if b.startswith(a + "."):
                raise ConfigError(f"submodule {b!r} lies inside {a!r}: named blocks and head must not overlap")
    owner: dict[int, str] = {}
    for n in flat:
        for p in _lookup(module, n).parameters():
            if id(p) in owner and owner[id(p)] != n:
                raise ConfigError(f"submodules {owner[id(p)]!r} and {n!r} share a parameter; they cannot be split")
            owner[id(p)] = n
    orphans = [n for n, p in module.named_parameters() if id(p) not in owner]
    if orphans:
        raise ConfigError(f"parameters in no named block or head: {orphans}; name the submodules that hold them")


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and max |a - b| <= 1000 eps(dtype) max(1, max |b|)."""
    if a.shape != b.shape:
        return False
    if b.numel() == 0:
        return True
    scale = max(1.0, float(b.abs().max()))
    return float((a - b).abs().max()) <= _EPS_FACTOR * torch.finfo(b.dtype).eps * scale


def _detached(value: object) -> object:
    """A tensor as a detached clone (later in-place writes cannot change it); anything else as it is."""
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def _versions(args: tuple[object, ...]) -> list[int]:
    """torch's version counters of the tensor arguments (an in-place write into a tensor increments its)."""
    return [a._version for a in args if isinstance(a, torch.Tensor)]


def _record_chain(module: nn.Module, names: Sequence[str], x: torch.Tensor
                  ) -> tuple[list[tuple[str, tuple[object, ...], dict[str, object], object, bool]], torch.Tensor]:
    """Run ``module(x)`` with hooks on the named submodules: the calls in order, each
    (name, args, kwargs, output, wrote_input). Tensor arguments are cloned as the call starts and the output
    as it ends, so an in-place write by a later call cannot change them; ``wrote_input`` says whether the
    call wrote into one of its tensor arguments in place."""
    calls: list[tuple[str, tuple[object, ...], dict[str, object], object, bool]] = []
    started: dict[str, list[tuple[tuple[object, ...], list[int]]]] = {n: [] for n in names}
    handles = []
    for n in names:
        def pre(_m: nn.Module, args: tuple[object, ...], kwargs: dict[str, object], n: str = n) -> None:
            started[n].append((tuple(_detached(a) for a in args), _versions(args)))

        def hook(_m: nn.Module, args: tuple[object, ...], kwargs: dict[str, object], out: object, n: str = n) -> None:
            recorded, versions = started[n].pop()
            calls.append((n, recorded, kwargs, _detached(out), _versions(args) != versions))

        sub = module.get_submodule(n)
        handles.append(sub.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(sub.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            y = module(x)
    finally:
        for h in handles:
            h.remove()
    return calls, y


def _shape(t: object) -> object:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def _check_contract(module: nn.Module, order: Sequence[str], x: torch.Tensor
                    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Check M(x) = head(B_L(...B_1(x))) link by link; return each named submodule's (input, output)."""
    calls, y = _record_chain(module, order, x)
    seen = [c[0] for c in calls]
    for n in order:
        if seen.count(n) != 1:
            raise ConfigError(f"the module's forward calls {n!r} {seen.count(n)} times; each named submodule must "
                              "run exactly once")
    if seen != list(order):
        raise ConfigError(f"the module's forward calls the named submodules in the order {seen}, not {list(order)}")
    io: list[tuple[torch.Tensor, torch.Tensor]] = []
    previous, prev_name = x, "the input"
    for n, args, kwargs, out, wrote_input in calls:
        if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor) or not isinstance(out, torch.Tensor):
            raise ConfigError(f"{n!r} must take one tensor and return one tensor; it was called with "
                              f"{[_shape(a) for a in args]} and {sorted(kwargs)} and returned {_shape(out)}")
        if wrote_input:
            raise ConfigError(
                f"{n!r} writes into its input tensor in place (e.g. inplace=True, x.mul_(...)); the adapter "
                "cannot run it (block inputs are broadcast or cached features that must stay unchanged): make "
                "that operation out-of-place, or name an enclosing submodule that also computes that input")
        h = args[0]
        if h.shape != previous.shape or not torch.equal(h, previous):
            raise ConfigError(
                f"the module's forward changes the tensor between {prev_name} (shape {tuple(previous.shape)}) and "
                f"{n!r} (input shape {tuple(h.shape)}): move that step into an nn.Module inside a named block"
            )
        io.append((h, out))
        previous, prev_name = out, repr(n)
    if not isinstance(y, torch.Tensor) or y.shape != previous.shape or not torch.equal(y, previous):
        raise ConfigError(f"the module's forward returns {_shape(y)}, not the output of the head {order[-1]!r} "
                          f"({tuple(previous.shape)}): it does something after the head")
    if y.ndim != 2:
        raise ConfigError(f"the module must return (n, out_features) on (n, *input_shape), got shape {tuple(y.shape)}")
    return io


def _stack(sub: nn.Module, name: str, instances: int, mode: Mode,
           probe: tuple[torch.Tensor, torch.Tensor], init: Init | None) -> StackedModule:
    """Wrap ``sub`` (redrawn by ``init``) and check it reproduces its recorded (input, output) on every instance."""
    h, out = probe
    batched = h.unsqueeze(0).expand(instances, *h.shape)
    if mode in ("auto", "vmap"):
        wrapped = StackedModule(sub, instances, "vmap", init)
        try:
            with torch.no_grad():
                got = wrapped(batched)
        except Exception as err:  # noqa: BLE001 -- vmap raises many types; any of them means "cannot vmap"
            if mode == "vmap":
                raise ConfigError(f"torch.vmap cannot run {name!r}: {type(err).__name__}: {err}") from err
        else:
            if _close(got, out.unsqueeze(0).expand_as(got)):
                return wrapped
            if mode == "vmap":
                raise ConfigError(f"under torch.vmap {name!r} does not reproduce its own output on the probe input")
    wrapped = StackedModule(sub, instances, "loop", init)
    with torch.no_grad():
        got = wrapped(batched)
    if not _close(got, out.unsqueeze(0).expand_as(got)):
        raise ConfigError(f"{name!r} does not reproduce its own output when rerun on the same input (is it random?)")
    return wrapped


def from_module(
    module: nn.Module,
    *,
    blocks: Sequence[str | Sequence[str]],
    head: str | Sequence[str],
    input_shape: Sequence[int],
    instances: int,
    generator: torch.Generator,
    reinit: bool = False,
    mode: Mode = "auto",
    init: Init | None = None,
) -> BlockNet:
    """``instances`` copies of ``module`` as a BlockNet with the named blocks and head (module docstring).

    Args:
        module: any ``nn.Module`` mapping (n, *input_shape) -> (n, out_features); never modified.
        blocks: the L blocks in order, each a dotted submodule path or a tuple of paths applied in order.
        head: the head, a path or a tuple of paths.
        input_shape: per-sample input shape s_0, e.g. ``(1, 28, 28)``.
        instances: I.
        generator: draws the probe input (N(0, 1), shape (2, *input_shape)) and, with ``reinit``, the weights.
        reinit: False: every instance starts with ``module``'s weights; True: each is redrawn independently
            (blocks in order, then the head), as by ``BlockNet.reinit_after(0, generator)``.
        mode: ``"auto"`` (vmap where it runs and agrees, else a loop), ``"vmap"`` or ``"loop"`` for every submodule.
        init: how a redraw (``reinit``, ``reinit_after``, ``reset_module``) initialises each named submodule:
            ``init(submodule, generator)`` fills its parameters (and any buffers) in place from the generator
            it is given (see :meth:`StackedModule.reset_parameters`), e.g. ``PretrainedModel.init``; None:
            the submodules' own ``reset_parameters`` (torch's default initialisation).

    Returns:
        A BlockNet with ``block_names`` the blocks' names (a tuple group is named by joining with ``+``).

    Raises:
        ConfigError: an unknown name (close and available names are listed), a duplicated or nested name,
            a parameter shared between named submodules or in none of them, a forward that breaks the
            contract (the first broken link is named), a submodule that writes into its input in place, a
            submodule vmap cannot run with ``mode="vmap"``, or an ``init`` that is not callable.
    """
    if not isinstance(module, nn.Module):
        raise ConfigError(f"from_module needs an nn.Module, got {type(module).__name__}")
    if mode not in _MODES:
        raise ConfigError(f"mode must be one of {_MODES}, got {mode!r}")
    if not isinstance(generator, torch.Generator):
        raise ConfigError("from_module needs a torch.Generator (the probe input and any reinit are drawn from it)")
    if init is not None and not callable(init):
        raise ConfigError(f"init must be a callable (module, generator) -> None or None, got {init!r}")
    check_int(instances, "instances", low=1)
    shape = tuple(check_int(s, "input_shape entry", low=1) for s in input_shape)
    block_groups = [_as_group(b, "each block") for b in blocks]
    head_group = _as_group(head, "head")
    module = copy.deepcopy(module).eval()
    order = [n for g in [*block_groups, head_group] for n in g]
    for n in order:
        _lookup(module, n)
    _check_names(module, [*block_groups, head_group])

    floats = [t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()]
    dtype = floats[0].dtype if floats else torch.get_default_dtype()
    device = floats[0].device if floats else torch.device("cpu")
    x = torch.randn((_PROBE_N, *shape), generator=generator, dtype=dtype, device=generator.device).to(device)
    io = dict(zip(order, _check_contract(module, order, x), strict=True))

    def build(group: tuple[str, ...]) -> nn.Module:
        parts = [_stack(module.get_submodule(n), n, instances, mode, io[n], init) for n in group]
        return parts[0] if len(parts) == 1 else nn.Sequential(*parts)

    net = BlockNet([build(g) for g in block_groups], build(head_group), input_shape=shape, instances=instances,
                   block_names=["+".join(g) for g in block_groups])
    if reinit:
        net.reinit_after(0, generator)
    return net
