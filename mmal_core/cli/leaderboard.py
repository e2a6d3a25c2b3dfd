"""``mmal leaderboard``: rank strategies on the benchmarks found in a results database."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import MmalError, did_you_mean
from .common import console, default_db


def register(app: typer.Typer) -> None:
    @app.command()
    def leaderboard(
        db: str = typer.Option(None, "--db", help="Results database. Default: ./mmal-results.db or $MMAL_DB."),
        benchmark: Optional[str] = typer.Option(None, "--benchmark", "-b", help="Only this benchmark."),
        fmt_: str = typer.Option("table", "--format", "-f", help="table, md, csv, json or html."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (default: standard output)."),
        metric: str = typer.Option("accuracy", "--metric", "-m", help="Rank by the AUBC of this registered metric (mmal list metrics), in its direction; e.g. log_likelihood, macro_f1, imbalance."),
    ) -> None:
        """Strategies ranked by AUBC (of test accuracy, or of --metric) per benchmark, average rank
        and the pairwise penalty matrix."""
        from ..leaderboard.benchmarks import all_benchmarks, get_benchmark
        from ..leaderboard.ranking import build_leaderboard, curves_from_store
        from ..leaderboard.render import FORMATS, render, render_table
        from ..extras import require_extra
        from ..store import Store
        from .results import write_atomically

        if fmt_ not in FORMATS:
            raise MmalError(f"--format {fmt_}: expected one of {', '.join(FORMATS)}{did_you_mean(fmt_, FORMATS)}")
        if output is not None and fmt_ == "table":
            raise MmalError("--output: the table format prints to the terminal; use --format md, csv, json or html")
        require_extra("report", what="mmal leaderboard", modules=("scipy", *(["matplotlib"] if fmt_ == "html" else [])))
        from ..plugins import check_metric_path

        check_metric_path(metric, "--metric")
        benches = all_benchmarks()
        selected = [get_benchmark(benchmark)] if benchmark else list(benches.values())
        with Store(default_db(db), readonly=True) as store:
            curves = curves_from_store(store, selected)
        if not curves:
            what = f"benchmark '{benchmark}'" if benchmark else "any benchmark"
            raise MmalError(f"--db {default_db(db)}: no finished runs of {what}; run `mmal bench run NAME --strategy S` first")
        lb = build_leaderboard(curves, benches, metric=metric)
        if not lb["benchmarks"]:
            raise MmalError(f"--metric {metric}: no finished benchmark run in {default_db(db)} records it in every round "
                            "(runs made before the metric was installed do not)")
        if fmt_ == "table":
            render_table(lb, console)
            return
        text = render(lb, fmt_)
        if output is None:
            typer.echo(text, nl=False)
        else:
            write_atomically(output, text)
            console.print(f"wrote {output}")
