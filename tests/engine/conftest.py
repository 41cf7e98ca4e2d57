from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from transferlab.cli import main


def write_spec(directory: Path, body: str, name: str = "toy.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


TOY_SPEC = """
experiment = "toy"
seed = 7
replicates = 2
[params]
n = 40
[grid]
mu = {linspace = [-1, 1, 5]}
sigma = [0.5, 2.0]
"""


@pytest.fixture
def toy_spec(tmp_path: Path) -> Path:
    return write_spec(tmp_path, TOY_SPEC)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run
