"""A real local Ray instance runs a sweep and stores the same numbers as the serial executor."""

from __future__ import annotations

import pytest

from transferlab.sweep import load_spec, run_sweep

from .test_driver import stored_results

pytestmark = pytest.mark.ray


def test_ray_executor_matches_serial(toy_spec, tmp_path):
    spec = load_spec(toy_spec)
    ray_summary = run_sweep(spec, tmp_path / "ray.db", executor="ray", jobs=2, batch_size=3)
    assert (ray_summary.ok, ray_summary.failed) == (20, 0)
    run_sweep(spec, tmp_path / "serial.db", executor="serial")
    assert stored_results(tmp_path / "ray.db") == stored_results(tmp_path / "serial.db")
    import ray  # part of the dev extra: a missing Ray is a failure, not a skip

    assert not ray.is_initialized(), "the executor must shut down the instance it started"
