"""Property registry tests: one generic test per mathematical property, driven by the declarations in
``transferlab.measures._registry``. A property declared True is asserted to hold; declared False,
it is asserted to FAIL on generic data (so a declaration cannot silently be wrong either way)."""

from __future__ import annotations

import numpy as np
import pytest
from measures_testdata import make_inputs, transform

from transferlab.measures import list_measures
from transferlab.measures._registry import INVARIANCES

MEASURES = list_measures()
SEEDS = (0, 1)

# Exact invariances are algebraic identities evaluated in float64 through SVDs / solves of matrices
# with condition number <= ~1e3: agreement to 1e-7 relative leaves >1e4 headroom over roundoff.
RTOL, ATOL = 1e-7, 1e-9
# A declared non-invariance must move the value by far more than roundoff: 1e-4 relative.
BREAK = 1e-4


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= ATOL + RTOL * max(abs(a), abs(b))


def _ids(infos):
    return [i.name for i in infos]


def _apply(info, args, kind, rng):
    t = transform(kind, args[0], rng)
    if info.inputs == "samples":
        return [t(args[0]), t(args[1])]
    return [t(args[0]), *args[1:]]


CASES = [(info, kind) for info in MEASURES for kind in INVARIANCES if kind in info.invariances]


@pytest.mark.parametrize(("info", "kind"), CASES, ids=[f"{i.name}-{k}" for i, k in CASES])
@pytest.mark.parametrize("seed", SEEDS)
def test_invariance_declared(info, kind, seed):
    args = make_inputs(info, seed)
    base = info.func(*args)
    moved = info.func(*_apply(info, args, kind, np.random.default_rng(100 + seed)))
    if info.invariances[kind]:
        assert _close(base, moved), f"{info.name} should be invariant to {kind}: {base} vs {moved}"
    else:
        assert abs(base - moved) > BREAK * max(1.0, abs(base)), f"{info.name} declared NOT invariant to {kind}, yet {base} == {moved}"


def test_every_measure_declares_every_invariance():
    for info in MEASURES:
        if info.inputs != "predictions_labels":
            assert set(info.invariances) == set(INVARIANCES), info.name


SYMMETRY = [i for i in MEASURES if i.symmetric is not None]


@pytest.mark.parametrize("info", SYMMETRY, ids=_ids(SYMMETRY))
@pytest.mark.parametrize("seed", SEEDS)
def test_symmetry_declared(info, seed):
    x, y = make_inputs(info, seed)
    forward, backward = info.func(x, y), info.func(y, x)
    if info.symmetric:
        assert _close(forward, backward)
    else:
        assert abs(forward - backward) > BREAK * max(1.0, abs(forward))


IDENTITY = [i for i in MEASURES if i.identity is not None or i.identity_per_n is not None]


@pytest.mark.parametrize("info", IDENTITY, ids=_ids(IDENTITY))
def test_identity(info):
    x = make_inputs(info, 3)[0]
    expected = info.identity if info.identity is not None else info.identity_per_n(x.shape[0])
    # angular/Procrustes distances take arccos/sqrt of 1 - O(eps): |error| <= sqrt(1e-15) ~ 3e-8.
    assert abs(info.func(x, x.copy()) - expected) <= 1e-7


METRICS = [i for i in MEASURES if i.metric]


@pytest.mark.parametrize("info", METRICS, ids=_ids(METRICS))
@pytest.mark.parametrize("seed", range(4))
def test_triangle_inequality(info, seed):
    rng = np.random.default_rng(seed)
    a, b = make_inputs(info, seed)
    if info.inputs == "pair":  # three representations of the same inputs, of one width
        b = b[:, : a.shape[1]] if b.shape[1] >= a.shape[1] else np.hstack([b, rng.standard_normal((b.shape[0], a.shape[1] - b.shape[1]))])
    c = 0.5 * (a + b) + rng.standard_normal(a.shape)  # an intermediate third point
    dab, dbc, dac = info.func(a, b), info.func(b, c), info.func(a, c)
    assert dac <= dab + dbc + 1e-12
    assert dab <= dac + dbc + 1e-12
    assert min(dab, dbc, dac) >= 0.0


@pytest.mark.parametrize("info", MEASURES, ids=_ids(MEASURES))
def test_finite_and_accepts_torch(info):
    import torch

    args = make_inputs(info, 5)
    value = info.func(*args)
    assert np.isfinite(value)
    tensors = [torch.as_tensor(a, dtype=torch.float32 if np.asarray(a).dtype.kind == "f" else None) for a in args]
    # float32 input converted to float64 inside: agreement to float32 resolution (1e-4 relative).
    assert np.isclose(info.func(*tensors), value, rtol=1e-3, atol=1e-4)
