"""The ``transferlab`` command line. Each command lives in its own module and attaches itself to
:data:`transferlab.cli.app.app`; :func:`main` turns any :class:`TransferlabError` into one line on
stderr and exit code 2."""

from __future__ import annotations

import importlib
import sys

from transferlab.cli.app import app
from transferlab.errors import TransferlabError

__all__ = ["app", "main"]

# Command modules, imported for their side effect of registering commands on ``app``.
_COMMAND_MODULES = (
    "transferlab.cli.sweep_commands",
    "transferlab.cli.measure",
    "transferlab.cli.reproduce",
    "transferlab.cli.fit",
)

for _module in _COMMAND_MODULES:
    importlib.import_module(_module)


def main(args: list[str] | None = None) -> int:
    """Run the CLI with ``args`` (default ``sys.argv[1:]``); return the exit code.

    Exit codes: 0 success, 1 a run finished with failed cells, 2 bad input (any TransferlabError or
    a usage error).
    """
    import click
    import typer.main

    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="transferlab", standalone_mode=False)
    except TransferlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 2
    except click.exceptions.Abort:
        print("aborted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0


def _entry() -> None:  # pragma: no cover - console script
    sys.exit(main())
