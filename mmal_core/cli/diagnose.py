"""``mmal diagnose DATASET``: the pitfall profile of a dataset and the study's advice for it."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import MmalError, did_you_mean
from .common import console, err_console


def register(app: typer.Typer) -> None:
    @app.command()
    def diagnose(
        dataset: str = typer.Argument(..., help="A registered dataset (see `mmal list datasets`)."),
        param: List[str] = typer.Option([], "--param", "-p", help="Dataset parameter KEY=VALUE (YAML value); repeatable."),
        seeds: int = typer.Option(3, "--seeds", "-s", help="Seeds to repeat the sampled measurements over (intervals need 2+)."),
        fmt_: str = typer.Option("table", "--format", "-f", help="table, md, json or html."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (default: standard output)."),
    ) -> None:
        """Missing modalities, difficulty, interaction structure, reliance, and the study's advice."""
        from rich.markup import escape
        from rich.table import Table

        from ..diagnose import FORMATS, diagnose as run_diagnosis, render, sections
        from .cache import _parse_pairs
        from .results import write_atomically

        if fmt_ not in FORMATS:
            raise MmalError(f"--format {fmt_}: expected one of {', '.join(FORMATS)}{did_you_mean(fmt_, FORMATS)}")
        if output is not None and fmt_ == "table":
            raise MmalError("--output: the table format prints to the terminal; use --format md, json or html")
        if seeds < 1:
            raise MmalError(f"--seeds {seeds}: expected a positive integer")
        params = _parse_pairs(param, "--param")
        frozen: list[bool] = []

        def progress(msg: str) -> None:
            if not frozen:  # the first message comes once the dataset has passed its checks
                _freeze_libraries()
                frozen.append(True)
            err_console.print(msg, style="dim")

        report = run_diagnosis(dataset, params, seeds, progress=progress)
        if fmt_ == "table":
            for sec in sections(report):
                if sec.get("headers"):
                    table = Table(title=escape(sec["title"]), title_justify="left")
                    for h in sec["headers"]:
                        table.add_column(escape(h))
                    for row in sec["rows"]:
                        table.add_row(*[escape(str(c)) for c in row])
                    console.print(table)
                else:
                    console.print(f"[bold]{escape(sec['title'])}[/]", highlight=False)
                for note in sec.get("notes", []):
                    console.print(note, highlight=False, markup=False)
                console.print()
            return
        text = render(report, fmt_)
        if output is None:
            typer.echo(text, nl=False)
        else:
            write_atomically(output, text)
            console.print(f"wrote {output}")


def _freeze_libraries() -> None:
    """Import what a diagnosis uses and move the objects alive now out of the cyclic garbage
    collector's sight (``gc.freeze``).

    torch (with the ``torch._dynamo`` its optimisers load), scikit-learn and scipy leave a
    few hundred thousand objects that live as long as the process; every full collection,
    and the last one at exit, would scan them all again: about a second of a diagnosis
    that takes a few. (What the collector would have freed among them stays until exit.)
    """
    import gc

    import scipy.stats  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import torch._dynamo  # noqa: F401

    gc.freeze()
