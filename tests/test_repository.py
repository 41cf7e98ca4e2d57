"""The repository stands alone and ships what a typed, licensed package needs."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
from pathlib import Path

import pytest

import transferlab

ROOT = Path(__file__).resolve().parents[1]
# Notes that live outside the repository; spelled in pieces so this file does not match itself.
OUTSIDE_NOTES = ("science" + ".md", "ENVIRONMENT" + ".md", "../" + "shared", "/work/" + "shared")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".cfg", ".html", ".csv", ".json", ".yaml", ".yml"}


def _repository_texts() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "Makefile"]
    for folder in ("src", "docs", "tests", "benchmarks", "examples", "specs"):
        files += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]
    return [p for p in files if p.exists()]


def test_no_file_cites_notes_outside_the_repository():
    hits = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _repository_texts()
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if any(note in line for note in OUTSIDE_NOTES)
    ]
    assert not hits, "\n".join(hits)


def test_cited_docs_exist():
    for doc in ("docs/references.md", "docs/derivations/finite_source_finetuning.md"):
        assert (ROOT / doc).is_file(), doc


def test_version_is_single_sourced_from_the_package_metadata():
    assert transferlab.__version__ == importlib.metadata.version("transferlab")
    from transferlab import __version__

    assert __version__ == transferlab.__version__


def test_unknown_attribute_still_raises():
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        transferlab.nonexistent  # noqa: B018


def test_package_is_typed_and_licensed():
    assert importlib.resources.files("transferlab").joinpath("py.typed").is_file()
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License") and "the transferlab authors" in license_text
