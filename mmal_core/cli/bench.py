"""``mmal bench``: list the frozen benchmarks and run a strategy on one."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from ..errors import MmalError
from .common import console, default_db, fmt


def _strategy_spec(name: str, params: Optional[str]):
    from ..config import PluginSpec

    values = {}
    if params:
        try:
            values = json.loads(params)
        except ValueError as err:
            raise MmalError(f"--strategy-params: expected a JSON object, got {params!r} ({err})") from None
        if not isinstance(values, dict):
            raise MmalError(f"--strategy-params: expected a JSON object, got {params!r}")
    if not name:  # PluginSpec would raise a pydantic ValidationError (a traceback)
        raise MmalError("--strategy: expected a strategy name (see `mmal list strategies`), got an empty string")
    return PluginSpec(name=name, params=values)


def register(app: typer.Typer) -> None:
    bench_app = typer.Typer(help="Frozen, hashed benchmarks: list them, run a strategy on one.", no_args_is_help=True)
    app.add_typer(bench_app, name="bench")

    @bench_app.command("list")
    def list_() -> None:
        """Every registered benchmark with its hash, setting and whether it can run here."""
        from ..leaderboard.benchmarks import all_benchmarks
        from ..plugins import benchmark_availability

        table = Table(title="benchmarks (results are comparable only within one hash)")
        for col in ("name", "hash", "budget", "seeds", "available"):
            table.add_column(col, no_wrap=col in ("name", "hash", "budget"), overflow="fold")
        for name, bench in sorted(all_benchmarks().items()):
            ok, why = benchmark_availability(bench)
            budget = f"{bench.budget.initial}+{'+'.join(str(s) for s in bench.budget.schedule)}"
            table.add_row(name, bench.hash, budget, ",".join(map(str, bench.seeds)), "yes" if ok else f"no: {why}")
        console.print(table)

    @bench_app.command("run")
    def run(
        name: str = typer.Argument(..., help="Benchmark name (see `mmal bench list`)."),
        strategy: str = typer.Option(..., "--strategy", "-s", help="Strategy name (see `mmal list strategies`)."),
        strategy_params: Optional[str] = typer.Option(None, "--strategy-params", help='Strategy parameters as JSON, e.g. \'{"mc_samples": 10}\'.'),
        plugin_version: Optional[str] = typer.Option(None, "--strategy-plugin-version", help="Require this version of the strategy's distribution."),
        db: str = typer.Option(None, "--db", help="Results database. Default: ./mmal-results.db or $MMAL_DB."),
    ) -> None:
        """Run STRATEGY on benchmark NAME for all its seeds (re-running resumes)."""
        from ..leaderboard.benchmarks import get_benchmark, run_benchmark
        from ..store import check_writable

        db = default_db(db)
        bench = get_benchmark(name)
        spec = _strategy_spec(strategy, strategy_params)
        check_writable(db)
        console.print(f"benchmark [bold]{bench.name}[/] (hash {bench.hash}), strategy {spec.label} -> {db}")
        outcomes = run_benchmark(bench, spec, db, plugin_version=plugin_version)
        table = Table(title=f"{bench.name}: {spec.label}")
        for col in ("seed", "final accuracy", "AUBC"):
            table.add_column(col, justify="right")
        from ..metrics import aubc

        for o in outcomes:
            table.add_row(str(o.spec.seed), fmt(o.accuracy[-1] if o.accuracy else None),
                          fmt(aubc(o.n_labeled, o.accuracy)))
        console.print(table)
        failed = [o for o in outcomes if o.status != "finished"]
        if failed:
            raise MmalError(f"{len(failed)} run(s) did not finish; run the same command again to resume")
        console.print(f"experiment: [bold]{bench.experiment_name(spec)}[/]  "
                      f"(submit with `mmal submit '{bench.experiment_name(spec)}' --db {db} --to URL --token-file PATH`)",
                      highlight=False, soft_wrap=True)
