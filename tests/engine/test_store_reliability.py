"""Store reliability: concurrent creation, files that are not stores (each refused with one line
naming its real problem, never taken over), and the atomic creation step."""

from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from transferlab.errors import StoreError
from transferlab.sweep import open_store

from .conftest import TOY_SPEC, write_spec

TRANSFERLAB = Path(sys.executable).with_name("transferlab")


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    """The real entry point, in a subprocess."""
    return subprocess.run([str(TRANSFERLAB), *map(str, args)], capture_output=True, text=True, timeout=120)


def _create_many(barrier, directory: str, trials: int, failures) -> None:
    """One racer: for each trial, wait for every racer, then create, bind and start a run on the
    trial's store."""
    for trial in range(trials):
        barrier.wait()
        try:
            with open_store(Path(directory) / f"s{trial}.db", create=True) as st:
                st.bind_experiment("toy")
                st.start_run(experiment="toy", spec_json="{}", spec_text=None, spec_path=None, executor="serial",
                             jobs=1, package_version="test", git_commit=None, cells_total=0)
        except StoreError as exc:
            failures.put(str(exc))


def test_concurrent_creation_of_one_store_never_fails(tmp_path):
    racers, trials = 4, 50
    ctx = multiprocessing.get_context("spawn")
    barrier, failures = ctx.Barrier(racers), ctx.Queue()
    procs = [ctx.Process(target=_create_many, args=(barrier, str(tmp_path), trials, failures)) for _ in range(racers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=300)
    assert [proc.exitcode for proc in procs] == [0] * racers
    errors = []
    while not failures.empty():
        errors.append(failures.get())
    assert errors == [], f"{len(errors)} of {racers * trials} creations failed: {errors[:3]}"
    for trial in range(trials):
        with open_store(tmp_path / f"s{trial}.db") as st:
            assert st.experiment() == "toy"
            assert len(st.runs()) == racers
    assert not [p.name for p in tmp_path.iterdir() if "creating" in p.name], "temporary files left behind"


def test_creation_without_hard_links_falls_back_to_an_exclusive_copy(tmp_path, monkeypatch):
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with open_store(tmp_path / "s.db", create=True) as st:
        st.bind_experiment("toy")
    with open_store(tmp_path / "s.db", create=True) as st:  # a second creator uses the same store
        assert st.experiment() == "toy"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("s.db-")) == ["s.db"]


def test_a_missing_directory_is_named(tmp_path):
    with pytest.raises(StoreError, match="the directory .*nowhere does not exist"):
        open_store(tmp_path / "nowhere" / "s.db", create=True)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _valid_store_bytes(directory: Path) -> bytes:
    with open_store(directory / "valid.db", create=True) as st:
        st.bind_experiment("toy")
    return (directory / "valid.db").read_bytes()


@pytest.mark.parametrize("command", ["run", "status"])
def test_an_empty_file_is_refused_and_left_empty(tmp_path, command):
    spec = write_spec(tmp_path, TOY_SPEC)
    empty = tmp_path / "empty.db"
    empty.touch()
    args = (command, spec, "--store", empty, "--executor", "serial") if command == "run" else (command, empty)
    done = cli(*args)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"{empty}: an empty file, not a transferlab store" in done.stderr
    assert empty.stat().st_size == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "toy.toml"]


def test_each_unreadable_store_names_its_problem(tmp_path):
    image = _valid_store_bytes(tmp_path)
    cases = {
        "folder.db": "is a directory, not a store",
        "text.db": "not a transferlab store (not an SQLite database)",
        "damaged.db": "a damaged SQLite file, unreadable as a store",
        "truncated.db": "a damaged SQLite file, unreadable as a store",
        "absent.db": "no such store",
    }
    (tmp_path / "folder.db").mkdir()
    (tmp_path / "text.db").write_text("a note, not a database\n" * 50)
    (tmp_path / "damaged.db").write_bytes(image[:16] + b"\x13" * (len(image) - 16))
    (tmp_path / "truncated.db").write_bytes(image[:100])
    before = {name: digest(tmp_path / name) for name in cases if (tmp_path / name).is_file()}
    spec = write_spec(tmp_path, TOY_SPEC)
    runs = [("run", spec, "--store", tmp_path / name) for name in ("folder.db", "damaged.db")]
    for args in [("status", tmp_path / name) for name in cases] + runs:
        store = Path(args[-1])
        done = cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert f"{store}: {cases[store.name]}" in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert before == {name: digest(tmp_path / name) for name in before}


_AS_NOBODY = textwrap.dedent("""
    import os, sys
    from transferlab.errors import StoreError
    from transferlab.sweep import open_store
    os.setgid(65534)
    os.setuid(65534)
    for path, create in [(sys.argv[1], False), (sys.argv[2], True), (sys.argv[3], True)]:
        try:
            open_store(path, create=create).close()
            print("opened")
        except StoreError as exc:
            print(exc)
""")


def test_permission_problems_are_named(tmp_path):
    """An unreadable store, a read-only store given to a run, a directory where a store cannot be
    created. Root reads everything, so as root the check runs in a child that drops to nobody."""
    base = Path(tempfile.mkdtemp(dir=tmp_path if os.geteuid() else "/tmp"))
    try:
        base.chmod(0o755)
        image = _valid_store_bytes(base)
        unreadable, read_only, locked_dir = base / "unreadable.db", base / "readonly.db", base / "locked"
        unreadable.write_bytes(image)
        unreadable.chmod(0)
        read_only.write_bytes(image)
        read_only.chmod(0o444)
        locked_dir.mkdir(mode=0o555)
        paths = [str(unreadable), str(read_only), str(locked_dir / "new.db")]
        if os.geteuid() == 0:
            lines = subprocess.run([sys.executable, "-c", _AS_NOBODY, *paths], capture_output=True, text=True,
                                   timeout=120, check=True).stdout.splitlines()
        else:
            lines = [cli("status", paths[0]).stderr.strip()]
            for path in paths[1:]:
                lines.append(cli("run", write_spec(tmp_path, TOY_SPEC), "--store", path).stderr.strip())
        assert f"{unreadable}: cannot read the store (permission denied)" in lines[0]
        assert f"{read_only}: the store is read-only" in lines[1]
        assert f"{locked_dir / 'new.db'}: cannot create the store: the directory {locked_dir} is not writable" \
            in lines[2]
        assert not (locked_dir / "new.db").exists()
    finally:
        for path in base.rglob("*"):
            path.chmod(0o755)
        for path in sorted(base.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        base.rmdir()


def test_a_foreign_sqlite_file_without_tables_is_not_taken_over(tmp_path):
    path = tmp_path / "blank.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 1")  # a valid database file with no tables
    before = digest(path)
    with pytest.raises(StoreError, match="an SQLite database, but not a transferlab store"):
        open_store(path, create=True)
    assert digest(path) == before
