"""The ``transferlab`` command line. Each command lives in its own module and attaches itself to
:data:`transferlab.cli.app.app`; :func:`main` turns any :class:`TransferlabError` into one line on
stderr and exit code 2."""

from __future__ import annotations

import importlib
import sys

import typer
import typer.main

from transferlab.cli.app import app
from transferlab.errors import TransferlabError

__all__ = ["app", "main"]

# Command modules, imported for their side effect of registering commands on ``app``.
_COMMAND_MODULES = (
    "transferlab.cli.sweep_commands",
    "transferlab.cli.measure",
    "transferlab.cli.reproduce",
    "transferlab.cli.fit",
    "transferlab.cli.advise",
)

for _module in _COMMAND_MODULES:
    importlib.import_module(_module)


def main(args: list[str] | None = None) -> int:
    """Run the CLI with ``args`` (default ``sys.argv[1:]``); return the exit code.

    Exit codes: 0 success, 1 a run finished with failed cells, 2 bad input (any TransferlabError or
    a usage error: unknown command or option, missing or malformed argument), 130 interrupted. Bad
    input is always one line on stderr, ``error: ...``. No arguments at all print the help.
    """
    args = sys.argv[1:] if args is None else list(args)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args or ["--help"], prog_name="transferlab", standalone_mode=False)
    except TransferlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except typer.TyperException as exc:  # every usage error of typer (its vendored click) derives from it
        print(f"error: {_usage_line(exc)}", file=sys.stderr)
        return 2
    return result if isinstance(result, int) else 0


def _usage_line(exc: typer.TyperException) -> str:
    """A usage error as one line, with where to find help: ``Missing argument 'SPEC'. (see
    transferlab run --help)``."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    return f"{message} (see {ctx.command_path if ctx is not None else 'transferlab'} --help)"


def _entry() -> None:  # pragma: no cover - console script
    sys.exit(main())
