"""``python -m transferlab.cli``: the same as the ``transferlab`` command."""

from transferlab.cli import _entry

_entry()
