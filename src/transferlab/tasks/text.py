"""Real text corpora for character-level language models, read offline from installed packages.

Two corpora, each split into train / validation / test *by file*:

==========  ========================================================  =========================================
name        what                                                      comes from
==========  ========================================================  =========================================
``english``  the English prose of the Python documentation: its        Debian ``python3-doc`` (the reST sources
             reStructuredText sources with every code block, doctest,  under ``/usr/share/doc/python3.X/html/
             directive signature and markup line removed               _sources``)
``python``   Python source: every ``.py`` file of the running           the interpreter itself (``sysconfig``'s
             interpreter's standard library (``site-packages`` and      ``stdlib`` path); always present
             files that are not UTF-8 left out)
==========  ========================================================  =========================================

Vocabulary. Byte level: a text is its UTF-8 encoding and every byte is a token, so the vocabulary is the
:data:`VOCAB_SIZE` = 256 byte values, every string round-trips (``decode(encode(s)) == s``) and no
character is ever unknown. Both corpora are almost pure ASCII, so a corpus of D tokens holds about D
characters (:attr:`TextCorpus.ascii_fraction` measures it).

Splits. File ``p`` (its path relative to the corpus root, POSIX separators) goes to a split decided by
``u(p)``, the first 8 bytes of SHA-256(p) read as a big-endian integer over 2^64, a number in [0, 1):
test when ``u < test_fraction``, validation when ``u < test_fraction + val_fraction``, train otherwise.
So the assignment depends on the path alone (not on which other files exist, the file system's order or
a seed), and no file is in two splits. Inside a split the files are concatenated in increasing ``u``,
separated by one newline: a prefix of a split is a sample of whole files in an order unrelated to their
names. For a training set of D tokens spread over the whole split, :meth:`TextCorpus.sample` takes
chunks from everywhere in it; its samples of increasing size are nested (D_1 < D_2: the D_1 sample is
the start of the D_2 one), as a grid of data sizes needs.

The English text. The reST sources hold tens of MB of English around code. :func:`rest_prose` keeps the
prose and drops, line by line: literal blocks (the indented block after a paragraph ending in ``::``,
whose ``::`` becomes ``:``), doctest blocks (from a ``>>>`` line to the next blank line), every
directive's signature and options (``.. function:: f(x)``), the bodies of every directive that is not
prose (``code-block``, ``testcode``, ``doctest``, ``productionlist``, ``literalinclude``, ``toctree``,
``index``, comments, link targets, ...; only the admonition and description directives listed in
``_PROSE_BODY`` and ``_PROSE_AFTER_BLANK`` keep their bodies), section underlines and table borders. Inline
markup is rendered as its text (``:func:`len``` -> ``len``, ````x```` -> ``x``, ```text <url>`_`` ->
``text``), so short identifiers inside sentences remain: the corpus is English *about* Python, without
Python code blocks. Leading indentation is removed and runs of blank lines are collapsed.

Missing data raises one :class:`~transferlab.errors.DataError` line naming the Debian package and the
command that installs it. Corpora are cached per process; their token arrays are read-only.
"""

from __future__ import annotations

import hashlib
import re
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np

from transferlab._checks import check_choice, check_int, check_real
from transferlab.errors import DataError

__all__ = [
    "CORPUS_NAMES",
    "SPLITS",
    "VOCAB_SIZE",
    "CorpusName",
    "SplitName",
    "TextCorpus",
    "decode",
    "encode",
    "file_split",
    "load_corpus",
    "rest_prose",
]

#: Byte-level vocabulary: token = one byte of the UTF-8 encoding.
VOCAB_SIZE = 256
CorpusName = Literal["english", "python"]
SplitName = Literal["train", "validation", "test"]
CORPUS_NAMES: tuple[CorpusName, ...] = ("english", "python")
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")


# --------------------------------------------------------------------------------------------------
# tokeniser
# --------------------------------------------------------------------------------------------------


def encode(text: str) -> np.ndarray:
    """The tokens of ``text``: its UTF-8 bytes as a ``(n_bytes,)`` uint8 array (values 0..255)."""
    if not isinstance(text, str):
        raise DataError(f"encode needs a str, got {type(text).__name__}")
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def decode(tokens: Iterable[int] | np.ndarray) -> str:
    """The text of byte tokens (any integer array or sequence with values 0..255).

    Exact inverse of :func:`encode`. A byte sequence that is not valid UTF-8 (a model's sample can be
    one) decodes with U+FFFD in place of each invalid byte, never an exception.
    """
    arr = np.asarray(tokens if isinstance(tokens, np.ndarray) else list(tokens))
    if arr.size and (arr.dtype.kind not in "iu" or arr.ndim != 1 or arr.min() < 0 or arr.max() >= VOCAB_SIZE):
        raise DataError(f"decode needs a 1-D array of integer byte tokens in 0..{VOCAB_SIZE - 1}")
    return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------------


def _unit_hash(relpath: str) -> float:
    """u(p) in [0, 1): the first 8 bytes of SHA-256 of the POSIX path, big-endian, over 2^64."""
    return int.from_bytes(hashlib.sha256(relpath.encode("utf-8")).digest()[:8], "big") / 2.0**64


def file_split(relpath: str, val_fraction: float = 0.05, test_fraction: float = 0.05) -> SplitName:
    """The split of the file at ``relpath`` (relative to the corpus root, POSIX separators).

    ``"test"`` if u < test_fraction, ``"validation"`` if u < test_fraction + val_fraction, else
    ``"train"``, with u = :func:`_unit_hash` (relpath); see the module docstring.
    """
    u = _unit_hash(relpath)
    if u < test_fraction:
        return "test"
    return "validation" if u < test_fraction + val_fraction else "train"


# --------------------------------------------------------------------------------------------------
# reST -> prose
# --------------------------------------------------------------------------------------------------

#: Admonitions: the text on the directive line and the body are prose (options are dropped).
_PROSE_BODY = frozenset({
    "note", "warning", "seealso", "versionadded", "versionchanged", "deprecated", "deprecated-removed",
    "impl-detail", "important", "tip", "caution", "attention", "hint", "danger", "error", "admonition",
    "topic", "sidebar", "rubric", "glossary",
})
#: Description directives: the directive line and its continuation lines up to the first blank line
#: are a signature (dropped); the body after that blank line is prose.
_PROSE_AFTER_BLANK = frozenset({
    "function", "method", "class", "data", "attribute", "exception", "decorator", "decoratormethod",
    "classmethod", "staticmethod", "abstractmethod", "coroutinefunction", "coroutinemethod", "describe",
    "object", "cmdoption", "option", "envvar", "opcode", "pdbcommand", "2to3fixer", "audit-event",
    "c:function", "c:member", "c:type", "c:var", "c:macro", "c:struct", "c:union", "c:enum",
    "c:enumerator", "c:data", "c:func",
})
_DIRECTIVE = re.compile(r"\.\.\s+([\w:-]+)::(.*)$")
_OPTION = re.compile(r":[\w-]+:(\s|$)")
_RULE = re.compile(r"[=\-~^\"'`#*+.:_|<>]{2,}[=\-~^\"'`#*+.:_|<> ]*")
_ROLE = re.compile(r":[\w:-]+:`([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``")
_LINK = re.compile(r"`([^`<]*?)\s*<[^`>]*>`_{1,2}")
_INTERPRETED = re.compile(r"`([^`]+)`_{0,2}")


def _role_text(match: re.Match[str]) -> str:
    text = match.group(1)
    title = re.match(r"(.*?)\s*<[^>]*>$", text, flags=re.S)
    if title and title.group(1):
        return title.group(1)
    text = text.lstrip("!")
    if text.startswith("~"):
        return text[1:].rsplit(".", 1)[-1]
    return text


def _inline(line: str) -> str:
    line = _ROLE.sub(_role_text, line)
    line = _LITERAL.sub(r"\1", line)
    line = _LINK.sub(r"\1", line)
    return _INTERPRETED.sub(r"\1", line).replace("\\ ", "").strip()


def rest_prose(text: str) -> str:
    """The English prose of one reStructuredText document (the rules are in the module docstring).

    Line-based: a skipped block is every following line that is blank or indented deeper than the line
    that opened it (the reST rule for a directive body or a literal block).
    """
    out: list[str] = []
    skip_deeper_than: int | None = None  # skip non-blank lines indented more than this
    skip_to_blank = False  # drop lines up to the next blank line (doctest, signature, options)
    options_of: int | None = None  # drop option lines indented more than this (admonition options)
    for raw in text.splitlines():
        line = raw.expandtabs(8).rstrip()
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if not stripped:
            skip_to_blank, options_of = False, None
            if out and out[-1]:
                out.append("")
            continue
        if skip_deeper_than is not None:
            if indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        if skip_to_blank:
            continue
        if options_of is not None:
            if indent > options_of and _OPTION.match(stripped):
                continue
            options_of = None
        if stripped.startswith(">>>"):
            skip_to_blank = True
            continue
        if stripped.startswith(".. ") or stripped == "..":
            directive = _DIRECTIVE.match(stripped)
            name = directive.group(1) if directive else ""
            if name in _PROSE_BODY:
                options_of = indent
                argument = directive.group(2).strip() if directive else ""
                if argument and name not in ("versionadded", "versionchanged", "deprecated", "deprecated-removed"):
                    out.append(_inline(argument))
            elif name in _PROSE_AFTER_BLANK:
                skip_to_blank = True
            else:
                skip_deeper_than = indent
            continue
        if stripped.endswith("::"):
            skip_deeper_than = indent
            before = stripped[:-2]
            if before.strip():
                out.append(_inline(before.rstrip() + ("" if before.endswith(" ") else ":")))
            continue
        if _RULE.fullmatch(stripped):
            continue
        text_line = _inline(stripped)
        if text_line:
            out.append(text_line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + ("\n" if out else "")


# --------------------------------------------------------------------------------------------------
# corpora
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TextCorpus:
    """A corpus split by file into train / validation / test token streams.

    Attributes:
        name: ``"english"`` or ``"python"``.
        root: the directory the files were read from.
        files: split -> the relative paths of its files, in their order in the stream (increasing u).
        tokens: split -> ``(n,)`` uint8 read-only array, the files' UTF-8 bytes joined by ``b"\\n"``.
        val_fraction, test_fraction: the split fractions used.
        skipped: relative paths left out (Python files that are not valid UTF-8).
    """

    name: str
    root: Path
    files: dict[str, tuple[str, ...]]
    tokens: dict[str, np.ndarray]
    val_fraction: float
    test_fraction: float
    skipped: tuple[str, ...] = field(default=())

    @property
    def train(self) -> np.ndarray:
        """Training tokens, (n_train,) uint8."""
        return self.tokens["train"]

    @property
    def validation(self) -> np.ndarray:
        """Validation tokens, (n_validation,) uint8."""
        return self.tokens["validation"]

    @property
    def test(self) -> np.ndarray:
        """Test tokens, (n_test,) uint8."""
        return self.tokens["test"]

    @property
    def ascii_fraction(self) -> float:
        """Fraction of all tokens below 128 (for such text, one token is one character)."""
        total = sum(t.size for t in self.tokens.values())
        return sum(int((t < 128).sum()) for t in self.tokens.values()) / total

    def sample(self, split: SplitName, n_tokens: int, *, chunk: int = 4096, seed: int = 0) -> np.ndarray:
        """``n_tokens`` tokens of ``split`` spread over all of it (a prefix of a split is its first file or
        two: at small sizes, unrepresentative).

        The split's stream is cut into consecutive chunks of ``chunk`` tokens (the last one shorter);
        chunk j gets the key u(f"{seed}:{j}") (:func:`_unit_hash`); the chunks in increasing key are
        concatenated and the first ``n_tokens`` kept. So the sample is deterministic, samples of one seed
        are nested (a smaller one is a prefix of a larger one), and a window of a model's context that
        crosses a chunk boundary joins two unrelated places (choose ``chunk`` much longer than the
        context). Returns a read-only (n_tokens,) uint8 array.

        Raises:
            ConfigError: a bad split name, ``n_tokens`` outside 1..len(split), or ``chunk`` < 1.
        """
        split = check_choice(split, "split", SPLITS)
        stream = self.tokens[split]
        n = check_int(n_tokens, "n_tokens", low=1, high=stream.size, note=f"the {split} split's size")
        c = check_int(chunk, "chunk", low=1)
        check_int(seed, "seed")
        order = sorted(range(-(-stream.size // c)), key=lambda j: _unit_hash(f"{seed}:{j}"))
        parts, total = [], 0
        for j in order:
            parts.append(stream[j * c : (j + 1) * c])
            total += parts[-1].size
            if total >= n:
                break
        out = np.concatenate(parts)[:n]
        out.flags.writeable = False
        return out

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the three token streams in split order: changes when the corpus does."""
        digest = hashlib.sha256()
        for split in SPLITS:
            digest.update(len(self.tokens[split]).to_bytes(8, "big"))
            digest.update(self.tokens[split].tobytes())
        return digest.hexdigest()


def _english_root() -> Path:
    """The reST sources of the installed Python documentation, the running interpreter's version first."""
    preferred = Path(f"/usr/share/doc/python3.{sys.version_info.minor}/html/_sources")
    if preferred.is_dir():
        return preferred
    found = sorted(Path("/usr/share/doc").glob("python3*/html/_sources"))
    return found[-1] if found else preferred


def _python_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


_INSTALL = {
    "english": "the Debian package python3-doc (`sudo apt-get install python3-doc`)",
    "python": (f"the Python standard library sources (Debian: `sudo apt-get install "
               f"libpython3.{sys.version_info.minor}-stdlib`)"),
}
_WHAT = {"english": "English corpus (the Python documentation's reST sources)",
         "python": "Python corpus (the standard library's .py files)"}


def _paths(name: str, root: Path) -> list[Path]:
    if name == "english":
        return sorted(p for p in root.rglob("*.txt") if p.is_file())
    return sorted(p for p in root.rglob("*.py")
                  if p.is_file() and not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts))


def load_corpus(
    name: CorpusName,
    *,
    root: str | Path | None = None,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
) -> TextCorpus:
    """Read corpus ``name`` (see the module docstring) and split it by file.

    Args:
        name: ``"english"`` or ``"python"``.
        root: read the files from this directory instead of the installed location (same file layout:
            ``*.txt`` reST sources for English, ``*.py`` for Python, searched recursively).
        val_fraction, test_fraction: expected fractions of the files in validation and test (each in
            [0, 1), sum < 1).

    Raises:
        ConfigError: unknown name or bad fractions.
        DataError: the corpus is not installed (the message names the package to install), or a split
            received no file.
    """
    check_choice(name, "corpus", CORPUS_NAMES)
    val = check_real(val_fraction, "val_fraction", low=0.0, high=1.0, high_open=True)
    test = check_real(test_fraction, "test_fraction", low=0.0, high=1.0, high_open=True)
    check_real(val + test, "val_fraction + test_fraction", high=1.0, high_open=True)
    directory = Path(root) if root is not None else (_english_root() if name == "english" else _python_root())
    return _load(name, directory.resolve() if directory.exists() else directory, val, test)


@cache
def _load(name: str, root: Path, val: float, test: float) -> TextCorpus:
    where = f"no {'*.txt' if name == 'english' else '*.py'} files under {root}"
    if not root.is_dir():
        where = f"no directory {root}"
    paths = _paths(name, root) if root.is_dir() else []
    if not paths:
        raise DataError(f"the {_WHAT[name]} is not installed: {where}; install {_INSTALL[name]}")
    parts: dict[str, list[tuple[float, str, bytes]]] = {s: [] for s in SPLITS}
    skipped = []
    for path in paths:
        rel = path.relative_to(root).as_posix()
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            skipped.append(rel)
            continue
        except OSError as exc:
            raise DataError(f"cannot read {path} ({exc}); reinstall {_INSTALL[name]}") from None
        if name == "english":
            text = rest_prose(text)
        parts[file_split(rel, val, test)].append((_unit_hash(rel), rel, text.encode("utf-8")))
    files, tokens = {}, {}
    for split in SPLITS:
        members = sorted(parts[split])
        if not members:
            raise DataError(f"the {_WHAT[name]} under {root} has {len(paths) - len(skipped)} usable files and none "
                            f"fell in the {split} split (fractions: validation {val}, test {test}); use more files")
        files[split] = tuple(rel for _, rel, _ in members)
        arr = np.frombuffer(b"\n".join(data for _, _, data in members), dtype=np.uint8)
        tokens[split] = arr  # frombuffer on bytes: already read-only
    return TextCorpus(name=name, root=root, files=files, tokens=tokens, val_fraction=val, test_fraction=test,
                      skipped=tuple(skipped))
