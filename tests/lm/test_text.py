"""Text corpora: the byte tokeniser, file-level splits, reST stripping, the installed corpora, missing data.

The English corpus needs Debian's python3-doc (installed by `.ci/run`); the Python corpus is the running
interpreter's standard library.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transferlab.errors import ConfigError, DataError
from transferlab.tasks.text import SPLITS, VOCAB_SIZE, decode, encode, file_split, load_corpus, rest_prose


@given(st.text())
@settings(max_examples=100, deadline=None)
def test_tokeniser_round_trips_any_string(text: str) -> None:
    tokens = encode(text)
    assert tokens.dtype == np.uint8 and tokens.ndim == 1
    assert decode(tokens) == text
    assert decode(tokens.tolist()) == text  # a plain list of ints decodes the same


def test_tokens_are_the_utf8_bytes() -> None:
    tokens = encode("aé€")
    assert tokens.tolist() == [0x61, 0xC3, 0xA9, 0xE2, 0x82, 0xAC]
    assert VOCAB_SIZE == 256
    assert decode([0xFF, 0x61]) == "\ufffda"  # invalid UTF-8 from a sampler: replaced, not raised
    with pytest.raises(DataError, match="0..255"):
        decode([256])


def _independent_split(rel: str, val: float, test: float) -> str:
    """The split rule written out again from its definition (SHA-256 prefix as a fraction of 2^64)."""
    u = int(hashlib.sha256(rel.encode()).hexdigest()[:16], 16) / 2**64
    return "test" if u < test else ("validation" if u < test + val else "train")


def _write_tree(root: Path, n: int) -> dict[str, str]:
    contents = {}
    for i in range(n):
        rel = f"pkg{i % 3}/module_{i}.py"
        contents[rel] = f"def f{i}(x):\n    return x + {i}\n"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(contents[rel], encoding="utf-8")
    return contents


def test_splits_are_disjoint_by_file_and_follow_the_path_hash(tmp_path: Path) -> None:
    contents = _write_tree(tmp_path, 60)
    (tmp_path / "bad.py").write_bytes(b"x = '\xff'\n")  # not UTF-8: left out and listed
    corpus = load_corpus("python", root=tmp_path, val_fraction=0.2, test_fraction=0.2)
    assert corpus.skipped == ("bad.py",)
    seen = [rel for split in SPLITS for rel in corpus.files[split]]
    assert sorted(seen) == sorted(contents)  # every file exactly once
    for split in SPLITS:
        for rel in corpus.files[split]:
            assert _independent_split(rel, 0.2, 0.2) == split == file_split(rel, 0.2, 0.2)
        # the stream is the split's files, in the recorded order, joined by one newline
        expected = "\n".join(contents[rel] for rel in corpus.files[split])
        assert decode(corpus.tokens[split]) == expected
        assert not corpus.tokens[split].flags.writeable
    # the order inside a split is the hash order, not the name order
    u = [int(hashlib.sha256(r.encode()).hexdigest()[:16], 16) for r in corpus.files["train"]]
    assert u == sorted(u)


def test_adding_a_file_moves_no_other_file(tmp_path: Path) -> None:
    _write_tree(tmp_path / "a", 40)
    before = load_corpus("python", root=tmp_path / "a", val_fraction=0.2, test_fraction=0.2)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "extra.py").write_text("y = 1\n", encoding="utf-8")
    after = load_corpus("python", root=tmp_path / "b", val_fraction=0.2, test_fraction=0.2)
    assert sum(len(after.files[s]) for s in SPLITS) == 41
    for split in SPLITS:
        assert set(before.files[split]) <= set(after.files[split])


def test_rest_prose_keeps_prose_and_drops_code() -> None:
    source = """\
:mod:`spam` --- Eggs
====================

.. module:: spam
   :synopsis: Eggs.

.. testsetup::

   import spam

The :func:`spam.ham` function returns ``42`` and calls :meth:`~spam.Eggs.fry`.
See `the docs <https://example.org>`_ for more.  For example::

    def ham():
        return 42

Before the doctest.

>>> ham()
42

.. function:: ham(x,
              y)

   Return the ham of *x*.

   .. versionadded:: 3.9

.. note:: Ham is
   tasty.

.. code-block:: python

   print("code")

+-----+-----+
After a table.
"""
    prose = rest_prose(source)
    for kept in ("spam --- Eggs", "The spam.ham function returns 42 and calls fry.", "See the docs for more.",
                 "For example:", "Before the doctest.", "Return the ham of *x*.", "Ham is", "tasty.",
                 "After a table."):
        assert kept in prose, kept
    for dropped in ("def ham", "return 42", ">>>", "import spam", "print(", "synopsis", "ham(x", "y)", "====",
                    "+---", "::", "3.9"):
        assert dropped not in prose, dropped


def test_english_corpus_is_large_prose_without_code_blocks() -> None:
    corpus = load_corpus("english")
    n = sum(corpus.tokens[s].size for s in SPLITS)
    assert n >= 5_000_000  # the minimum size, in bytes (= characters: see ascii_fraction)
    assert corpus.ascii_fraction > 0.99
    assert all(len(corpus.files[s]) >= 10 for s in SPLITS)
    text = decode(corpus.train[:2_000_000])
    lines = text.splitlines()
    # no doctest line, no indented literal block, no directive line survives the stripping
    assert not any(line.startswith((">>>", " ")) or re.match(r"\.\. [\w:-]+::", line) for line in lines)
    words = text.split()
    assert words.count("the") > 0.02 * len(words)  # English: "the" is ~5 % of English words


def test_python_corpus_is_the_running_standard_library() -> None:
    corpus = load_corpus("python")
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert corpus.root == stdlib
    files = [rel for s in SPLITS for rel in corpus.files[s]]
    assert len(files) + len(corpus.skipped) >= 500
    assert all(rel.endswith(".py") and "site-packages" not in rel for rel in files)
    assert "os.py" in files
    # the split fractions are binomial: expected 5 % each, 3 standard errors of tolerance
    se = (0.05 * 0.95 / len(files)) ** 0.5
    for split in ("validation", "test"):
        assert abs(len(corpus.files[split]) / len(files) - 0.05) < 3 * se
    assert corpus.fingerprint == load_corpus("python").fingerprint  # deterministic (and cached)


def test_missing_corpus_is_one_line_naming_the_package(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_corpus("english", root=tmp_path / "absent")
    message = str(info.value)
    assert "\n" not in message and "python3-doc" in message and "apt-get install python3-doc" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no \*\.py files under .*libpython3"):
        load_corpus("python", root=empty)


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="corpus"):
        load_corpus("klingon")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="val_fraction"):
        load_corpus("python", val_fraction=1.5)
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction"):
        load_corpus("python", val_fraction=0.6, test_fraction=0.5)
    _write_tree(tmp_path, 2)
    with pytest.raises(DataError, match="none fell in the"):
        load_corpus("python", root=tmp_path)


def test_samples_are_nested_chunks_spread_over_the_split() -> None:
    corpus = load_corpus("python")
    stream, c = corpus.train, 4096
    small, large = corpus.sample("train", 30_000, chunk=c), corpus.sample("train", 300_000, chunk=c)
    assert small.size == 30_000 and large.size == 300_000 and not large.flags.writeable
    assert np.array_equal(large[:30_000], small)  # nested
    n_chunks = -(-stream.size // c)
    # every sampled chunk is a chunk of the stream, and they come from all over it (keys are uniform:
    # 73 chunks out of ~7000 cover far more than the first half of the stream)
    order = sorted(range(n_chunks), key=lambda j: int(hashlib.sha256(f"0:{j}".encode()).hexdigest()[:16], 16))
    starts = []
    for k in range(0, 300_000 - c, c):
        piece = large[k : k + c]
        j = order[k // c]
        assert np.array_equal(piece, stream[j * c : (j + 1) * c])
        starts.append(j)
    assert max(starts) > 0.5 * n_chunks and min(starts) < 0.5 * n_chunks
    assert not np.array_equal(corpus.sample("train", 30_000, seed=1), small)  # another seed, another sample
    with pytest.raises(ConfigError, match="n_tokens"):
        corpus.sample("train", stream.size + 1)
