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


#: Runs in progress that get a bar of their own; the others are counted on the runs bar. A
#: lockstep group has dozens of runs in progress at once: a bar each would not fit a
#: terminal, and redrawing them all several times a second costs a worker's share of a core.
RUN_BARS = 8


class _ProgressCallbacks:
    """A bar for the runs, one for all their rounds, and one per run in progress (at most
    :data:`RUN_BARS` shown; with more, the runs bar says how many are in progress)."""

    def __init__(self, progress: Progress, specs: list):
        self.progress = progress
        self.runs = progress.add_task("runs", total=len(specs))
        self.rounds = progress.add_task("rounds", total=sum(len(s.budget.schedule) + 1 for s in specs))
        self.active: dict[str, int] = {}  # run key -> its bar (hidden beyond RUN_BARS)
        self.shown: list[str] = []  # run keys whose bar is visible, in the order they started
        self.counted: dict[str, int] = {}  # run key -> its rounds counted on the rounds bar
        self.failures: list[str] = []

    def _count(self, key: str, rounds: int) -> None:
        """Bring the rounds bar's count of run ``key`` up to ``rounds``."""
        more = rounds - self.counted.get(key, 0)
        if more > 0:
            self.counted[key] = rounds
            self.progress.advance(self.rounds, more)

    def _describe_runs(self) -> None:
        hidden = len(self.active) - len(self.shown)
        self.progress.update(self.runs, description=f"runs ({len(self.active)} in progress)" if hidden else "runs")

    def run_started(self, spec, total_rounds, done_rounds):
        self._count(spec.key, done_rounds)
        task = self.active.get(spec.key)
        if task is not None:
            self.progress.update(task, total=total_rounds, completed=done_rounds)
            return
        visible = len(self.shown) < RUN_BARS
        self.active[spec.key] = self.progress.add_task(spec.label, total=total_rounds, completed=done_rounds,
                                                       visible=visible)
        if visible:
            self.shown.append(spec.key)
        self._describe_runs()

    def round_finished(self, spec, record):
        self._count(spec.key, record.round + 1)
        if spec.key in self.active:
            self.progress.advance(self.active[spec.key])

    def run_failed(self, spec, attempt, reason, will_retry):
        then = "retrying" if will_retry else "giving up"
        self.failures.append(f"{spec.label}: attempt {attempt} failed ({reason}); {then}")
        self.progress.console.print(f"[yellow]{self.failures[-1]}[/]", highlight=False)

    def run_finished(self, outcome):
        key = outcome.spec.key
        self.progress.advance(self.runs)
        if outcome.status == "finished":
            self._count(key, len(outcome.n_labeled))
        task = self.active.pop(key, None)
        if task is not None:
            self.progress.remove_task(task)
        if key in self.shown:
            self.shown.remove(key)
            waiting = [k for k in self.active if k not in self.shown]  # in the order they started
            if waiting:
                self.shown.append(waiting[0])
                self.progress.update(self.active[waiting[0]], visible=True)
        self._describe_runs()


def load_demo_config():
    text = resources.files("mmal_core.configs").joinpath("demo.yaml").read_text()
    import yaml

    return parse_config(yaml.safe_load(text), "<embedded demo config>")


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        config: Optional[Path] = typer.Argument(None, help="Experiment YAML. Without it, the embedded demo runs."),
        db: str = typer.Option(None, "--db", help="Results database (SQLite file). Default: ./mmal-results.db or $MMAL_DB."),
        executor: str = typer.Option("local", "--executor", help="Where runs execute: local (processes on this machine) or ray."),
        workers: Optional[int] = typer.Option(None, "--workers", help="Runs at a time. local: processes (default: CPU cores; 1 runs in this process); ray: tasks in flight (default: cluster CPUs)."),
        address: Optional[str] = typer.Option(None, "--address", help="ray: address of an existing cluster (default: start a local one on 127.0.0.1)."),
        retries: int = typer.Option(1, "--retries", help="Times a run whose worker died or raised is started again (its finished rounds are kept)."),
        gpu_fraction: Optional[float] = typer.Option(None, "--gpu-fraction", help="ray: GPUs reserved per run (default: 0.25 on a cluster with GPUs, else 0)."),
        lockstep: bool = typer.Option(True, "--lockstep/--no-lockstep", help="Train the runs that share dataset, model and budget together as one batched network (same results, faster) when the model supports it; --no-lockstep: one run at a time."),
    ) -> None:
        """Run every (dataset, strategy, seed) of CONFIG; re-running resumes where it stopped."""
        from ..runtime.executors import make_executor
        from ..loop import run_experiment, run_specs, summarize, validate_experiment
        from ..store import check_writable

        db = default_db(db)
        if config is None:
            cfg, source = load_demo_config(), "<embedded demo config>"
        else:
            cfg, source = load_config(config), str(config)
        check_writable(db)
        runner = make_executor(executor, workers, address, retries, gpu_fraction, lockstep)
        validate_experiment(cfg, source, devices_here=runner.runs_here)
        specs = run_specs(cfg)
        console.print(f"experiment [bold]{cfg.name}[/] ({len(specs)} runs, {runner.describe(len(specs))}) -> {db}")
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False,
        ) as progress:
            callbacks = _ProgressCallbacks(progress, specs)
            outcomes = run_experiment(cfg, db, callbacks, source, executor=runner)
        table = Table(title=f"{cfg.name}: final accuracy and AUBC, mean±std over seeds")
        for col in ("dataset", "strategy", "seeds", "final acc", "AUBC", "s"):
            text = col in ("dataset", "strategy")
            table.add_column(col, justify="left" if text else "right", no_wrap=not text,
                             overflow="fold" if text else "ellipsis",
                             min_width={"dataset": 21, "strategy": 16}.get(col))
        # Show dataset names alone unless two datasets of the config share a name.
        names = [d.name for d in cfg.dataset]
        short = {d.label: (d.name if names.count(d.name) == 1 else d.label) for d in cfg.dataset}
        for row in summarize([o for o in outcomes if o.status == "finished"]):
            table.add_row(
                short.get(row["dataset"], row["dataset"]), row["strategy"], str(row["seeds"]),
                f"{fmt(row['final_accuracy'])}±{fmt(row['final_accuracy_std'])}",
                f"{fmt(row['aubc'])}±{fmt(row['aubc_std'])}", f"{row['seconds']:.1f}",
            )
        console.print(table)
        failed = [o for o in outcomes if o.status != "finished"]
        retried = len(callbacks.failures) - len(failed)
        if retried > 0:
            console.print(f"{retried} failed attempt(s) were retried; every finished round was kept")
        for o in failed:
            console.print(f"[red]failed:[/] {o.spec.label}: {o.error} ({o.resumed_rounds} round(s) kept)", highlight=False)
        if failed:
            raise MmalError(f"{len(failed)} run(s) did not finish; run the same command again to resume")
