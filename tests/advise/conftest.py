"""Fixtures of the advisor's tests: a tiny MLP source (trained on digits 0-4, saved as a state dict, built by a
module the test writes) and an npz target (digits 5-9, relabelled 0-4)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``tiny_source.py`` (``build``: the trained source; ``bad_blocks``: block names the
    network lacks), ``tiny.pt`` and ``target.npz``; put the folder on PYTHONPATH to use ``module:tiny_source:build``."""
    import torch
    from torch import nn

    from transferlab.tasks import load_dataset

    out = tmp_path_factory.mktemp("advise_pair")
    digits = load_dataset("digits")
    src = digits.y_train < 5
    x, y = torch.tensor(digits.x_train[src]), torch.tensor(digits.y_train[src])
    generator = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))
    for p in net.parameters():  # a seeded init that does not touch the global RNG
        with torch.no_grad():
            p.uniform_(-0.2, 0.2, generator=generator)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(100):  # full-batch Adam: the source reaches ~100 % training accuracy on digits 0-4
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    torch.save(net.state_dict(), out / "tiny.pt")
    train, test = digits.y_train >= 5, digits.y_test >= 5
    np.savez(out / "target.npz", x_train=digits.x_train[train], y_train=digits.y_train[train] - 5,
             x_test=digits.x_test[test], y_test=digits.y_test[test] - 5)
    (out / "tiny_source.py").write_text(textwrap.dedent(f"""
        import torch
        from torch import nn


        def _net():
            return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                                 nn.Linear(32, 5))


        def build():
            net = _net()
            net.load_state_dict(torch.load({str(out / "tiny.pt")!r}, weights_only=True))
            return net, [("0", "1", "2"), ("3", "4")], "5"


        def bad_blocks():
            return _net(), ["1", "hidden7"], "5"
        """))
    return out


@pytest.fixture(scope="session")
def advise_cli(tiny_pair: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``transferlab advise ARGS`` through the installed script, with the fixture's folder on PYTHONPATH."""
    script = Path(sys.executable).with_name("transferlab")

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(tiny_pair)}
        return subprocess.run([str(script), "advise", *map(str, args)], capture_output=True, text=True, timeout=300,
                              cwd=tiny_pair, env=env)

    return run
