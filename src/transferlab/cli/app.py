"""The typer application object that every command module attaches its commands to."""

from __future__ import annotations

import logging

import typer

__all__ = ["app", "console_logging"]

app = typer.Typer(
    name="transferlab",
    help="The science of transfer learning: theory, sweeps, measures, scaling fits and reports.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class _ConsoleHandler(logging.Handler):
    """Log records to stderr through rich, which is imported at the first record, not at start-up
    (it costs a few tenths of a second that a command logging nothing need not pay)."""

    def __init__(self) -> None:
        super().__init__()
        self._rich: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._rich is None:
            from rich.console import Console
            from rich.logging import RichHandler

            self._rich = RichHandler(console=Console(stderr=True), show_path=False, show_time=False, markup=False)
            self._rich.setFormatter(logging.Formatter("%(message)s"))
        self._rich.emit(record)


def console_logging(verbose: int) -> None:
    """Send the library's ``transferlab`` logger to stderr through rich (CLI only)."""
    logger = logging.getLogger("transferlab")
    if not any(isinstance(h, _ConsoleHandler) for h in logger.handlers):
        logger.addHandler(_ConsoleHandler())
    logger.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING)


def _print_version(value: bool) -> None:
    """``--version``: print ``transferlab <version>`` and stop."""
    if value:
        from transferlab import __version__

        typer.echo(f"transferlab {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-v, -vv)."),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                 help="Print the version and exit."),
) -> None:
    console_logging(verbose)
