"""``mmal show`` and ``mmal export``: read results back from the database."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.table import Table

from ..errors import MmalError, did_you_mean
from ..files import honour_umask
from ..metrics import aubc, flatten, get_metric
from ..plugins import higher_is_better
from ..store import Store
from .common import console, default_db, fmt


def learning_curves(store: Store, experiment_id: int, metric: str):
    """{(dataset, strategy): {n_labeled: [values over seeds]}} for a dotted metric path."""
    curves: dict[tuple[str, str], dict[int, list[float]]] = {}
    names: set[str] = set()
    for run in store.iter_runs_with_rounds(experiment_id):
        key = (run["dataset"], run["strategy_label"])
        for r in run["rounds"]:
            names.update(flatten(r["metrics"]))
            names.update(f"timings.{k}" for k in r["timings"])
            value = r["timings"].get(metric[8:]) if metric.startswith("timings.") else get_metric(r["metrics"], metric)
            if isinstance(value, (int, float)):
                curves.setdefault(key, {}).setdefault(r["n_labeled"], []).append(float(value))
    return curves, names


def curve_table(experiment: str, experiment_id: int, metric: str, curves) -> Table:
    """A rich table of learning curves (mean ± std over seeds per labeled count, and AUBC).

    Rows are grouped by dataset and, within one, sorted best first by AUBC in the metric's
    direction (:func:`mmal_core.metrics.higher_is_better`).
    """
    counts = sorted({n for c in curves.values() for n in c})
    higher = higher_is_better(metric)
    direction = "higher" if higher else "lower"
    table = Table(title=f"{experiment} (#{experiment_id}): {metric} ({direction} is better), "
                        "mean ± std over seeds, by number of labels; best AUBC first")
    table.add_column("dataset")
    table.add_column("strategy", style="bold")
    for n in counts:
        table.add_column(str(n), justify="right")
    table.add_column("AUBC", justify="right")
    rows = []
    for (dataset, strategy), curve in curves.items():
        cells = []
        for n in counts:
            v = curve.get(n)
            cells.append(f"{fmt(float(np.mean(v)))}±{fmt(float(np.std(v)), 2)}" if v else "-")
        xs = [n for n in counts if n in curve]
        area = aubc(xs, [float(np.mean(curve[n])) for n in xs])
        rank = -area if higher else area
        rows.append(((dataset, np.isnan(area), 0.0 if np.isnan(area) else rank, strategy), [dataset, strategy, *cells, fmt(area)]))
    for _, row in sorted(rows, key=lambda r: r[0]):
        table.add_row(*row)
    return table


def temporary_beside(path: Path, not_regular: str = "; leave out --output to print to standard output") -> tuple[int, str]:
    """A new temporary file in ``path``'s folder, ``(fd, name)``, once ``path`` is known to be a
    place a regular file can be renamed to; otherwise a one-line error naming ``--output``.

    not_regular: what the error adds when ``path`` exists but is not a regular file.
    """
    if path.is_dir():
        raise MmalError(f"--output {path}: is a directory, expected a file path")
    if os.path.lexists(path) and not path.is_file():
        # A device, FIFO or dangling link would be replaced by the rename: refuse instead.
        raise MmalError(f"--output {path}: not a regular file{not_regular}")
    if not path.parent.is_dir():
        raise MmalError(f"--output {path}: the folder {path.parent} does not exist")
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise MmalError(f"--output {path}: cannot write in the folder {path.parent} ({err.strerror or err})") from None


def write_atomically(path: Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes) to ``path`` through a temporary file + rename: never half-written."""
    path = Path(path)
    fd, tmp = temporary_beside(path)
    try:
        binary = isinstance(text, bytes)  # PNG files beside a Markdown report
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")) as fh:
            fh.write(text)
        honour_umask(tmp)  # a file for people, like one made by open(): not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise MmalError(f"--output {path}: cannot write it ({err.strerror or err})") from None
        raise


def export_document(store: Store, experiment_id: int, timings: bool = False) -> dict:
    """The experiment as a plain dict. Wall-clock fields (timings, dates) only with ``timings``,
    so that the same config run twice exports identical documents."""
    exp = store.experiment_row(experiment_id)
    runs = []
    for run in store.iter_runs_with_rounds(experiment_id):
        if not timings:
            run = {k: v for k, v in run.items() if k not in ("started_at", "finished_at")}
            run["rounds"] = [{k: v for k, v in r.items() if k != "timings"} for r in run["rounds"]]
        runs.append(run)
    return {
        "experiment": {k: exp[k] for k in ("id", "name", "config_hash", "config", "environment")},
        "runs": runs,
    }


def export_csv(doc: dict) -> str:
    rows = []
    for run in doc["runs"]:
        for r in run["rounds"]:
            row = {
                "experiment": doc["experiment"]["name"], "run_id": run["id"], "dataset": run["dataset"],
                "dataset_params": json.dumps(run["dataset_params"], sort_keys=True),
                "strategy": run["strategy"], "strategy_label": run["strategy_label"],
                "strategy_params": json.dumps(run["strategy_params"], sort_keys=True),
                "seed": run["seed"], "status": run["status"], "round": r["round"], "n_labeled": r["n_labeled"],
            }
            row.update({f"metric.{k}": v for k, v in flatten(r["metrics"]).items()})
            row.update({f"timing.{k}": v for k, v in r.get("timings", {}).items()})
            row["queried_ids"] = " ".join(str(i) for i in r["queried_ids"])
            rows.append(row)
    fields: list[str] = []
    for row in rows:
        for k in row:
            if k not in fields:
                fields.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def register(app: typer.Typer) -> None:
    @app.command()
    def show(
        db: str = typer.Option(None, "--db", help="Results database. Default: ./mmal-results.db or $MMAL_DB."),
        experiment: Optional[str] = typer.Option(None, "--experiment", "-e", help="Experiment name or id (default: newest)."),
        metric: str = typer.Option("accuracy", "--metric", "-m", help="Metric path: any registered metric (mmal list metrics), e.g. accuracy, macro_f1, log_likelihood, modality_accuracy.m0, shapley_accuracy (one table per modality), query.difficulty, timings.train."),
    ) -> None:
        """Learning curves as a table: mean ± std of a metric over seeds at each labeled count, and
        the AUBC per strategy, best first in the metric's direction."""
        with Store(default_db(db), readonly=True) as store:
            eid = store.resolve_experiment(experiment)
            exp = store.experiment_row(eid)
            curves, names = learning_curves(store, eid, metric)
            # A group of metrics (``shapley_accuracy``): one table per member (``.m0``, ``.m1``).
            members = [] if curves else sorted({n[len(metric) + 1:].split(".")[0] for n in names if n.startswith(metric + ".")})
            groups = [(f"{metric}.{m}", learning_curves(store, eid, f"{metric}.{m}")[0]) for m in members]
        groups = [(path, c) for path, c in groups if c]
        if not curves and not groups:
            hint = did_you_mean(metric, names)
            raise MmalError(f"--metric {metric}: no such metric in experiment '{exp['name']}'{hint}; available: {', '.join(sorted(names))}")
        for path, c in groups or [(metric, curves)]:
            console.print(curve_table(exp["name"], eid, path, c))

    @app.command()
    def export(
        db: str = typer.Option(None, "--db", help="Results database. Default: ./mmal-results.db or $MMAL_DB."),
        fmt_: str = typer.Option("json", "--format", "-f", help="json or csv."),
        experiment: Optional[str] = typer.Option(None, "--experiment", "-e", help="Experiment name or id (default: newest)."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (default: standard output)."),
        timings: bool = typer.Option(False, "--timings", help="Include wall-clock timings and dates (not reproducible)."),
    ) -> None:
        """Every run with its rounds, metrics, timings and queried sample ids."""
        if fmt_ not in ("json", "csv"):
            raise MmalError(f"--format {fmt_}: expected json or csv{did_you_mean(fmt_, ['json', 'csv'])}")
        with Store(default_db(db), readonly=True) as store:
            doc = export_document(store, store.resolve_experiment(experiment), timings)
        text = json.dumps(doc, indent=2, sort_keys=True) + "\n" if fmt_ == "json" else export_csv(doc)
        if output is None:
            typer.echo(text, nl=False)
        else:
            write_atomically(output, text)
            console.print(f"wrote {output}")
