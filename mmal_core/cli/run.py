"""``mmal run``: run or resume an experiment."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..config import load_config, parse_config
from ..errors import MmalError
from .common import console, default_db, fmt


class _ProgressCallbacks:
    def __init__(self, progress: Progress, n_runs: int):
        self.progress = progress
        self.runs = progress.add_task("runs", total=n_runs)
        self.rounds = progress.add_task("rounds", total=1)

    def run_started(self, spec, total_rounds, done_rounds):
        self.progress.update(self.rounds, description=spec.label, total=total_rounds, completed=done_rounds)

    def round_finished(self, spec, record):
        self.progress.advance(self.rounds)

    def run_finished(self, outcome):
        self.progress.advance(self.runs)


def load_demo_config():
    text = resources.files("mmal_core.configs").joinpath("demo.yaml").read_text()
    import yaml

    return parse_config(yaml.safe_load(text), "<embedded demo config>")


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        config: Optional[Path] = typer.Argument(None, help="Experiment YAML. Without it, the embedded demo runs."),
        db: str = typer.Option(None, "--db", help="Results database (SQLite file). Default: ./mmal-results.db or $MMAL_DB."),
    ) -> None:
        """Run every (dataset, strategy, seed) of CONFIG; re-running resumes where it stopped."""
        from ..loop import run_experiment, run_specs, summarize, validate_experiment
        from ..store import check_writable

        db = db or default_db()
        if config is None:
            cfg, source = load_demo_config(), "<embedded demo config>"
        else:
            cfg, source = load_config(config), str(config)
        check_writable(db)
        validate_experiment(cfg, source)
        specs = run_specs(cfg)
        console.print(f"experiment [bold]{cfg.name}[/] ({len(specs)} runs) -> {db}")
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False,
        ) as progress:
            outcomes = run_experiment(cfg, db, _ProgressCallbacks(progress, len(specs)), source)
        table = Table(title=f"{cfg.name}: final accuracy and AUBC (mean ± std over seeds)")
        for col in ("dataset", "strategy", "seeds", "final accuracy", "AUBC", "seconds"):
            table.add_column(col, justify="left" if col in ("dataset", "strategy") else "right")
        for row in summarize(outcomes):
            table.add_row(
                row["dataset"], row["strategy"], str(row["seeds"]),
                f"{fmt(row['final_accuracy'])} ± {fmt(row['final_accuracy_std'])}",
                f"{fmt(row['aubc'])} ± {fmt(row['aubc_std'])}", f"{row['seconds']:.1f}",
            )
        console.print(table)
        failed = [o for o in outcomes if o.status != "finished"]
        if failed:
            raise MmalError(f"{len(failed)} run(s) did not finish; run the same command again to resume")
