"""``transferlab reproduce fate`` through the sweep engine (tiny specs), and the shipped spec files."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferlab.cli import main
from transferlab.cli import reproduce
from transferlab.sweep import expand_cells, load_spec

REPO = Path(__file__).resolve().parents[2]

TINY_SIM = """\
experiment = "fate"
[params]
d = 8
instances = 3
mode = "both"
max_steps = 300
[grid]
theta = {linspace = [0.25, 0.75, 2], unit = "pi/2"}
gamma = [0.5, 1.5]
"""


@pytest.mark.parametrize("name", ["fate_theory.toml", "fate_quick.toml", "fate_full.toml"])
def test_shipped_specs_match_the_reproduce_specs_and_validate(name: str) -> None:
    texts = {n: t for part in reproduce.SPECS["fate"].values() for n, t in part.items()}
    path = REPO / "specs" / name
    assert path.read_text(encoding="utf-8") == texts[name]
    cells = expand_cells(load_spec(path))
    sizes = {"fate_theory.toml": 1600, "fate_quick.toml": 56, "fate_full.toml": 400}
    assert len(cells) == sizes[name]
    if name == "fate_full.toml":
        assert {c.cell.config.d for c in cells} == {reproduce.FULL_WIDTH}
        assert {c.cell.config.instances for c in cells} == {20}


def test_reproduce_writes_specs_store_figures_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # one tiny simulation spec keeps this test quick (the figures dominate its time)
    monkeypatch.setitem(reproduce.SPECS, "fate", {"quick": {"fate_quick.toml": TINY_SIM}})
    out = tmp_path / "out"
    assert main(["reproduce", "fate", "--quick", "--out", str(out), "--executor", "serial"]) == 0
    assert (out / "fate_quick.toml").read_text() == TINY_SIM
    assert (out / "fate.db").is_file()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "simulation width d" in html and "agreement" in html
    for name in ("fate_phase_lt", "fate_phase_ft", "fate_slices", "fate_agreement", "fate_divergence"):
        assert (out / "figures" / f"{name}.png").is_file() and (out / "figures" / f"{name}.svg").is_file()


def test_reproduce_unknown_paper_is_a_clear_error(tmp_path: Path) -> None:
    assert main(["reproduce", "nonesuch", "--out", str(tmp_path)]) == 2
