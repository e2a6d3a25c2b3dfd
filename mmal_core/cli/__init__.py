"""The ``mmal`` command line (Typer + rich).

Command groups live in sibling modules, each exposing ``register(app)``; add a module name to
``COMMAND_MODULES`` to add commands. Every user error is a :class:`MmalError`: its one line
goes to stderr and the exit status is 2.
"""

from __future__ import annotations

import importlib
import re
import sys

import click
import typer
from rich.markup import escape

from ..version import __version__
from ..errors import MmalError
from .common import err_console

COMMAND_MODULES = ["run", "listing", "results", "bench", "leaderboard", "serve", "cache", "docker", "report", "diagnose"]

app = typer.Typer(
    name="mmal",
    help="Benchmark multimodal active learning: run experiments, list plugins, show and export results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmal {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """mmal: multimodal active-learning benchmarks."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)


_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _print_error(message: str) -> None:
    # The message is plain text: no rich markup ("[b]" in a key) and no emoji codes (":abc:").
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True, emoji=False)


def _interrupted() -> None:
    err_console.print("interrupted: finished rounds are saved; run the same command again to resume")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: runs the app and turns errors into one line + exit 2."""
    try:
        result = app(args=argv, standalone_mode=False, prog_name="mmal")
    except MmalError as err:
        _print_error(str(err))
        sys.exit(err.exit_code)
    except click.UsageError as err:
        if isinstance(err, _NO_ARGS_IS_HELP):  # `mmal bench` alone: show the help
            err.show()
            sys.exit(err.exit_code)
        # One line, like every other error (click's default is usage + hint + message).
        where = err.ctx.command_path if err.ctx is not None else "mmal"
        # click and typer both append "Did you mean 'x'?" to an unknown command: say it once
        message = re.sub(r"( Did you mean [^?]*\?)(?:\1)+", r"\1", err.format_message())
        _print_error(str(MmalError(f"{where}: {message} (see `{where} --help`)")))
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        _interrupted()
        sys.exit(130)
    if result == 130:  # typer turns Ctrl-C into Exit(130), which click returns without standalone mode
        _interrupted()
    sys.exit(result if isinstance(result, int) else 0)
