"""Bad input: one line naming the file and key, exit code 2, and the store untouched."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from .conftest import TOY_SPEC, write_spec


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


BAD_SPECS = [
    (TOY_SPEC.replace("n = 40", "n = 40\nwidth = 3"), "toy.toml: params.width: unknown key"),
    (TOY_SPEC.replace("n = 40", 'n = "many"'), "toy.toml: params.n: Input should be a valid integer"),
    (TOY_SPEC.replace("sigma = [0.5, 2.0]", "sigma = []"), "toy.toml: grid.sigma: the axis is empty"),
    (TOY_SPEC.replace("sigma = [0.5, 2.0]", "sigma = [0.5, -1.0]"), "toy.toml: grid.sigma: Input should be greater than 0"),
    (TOY_SPEC.replace('"toy"', '"nonesuch"'), "unknown experiment 'nonesuch'; known experiments: "),
    (TOY_SPEC.replace("seed = 7", "seeed = 7"), "toy.toml: seeed: unknown key"),
    (TOY_SPEC.replace("replicates = 2", "replicates = 0"), "toy.toml: replicates: Input should be greater than or equal to 1"),
    (TOY_SPEC + "\n[run]\nexecutor = 'gpu'\n", "toy.toml: run.executor: Input should be 'serial', 'process' or 'ray'"),
    (TOY_SPEC.replace("n = 40", "n = 40\nmu = 1.0"), "'mu' is both in [params] and [grid]"),
    ("experiment = 'toy'\n[grid\n", "toy.toml: invalid TOML"),
]


@pytest.mark.parametrize(("body", "message"), BAD_SPECS, ids=[m.split(": ")[-1][:30] for _, m in BAD_SPECS])
def test_bad_spec_one_line_exit_2_no_store(tmp_path, cli, body, message):
    spec = write_spec(tmp_path, body)
    store = tmp_path / "never.db"
    code, out, err = cli("run", spec, "--store", store, "--executor", "serial")
    assert code == 2
    assert message in err
    assert err.count("\n") == 1, f"expected one line, got: {err!r}"
    assert not store.exists()


def test_bad_spec_leaves_existing_store_untouched(tmp_path, cli, toy_spec):
    store = tmp_path / "s.db"
    assert cli("run", toy_spec, "--store", store, "--executor", "serial")[0] == 0
    before = digest(store)
    code, _, err = cli("run", toy_spec, "--store", store, "--set", "params.n=1")
    assert code == 2 and "params.n: Input should be greater than or equal to 2" in err
    assert digest(store) == before


def test_missing_and_unreadable_spec_files(tmp_path, cli):
    code, _, err = cli("run", tmp_path / "missing.toml")
    assert code == 2 and "missing.toml: no such spec file" in err
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    code, _, err = cli("run", binary)
    assert code == 2 and "binary.toml: cannot read spec file" in err
    code, _, err = cli("run", tmp_path)
    assert code == 2 and "cannot read spec file" in err


def test_bad_override_syntax(tmp_path, cli, toy_spec):
    code, _, err = cli("run", toy_spec, "--set", "params.n", "--store", tmp_path / "x.db")
    assert code == 2 and "expected KEY=VALUE" in err


@pytest.mark.parametrize("command", ["status", "report", "export"])
def test_foreign_and_missing_stores(tmp_path, cli, command):
    text = tmp_path / "notes.db"
    text.write_text("this is not a database, it is a note\n" * 100)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t (x)")
    before = {p: digest(p) for p in (text, other)}
    for path, message in [(text, "not a transferlab store"),
                          (other, "an SQLite database, but not a transferlab store"),
                          (tmp_path / "absent.db", "no such store")]:
        code, out, err = cli(command, path)
        assert code == 2, (command, path)
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert before == {p: digest(p) for p in (text, other)}


def test_run_refuses_foreign_store_without_touching_it(tmp_path, cli, toy_spec):
    text = tmp_path / "notes.db"
    text.write_text("not a database\n" * 100)
    before = digest(text)
    code, _, err = cli("run", toy_spec, "--store", text)
    assert code == 2 and "not a transferlab store" in err
    assert digest(text) == before


def test_unknown_export_format(tmp_path, cli, toy_spec):
    store = tmp_path / "s.db"
    cli("run", toy_spec, "--store", store, "--executor", "serial")
    code, _, err = cli("export", store, "--format", "xlsx")
    assert code == 2 and "unknown export format 'xlsx'" in err
