"""Property: stored results depend on (seed, cell) only -- not on executor, batch size or grid order."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transferlab.sweep import open_store, run_sweep, spec_from_dict


def results(path) -> dict[str, str]:
    with open_store(path) as store:
        return {c.key: json.dumps(c.result, sort_keys=True) for c in store.cells()}


MU = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch_size=st.integers(1, 8), order=st.permutations(MU), sigmas=st.permutations([0.5, 2.0]))
def test_batch_size_and_grid_order_do_not_change_results(tmp_path_factory, batch_size, order, sigmas):
    tmp = tmp_path_factory.mktemp("prop")
    base = {"experiment": "toy", "seed": 11, "replicates": 2, "params": {"n": 30}}
    reference = spec_from_dict({**base, "grid": {"mu": MU, "sigma": [0.5, 2.0]}})
    shuffled = spec_from_dict({**base, "grid": {"sigma": list(sigmas), "mu": list(order)}})
    run_sweep(reference, tmp / "ref.db", executor="serial", batch_size=64)
    run_sweep(shuffled, tmp / "shuffled.db", executor="serial", batch_size=batch_size)
    assert results(tmp / "shuffled.db") == results(tmp / "ref.db")


def test_a_batched_torch_kind_is_executor_and_batch_size_invariant(tmp_path):
    """The fate kind stacks all cells of a batch into one tensor computation with per-cell torch
    generators: stored risks must not depend on how cells are batched or where they run."""
    spec = spec_from_dict({
        "experiment": "fate", "seed": 2,
        "params": {"d": 12, "instances": 3, "mode": "simulate", "sigma": 0.2, "max_steps": 3000},
        "grid": {"theta": [0.3, 0.9, 1.3], "gamma": [0.5, 1.5]},
    })
    run_sweep(spec, tmp_path / "one.db", executor="serial", batch_size=1)
    run_sweep(spec, tmp_path / "many.db", executor="process", jobs=2, batch_size=8)
    one, many = results(tmp_path / "one.db"), results(tmp_path / "many.db")
    assert len(one) == 6 and one == many
