"""The module adapter: any nn.Module with named blocks and head is a BlockNet equal to the module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.nets.module import StackedModule, from_module

# float32 convolutions, batched by vmap (instances folded into the batch) or run one by one: the same
# products summed in possibly another order; outputs of size ~1 agree to ~1e-6, asserted at 1e-5.
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cnn(seed: int = 0) -> nn.Sequential:
    """A small Sequential CNN with BatchNorm whose running statistics are not the identity."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 6, 3, stride=2), nn.BatchNorm2d(6), nn.ReLU(),
            nn.Flatten(), nn.Linear(6 * 4 * 4, 5),
        )
        for bn in (net[1], net[4]):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    return net


CNN_BLOCKS = [("0", "1", "2"), ("3", "4", "5"), "6"]


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.scale = nn.Parameter(torch.tensor(0.5))

    def reset_parameters(self) -> None:
        """Draws ``scale`` (the convolution resets itself); uses the global RNG, as torch modules do."""
        nn.init.uniform_(self.scale, 0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * torch.tanh(self.conv(x))


class _Custom(nn.Module):
    """Non-trivial forward: a ModuleDict, a residual inside a block, a parameter-free pooling step."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.GELU())
        self.body = nn.ModuleDict({"res": _Residual(3), "pool": nn.AdaptiveAvgPool2d(2)})
        self.flat = nn.Flatten()
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for name in ("res", "pool"):
            h = self.body[name](h)
        return self.fc(self.flat(h))


def _custom(seed: int = 0) -> _Custom:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _Custom()


CUSTOM_BLOCKS = ["stem", "body.res", ("body.pool", "flat")]


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_sequential_cnn_equals_the_module(mode: str) -> None:
    module = _cnn()
    net = from_module(module, blocks=CNN_BLOCKS, head="7", input_shape=(1, 10, 10), instances=3, generator=_gen(),
                      mode=mode)
    assert net.n_blocks == 3 and net.block_names == ("0+1+2", "3+4+5", "6")
    x = torch.randn(5, 1, 10, 10, generator=_gen(1))
    out = net(x)
    assert out.shape == (3, 5, 5)
    ref = module.eval()(x)
    for i in range(3):
        torch.testing.assert_close(out[i], ref, **TOL)


def test_custom_forward_equals_the_module_and_features_equal_hooks() -> None:
    module = _custom().eval()
    net = from_module(module, blocks=CUSTOM_BLOCKS, head="fc", input_shape=(1, 6, 6), instances=2, generator=_gen())
    x = torch.randn(4, 1, 6, 6, generator=_gen(2))
    seen: dict[str, torch.Tensor] = {}
    for name in ("stem", "body.res", "flat", "fc"):
        module.get_submodule(name).register_forward_hook(
            lambda _m, _a, out, name=name: seen.__setitem__(name, out.detach()))
    ref = module(x)
    torch.testing.assert_close(net(x)[1], ref, **TOL)
    for k, name in enumerate(("stem", "body.res", "flat"), start=1):
        feats = net.features(x, k)
        for i in range(2):
            torch.testing.assert_close(feats[i], seen[name], **TOL)
    torch.testing.assert_close(net.forward_from(net.features(x, 2), 2)[0], ref, **TOL)


def test_vmap_and_loop_give_the_same_outputs_and_gradients() -> None:
    kwargs = dict(blocks=CUSTOM_BLOCKS, head="fc", input_shape=(1, 6, 6), instances=3, reinit=True)
    nets = [from_module(_custom(), generator=_gen(4), mode=m, **kwargs) for m in ("vmap", "loop")]
    assert {m.mode for m in nets[0].modules() if isinstance(m, StackedModule)} == {"vmap"}
    assert {m.mode for m in nets[1].modules() if isinstance(m, StackedModule)} == {"loop"}
    x = torch.randn(5, 1, 6, 6, generator=_gen(5))
    outs = [net(x) for net in nets]
    torch.testing.assert_close(outs[0], outs[1], **TOL)
    assert float((outs[0][0] - outs[0][1]).detach().abs().max()) > 1e-3  # reinit: the instances differ
    for out in outs:
        out.pow(2).sum().backward()
    for (name, p), q in zip(nets[0].named_parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, **TOL, msg=name)


class _NeedsLoop(nn.Module):
    """Data-dependent Python control flow: torch.vmap cannot run ``.item()``."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        peak = h.detach().abs().max().item()
        return h / peak if peak > 1 else h


def test_auto_mode_falls_back_to_a_loop_where_vmap_cannot_run() -> None:
    module = nn.Sequential(_NeedsLoop(), nn.Linear(3, 2))
    net = from_module(module, blocks=["0"], head="1", input_shape=(3,), instances=2, generator=_gen())
    assert net.blocks[0].mode == "loop" and net.head.mode == "vmap"
    x = torch.randn(6, 3, generator=_gen(1)) * 5
    torch.testing.assert_close(net(x)[0], module(x), **TOL)
    with pytest.raises(ConfigError, match="vmap cannot run '0'"):
        from_module(module, blocks=["0"], head="1", input_shape=(3,), instances=2, generator=_gen(), mode="vmap")


def test_batchnorm_runs_with_stored_statistics_even_in_train_mode() -> None:
    net = from_module(_cnn(), blocks=CNN_BLOCKS, head="7", input_shape=(1, 10, 10), instances=2, generator=_gen())
    buffers = {n: b.clone() for n, b in net.named_buffers()}
    x = torch.randn(8, 1, 10, 10, generator=_gen(1))
    net.train()
    out = net(x)
    out.sum().backward()
    for n, b in net.named_buffers():
        assert torch.equal(b, buffers[n]), n
    torch.testing.assert_close(out[0], _cnn().eval()(x), **TOL)


def test_reset_parameters_is_seeded_by_the_generator_and_leaves_the_global_rng_alone() -> None:
    def build(seed: int) -> torch.nn.Module:
        return from_module(_cnn(), blocks=CNN_BLOCKS, head="7", input_shape=(1, 10, 10), instances=2,
                           generator=_gen(seed), reinit=True)

    state = torch.get_rng_state()
    a, b, c = build(7), build(7), build(8)
    assert torch.equal(torch.get_rng_state(), state)
    source = dict(from_module(_cnn(), blocks=CNN_BLOCKS, head="7", input_shape=(1, 10, 10), instances=2,
                              generator=_gen()).named_parameters())
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters(), strict=True):
        assert torch.equal(pa, pb), name
        if pa[0].numel() > 6:  # BatchNorm's reset gives weight 1, bias 0 everywhere: only draws differ
            assert not torch.equal(pa, pc) and not torch.equal(pa[0], pa[1]), name
            assert not torch.equal(pa[0], source[name][0]), name
    # BatchNorm statistics are reset with the parameters: mean 0, variance 1
    bn = a.blocks[0][1]
    assert torch.equal(bn.get_buffer("running_mean"), torch.zeros(2, 4))
    assert torch.equal(bn.get_buffer("running_var"), torch.ones(2, 4))


def test_freeze_and_reinit_after_work_on_an_adapted_net() -> None:
    net = from_module(_cnn(), blocks=CNN_BLOCKS, head="7", input_shape=(1, 10, 10), instances=2, generator=_gen())
    before = [p.detach().clone() for p in net.parameters()]
    net.freeze_first(1)
    assert all(not p.requires_grad for p in net.block_parameters(1))
    assert all(p.requires_grad for k in (2, 4) for p in net.block_parameters(k))
    net.reinit_after(1, _gen(3))
    after = list(net.parameters())
    n_first = len(net.block_parameters(1))
    assert all(torch.equal(p, q) for p, q in zip(before[:n_first], after[:n_first], strict=True))
    assert not torch.equal(before[-2], after[-2])  # the head's weight is redrawn


def test_bad_names_raise_config_errors_that_list_names() -> None:
    module = _custom()
    common = dict(input_shape=(1, 6, 6), instances=2, generator=_gen())
    with pytest.raises(ConfigError, match=r"no submodule 'body\.rez'.*'body\.res'"):
        from_module(module, blocks=["stem", "body.rez", ("body.pool", "flat")], head="fc", **common)
    with pytest.raises(ConfigError, match="top-level submodules: \\['stem', 'body', 'flat', 'fc'\\]"):
        from_module(module, blocks=["trunk"], head="fc", **common)
    with pytest.raises(ConfigError, match="more than once: \\['stem'\\]"):
        from_module(module, blocks=["stem", "stem"], head="fc", **common)
    with pytest.raises(ConfigError, match="'body.res' lies inside 'body'"):
        from_module(module, blocks=["stem", "body", "body.res", "flat"], head="fc", **common)
    with pytest.raises(ConfigError, match=r"in no named block or head: \['stem.0.weight', 'stem.0.bias'\]"):
        from_module(module, blocks=["body.res", ("body.pool", "flat")], head="fc", **common)


class _DoubledInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(2 * x)


class _Tiled(_DoubledInput):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).repeat(1, 2)


class _FunctionalFlatten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(x), 1))


def test_a_forward_that_breaks_the_contract_is_named() -> None:
    common = dict(input_shape=(1, 6, 6), instances=2, generator=_gen())
    with pytest.raises(ConfigError, match=r"between 'conv' \(shape \(2, 2, 4, 4\)\) and 'fc'"):
        from_module(_FunctionalFlatten(), blocks=["conv"], head="fc", **common)
    with pytest.raises(ConfigError, match=r"order \['stem', 'body.res', 'body.pool', 'flat', 'fc'\]"):
        from_module(_custom(), blocks=["body.res", "stem", ("body.pool", "flat")], head="fc", **common)
    with pytest.raises(ConfigError, match=r"between the input \(shape \(2, 3\)\) and 'fc'"):
        from_module(_DoubledInput(), blocks=[], head="fc", input_shape=(3,), instances=2, generator=_gen())
    with pytest.raises(ConfigError, match="returns \\(2, 4\\), not the output of the head 'fc' \\(\\(2, 2\\)\\)"):
        from_module(_Tiled(), blocks=[], head="fc", input_shape=(3,), instances=2, generator=_gen())


class _Unresettable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


def test_reinit_names_parameters_without_a_reset_function() -> None:
    module = nn.Sequential(_Unresettable(), nn.Linear(3, 2))
    net = from_module(module, blocks=["0"], head="1", input_shape=(3,), instances=2, generator=_gen())
    with pytest.raises(ConfigError, match=r"cannot redraw parameters \['gain'\] of _Unresettable"):
        net.reinit_after(0, _gen(1))


def _draw_each_parameter(module: nn.Module, generator: torch.Generator) -> None:
    """An initialiser: every parameter a constant drawn from ``generator`` (distinguishable from any reset)."""
    with torch.no_grad():
        for p in module.parameters():
            p.fill_(10.0 + float(torch.rand((), generator=generator)))


def test_an_initialiser_replaces_the_submodules_own_resets() -> None:
    module = nn.Sequential(_Unresettable(), nn.Linear(3, 2))  # '0' has no reset of its own: init covers it
    kwargs = dict(blocks=["0"], head="1", input_shape=(3,), instances=2, init=_draw_each_parameter)
    state = torch.get_rng_state()
    a, b = (from_module(module, generator=_gen(), **kwargs) for _ in range(2))
    a.reinit_after(0, _gen(1))
    b.reinit_after(0, _gen(1))
    assert torch.equal(torch.get_rng_state(), state)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name  # the same generator, the same weights
        assert bool((pa >= 10).all()), name  # drawn by the initialiser, not by nn.Linear's reset
        assert float(pa.detach()[0].flatten()[0]) != float(pa.detach()[1].flatten()[0]), name  # one draw per instance
    # reinit=True at construction draws the same way as reinit_after(0) from the generator's state then
    c = from_module(module, generator=_gen(), reinit=True, **kwargs)
    assert all(bool((p >= 10).all()) for p in c.parameters())
    with pytest.raises(ConfigError, match="init must be a callable"):
        from_module(module, blocks=["0"], head="1", input_shape=(3,), instances=2, generator=_gen(), init=3)


class _Double(nn.Module):
    """Writes into its input in place (like ``x.mul_(2)`` or an ``inplace=True`` activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul_(2)


def test_a_submodule_that_writes_into_its_input_is_named() -> None:
    common = dict(input_shape=(4,), instances=2, generator=_gen())
    # the blame goes to the writer, not to the earlier submodule whose recorded output it changed
    for blocks in (["0", ("1", "2")], [("0", "1", "2")]):
        module = nn.Sequential(nn.Linear(4, 8), _Double(), nn.Linear(8, 8), nn.Linear(8, 3))
        with pytest.raises(ConfigError, match=r"^'1' writes into its input tensor in place"):
            from_module(module, blocks=blocks, head="3", **common)
    with pytest.raises(ConfigError, match=r"^'0' writes into its input tensor in place"):
        from_module(nn.Sequential(_Double(), nn.Linear(4, 3)), blocks=["0"], head="1", **common)
    # an in-place step on a tensor the named submodule computes itself is fine
    inner = nn.Sequential(nn.Sequential(nn.Linear(4, 8), nn.ReLU(inplace=True)), nn.Linear(8, 3))
    net = from_module(inner, blocks=["0"], head="1", **common)
    x = torch.randn(5, 4, generator=_gen(1))
    torch.testing.assert_close(net(x)[0], inner(x), **TOL)
