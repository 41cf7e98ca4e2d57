"""``transferlab reproduce fate`` through the sweep engine (tiny specs), and the shipped spec files."""

from __future__ import annotations

from pathlib import Path

import pytest

from transferlab.cli import main
from transferlab.cli import reproduce
from transferlab.sweep import expand_cells, load_spec


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
def test_shipped_specs_validate_with_the_documented_sizes(name: str) -> None:
    cells = expand_cells(load_spec(Path(str(reproduce.SPEC_DIR / name))))
    sizes = {"fate_theory.toml": 1600, "fate_quick.toml": 56, "fate_full.toml": 400}
    widths = {"fate_theory.toml": {500}, "fate_quick.toml": {40}, "fate_full.toml": {100}}  # as the README says
    assert len(cells) == sizes[name]
    assert {c.cell.config.d for c in cells} == widths[name]
    if name == "fate_full.toml":
        assert {c.cell.config.instances for c in cells} == {20}


def test_reproduce_writes_specs_store_figures_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # one tiny simulation spec keeps this test quick (the figures dominate its time)
    (tmp_path / "fate_quick.toml").write_text(TINY_SIM, encoding="utf-8")
    monkeypatch.setattr(reproduce, "SPEC_DIR", tmp_path)
    monkeypatch.setitem(reproduce.SPECS, "fate", {"quick": (reproduce.SpecRun("fate_quick.toml"),)})
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


@pytest.mark.parametrize(("flag", "expected"), [([], False), (["--retry-failed"], True)])
def test_reproduce_passes_retry_failed_to_the_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    flag: list[str], expected: bool) -> None:
    # what retrying does is the sweep engine's (tests/engine); here: the flag reaches the sweep. The spy stops
    # the command there with a usage error, so no simulation or figure is made
    import transferlab.sweep as sweep
    from transferlab.errors import ConfigError

    (tmp_path / "fate_quick.toml").write_text(TINY_SIM, encoding="utf-8")
    monkeypatch.setattr(reproduce, "SPEC_DIR", tmp_path)
    monkeypatch.setitem(reproduce.SPECS, "fate", {"quick": (reproduce.SpecRun("fate_quick.toml"),)})
    seen: list[bool] = []

    def spy(*args, **kwargs):
        seen.append(kwargs["retry_failed"])
        raise ConfigError("stopped by the test")

    monkeypatch.setattr(sweep, "run_sweep", spy)
    assert main(["reproduce", "fate", "--quick", "--out", str(tmp_path / "out"), "--executor", "serial", *flag]) == 2
    assert seen == [expected]
