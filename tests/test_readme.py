"""The README's Python examples run as written (honest docs)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md python block", "exec"), {"__name__": "readme_example"})


def test_readme_numbers_match_the_library():
    """The values quoted in comments of the theory example are what the library returns."""
    import numpy as np

    from transferlab.theory import fate

    # README numbers to their printed digits: within half a unit of the last one
    assert fate.linear_transferability(np.pi / 4, [0.25, 0.5, 0.75, 2.0], sigma=0.2) == pytest.approx(
        [0.263, 0.040, -0.130, -0.460], abs=5e-4)
    assert float(fate.finetune_transferability(np.pi / 8, 0.5)) == pytest.approx(0.424, abs=5e-4)
    assert float(np.degrees(fate.finetune_break_even_angle(0.5, sigma=0.2))) == pytest.approx(59.6, abs=5e-2)
    assert float(fate.scratch_risk(0.5, 0.2, d=500)) == pytest.approx(0.5402, abs=5e-5)
