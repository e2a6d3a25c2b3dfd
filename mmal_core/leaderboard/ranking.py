"""Leaderboards: rank strategies on benchmarks from their learning curves.

Input is a list of :class:`Curve` (one per benchmark, strategy and seed: the labeled count
and the metrics of every round), from the local results database
(:func:`curves_from_store`) or from verified submissions on the server. Output is a plain
JSON-able dict (:func:`build_leaderboard`) that the renderers turn into a rich table,
Markdown, CSV, JSON or one self-contained HTML page.

Per benchmark, strategies are ranked by the normalised area under the budget curve of test
accuracy (AUBC, :func:`mmal_core.metrics.aubc`), or of any registered metric
(``build_leaderboard(..., metric=NAME)``, ``mmal leaderboard --metric NAME``) in that metric's
direction, given as the mean over seeds with a 95%
percentile-bootstrap interval (:func:`scipy.stats.bootstrap`), next to the final accuracy
and the mean rank (strategies ranked per seed by AUBC, ranks averaged over seeds).

Across benchmarks: the average of the per-benchmark ranks, and the pairwise penalty matrix of
Ash et al. (2020, "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds",
section 5): for every benchmark and every round, a two-sided paired t-test over seeds
(:func:`scipy.stats.ttest_rel`, level 0.05) compares the accuracies of strategies ``i`` and
``j``; when ``i`` is significantly better, entry ``(i, j)`` gains ``1 / n_rounds`` of that
benchmark. An entry is thus the number of benchmarks' worth of rounds in which ``i`` beat
``j``; a column's sum says how often a strategy was beaten.

Modality utilisation (final-round accuracy with a single modality present and, when the
round metrics hold them, the normalised Shapley contributions) sits next to accuracy, so a
strategy that wins while ignoring a modality is visible.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from .. import stats
from ..errors import MmalError, did_you_mean
from ..metrics import aubc, metric_series, records_metric
from ..stats import bootstrap_interval, penalty_counts, ranks_desc, significantly_better  # noqa: F401 (re-exported)

FORMATS = ("table", "md", "csv", "json", "html")

#: Significance level of the paired t-tests of the penalty matrix.
ALPHA = stats.ALPHA
#: Confidence level and resamples of the bootstrap intervals.
CONFIDENCE = stats.CONFIDENCE
N_RESAMPLES = stats.N_RESAMPLES


@dataclass
class Curve:
    """The learning curve of one run.

    n_labeled: (n_rounds,) labeled-set size per round; metrics: one dict per round.
    """

    benchmark: str
    strategy: str
    seed: int
    n_labeled: list[int]
    metrics: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def accuracy(self) -> np.ndarray:
        """(n_rounds,) test accuracy per round."""
        return np.array([float(m.get("accuracy", float("nan"))) for m in self.metrics], dtype=np.float64)

    def values(self, path: str) -> np.ndarray:
        """(n_rounds,) values of the metric ``path`` (``modality_accuracy.m0``) per round."""
        return metric_series(self.metrics, path)

    def records(self, path: str) -> bool:
        """True when every round holds a number under ``path`` (runs from before a metric existed do not)."""
        return records_metric(self.metrics, path)


def require(*modules: str, what: str) -> None:
    """Raise :class:`MmalError` naming the pip package when an optional dependency is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise MmalError(f"{what} needs the Python package(s) {', '.join(missing)}: pip install {' '.join(missing)}")


# -- collecting ----------------------------------------------------------------------------------
def curves_from_store(store, benchmarks: Iterable) -> list[Curve]:
    """Curves of every finished run in ``store`` that belongs to one of ``benchmarks``.

    A run belongs to a benchmark when its setting matches (:meth:`Benchmark.matches_run`) and
    it has all the benchmark's rounds. When the same (benchmark, strategy, seed) was run more
    than once (in several experiments), the newest run counts.
    """
    benchmarks = list(benchmarks)
    latest: dict[tuple[str, str, int], Curve] = {}
    for run in store.runs():
        if run["status"] != "finished":
            continue
        for bench in benchmarks:
            if not bench.matches_run(run):
                continue
            rounds = store.rounds(run["id"])
            if [r.n_labeled for r in rounds] != bench.labeled_counts():
                continue
            latest[(bench.name, run["strategy_label"], run["seed"])] = Curve(
                bench.name, run["strategy_label"], int(run["seed"]),
                [r.n_labeled for r in rounds], [r.metrics for r in rounds],
                {"run_id": run["id"], "experiment_id": run["experiment_id"]},
            )
    return list(latest.values())


# -- statistics ----------------------------------------------------------------------------------
def _final_dict(curves: list[Curve], key: str) -> dict[str, float] | None:
    """Mean over seeds of the final round's ``metrics[key]`` (a dict modality -> value)."""
    acc: dict[str, list[float]] = {}
    for c in curves:
        value = c.metrics[-1].get(key) if c.metrics else None
        if not isinstance(value, dict):
            return None
        for m, v in value.items():
            if isinstance(v, (int, float)):
                acc.setdefault(m, []).append(float(v))
    return {m: float(np.mean(v)) for m, v in sorted(acc.items())} if acc else None


# -- the leaderboard ---------------------------------------------------------------------------------
def build_leaderboard(curves: list[Curve], benchmarks: dict[str, Any] | None = None, metric: str = "accuracy",
                      higher_is_better: bool | None = None) -> dict[str, Any]:
    """Rank the strategies of ``curves``; returns a JSON-able dict.

    benchmarks: name -> :class:`mmal_core.benchmarks.Benchmark`, for the hash and summary
    shown with each table (optional).
    metric: the metric path ranked by (AUBC, mean rank, penalty matrix, curves); curves whose
    rounds do not all record it are left out. higher_is_better: its direction (default: the
    registered metric's, :func:`mmal_core.metrics.higher_is_better`). ``final_accuracy`` stays
    the final test accuracy whatever the metric.

    Keys: ``benchmarks`` (list, one per benchmark with ``rows`` ranked by AUBC and ``curves``
    for the plots), ``overall`` (average rank per strategy) and ``penalty`` (strategies,
    matrix (S, S), and the number of benchmarks counted).
    """
    from ..plugins import higher_is_better as direction

    benchmarks = benchmarks or {}
    higher = direction(metric) if higher_is_better is None else bool(higher_is_better)
    if metric != "accuracy":  # runs from before the metric existed cannot be ranked by it
        curves = [c for c in curves if c.records(metric)]
    by_bench: dict[str, dict[str, dict[int, Curve]]] = {}
    for c in curves:
        by_bench.setdefault(c.benchmark, {}).setdefault(c.strategy, {})[c.seed] = c
    strategies = sorted({c.strategy for c in curves})
    index = {s: i for i, s in enumerate(strategies)}
    penalty = np.zeros((len(strategies), len(strategies)))
    bench_ranks: dict[str, list[float]] = {s: [] for s in strategies}
    tables = []
    for bname in sorted(by_bench):
        runs = by_bench[bname]
        rows = []
        per_seed_aubc: dict[int, dict[str, float]] = {}
        for strategy, seeds in runs.items():
            areas = np.array([aubc(c.n_labeled, c.values(metric)) for c in seeds.values()])
            finals = np.array([c.accuracy[-1] for c in seeds.values()])
            low, high = bootstrap_interval(areas)
            for seed, c in seeds.items():
                per_seed_aubc.setdefault(seed, {})[strategy] = aubc(c.n_labeled, c.values(metric))
            ordered = [seeds[s] for s in sorted(seeds)]
            rows.append({
                "strategy": strategy,
                "seeds": sorted(seeds),
                "aubc": float(areas.mean()),
                "aubc_low": low,
                "aubc_high": high,
                "final_accuracy": float(finals.mean()),
                "final_accuracy_std": float(finals.std()),
                "modality_accuracy": _final_dict(ordered, "modality_accuracy"),
                "contribution": _final_dict(ordered, "contribution"),
                "meta": next(iter(seeds.values())).meta,
            })
        # mean rank: rank the strategies on every seed, average over the seeds they ran
        seed_ranks: dict[str, list[float]] = {}
        for values in per_seed_aubc.values():
            for s, r in ranks_desc(values, higher).items():
                seed_ranks.setdefault(s, []).append(r)
        for row in rows:
            row["mean_rank"] = float(np.mean(seed_ranks[row["strategy"]]))
        overall = ranks_desc({row["strategy"]: row["aubc"] for row in rows}, higher)
        for row in rows:
            row["rank"] = overall[row["strategy"]]
            bench_ranks[row["strategy"]].append(overall[row["strategy"]])
        rows.sort(key=lambda r: (r["rank"], r["strategy"]))

        # pairwise penalty: round by round, paired over the seeds both strategies ran
        n_rounds = max(len(c.n_labeled) for seeds in runs.values() for c in seeds.values())
        names = sorted(runs)
        shares = penalty_counts({s: {seed: c.values(metric) for seed, c in runs[s].items()} for s in names},
                                higher_is_better=higher)
        for (i, j), share in shares.items():
            penalty[index[i], index[j]] += share

        plot = {}
        for strategy in names:
            seeds = runs[strategy]
            xs = sorted({n for c in seeds.values() for n in c.n_labeled})
            mean, std = [], []
            for n in xs:
                vals = [c.values(metric)[c.n_labeled.index(n)] for c in seeds.values() if n in c.n_labeled]
                mean.append(float(np.mean(vals)))
                std.append(float(np.std(vals)))
            plot[strategy] = {"n_labeled": xs, "mean": mean, "std": std}
        bench = benchmarks.get(bname)
        tables.append({
            "name": bname,
            "metric": metric,
            "hash": getattr(bench, "hash", None),
            "summary": getattr(bench, "summary", ""),
            "n_rounds": n_rounds,
            "rows": rows,
            "curves": plot,
        })
    counted = [s for s in strategies if bench_ranks[s]]
    overall_rows = sorted(
        ({"strategy": s, "average_rank": float(np.mean(bench_ranks[s])), "benchmarks": len(bench_ranks[s])}
         for s in counted),
        key=lambda r: (r["average_rank"], r["strategy"]),
    )
    return {
        "metric": metric,
        "higher_is_better": higher,
        "benchmarks": tables,
        "overall": overall_rows,
        "penalty": {"strategies": strategies, "matrix": penalty.round(6).tolist(), "n_benchmarks": len(tables),
                    "alpha": ALPHA},
    }


# -- renderers -----------------------------------------------------------------------------------------
def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _utilisation(row: dict[str, Any]) -> str:
    parts = []
    if row.get("modality_accuracy"):
        parts.append("only " + " ".join(f"{m}={_f(v, 2)}" for m, v in row["modality_accuracy"].items()))
    if row.get("contribution"):
        parts.append("shapley " + " ".join(f"{m}={_f(v, 2)}" for m, v in row["contribution"].items()))
    return "; ".join(parts) or "-"


COLUMNS = ("rank", "strategy", "AUBC [95% CI]", "final acc", "mean rank", "seeds", "modality utilisation")


def columns(lb: dict[str, Any]) -> tuple[str, ...]:
    """The table's column headers: the AUBC column names the metric ranked by when it is not accuracy."""
    metric = lb.get("metric", "accuracy")
    if metric == "accuracy":
        return COLUMNS
    direction = "higher" if lb.get("higher_is_better", True) else "lower"
    return COLUMNS[:2] + (f"AUBC {metric} ({direction} is better) [95% CI]",) + COLUMNS[3:]


def _cells(row: dict[str, Any]) -> list[str]:
    return [
        _f(row["rank"], 1), row["strategy"],
        f"{_f(row['aubc'])} [{_f(row['aubc_low'])}, {_f(row['aubc_high'])}]",
        f"{_f(row['final_accuracy'])} ± {_f(row['final_accuracy_std'])}",
        _f(row["mean_rank"], 2), str(len(row["seeds"])), _utilisation(row),
    ]


def render_table(lb: dict[str, Any], console) -> None:
    """Print the leaderboard as rich tables on ``console``."""
    from rich.table import Table

    for b in lb["benchmarks"]:
        table = Table(title=f"{b['name']}" + (f" (hash {b['hash']})" if b.get("hash") else ""))
        for col in columns(lb):
            table.add_column(col, justify="left" if col in ("strategy", "modality utilisation") else "right")
        for row in b["rows"]:
            table.add_row(*_cells(row))
        console.print(table)
    if lb["overall"]:
        table = Table(title="across benchmarks: average rank (1 = best)")
        for col in ("strategy", "average rank", "benchmarks"):
            table.add_column(col)
        for r in lb["overall"]:
            table.add_row(r["strategy"], _f(r["average_rank"], 2), str(r["benchmarks"]))
        console.print(table)
        p = lb["penalty"]
        table = Table(title=f"pairwise penalty (Ash et al. 2020): row beat column, in benchmarks' worth of rounds (paired t-test, p < {p['alpha']})")
        table.add_column("")
        for s in p["strategies"]:
            table.add_column(s, justify="right")
        for s, line in zip(p["strategies"], p["matrix"]):
            table.add_row(s, *[_f(v, 2) for v in line])
        console.print(table)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(lb: dict[str, Any]) -> str:
    """The leaderboard as Markdown tables."""
    out = []
    for b in lb["benchmarks"]:
        out.append(f"## {_md_escape(b['name'])}" + (f" (hash `{b['hash']}`)" if b.get("hash") else "") + "\n")
        out.append("| " + " | ".join(_md_escape(c) for c in columns(lb)) + " |")
        out.append("|" + "---|" * len(COLUMNS))
        for row in b["rows"]:
            out.append("| " + " | ".join(_md_escape(c) for c in _cells(row)) + " |")
        out.append("")
    if lb["overall"]:
        out.append("## Across benchmarks\n")
        out.append("| strategy | average rank | benchmarks |\n|---|---|---|")
        for r in lb["overall"]:
            out.append(f"| {_md_escape(r['strategy'])} | {_f(r['average_rank'], 2)} | {r['benchmarks']} |")
        out.append("")
        p = lb["penalty"]
        out.append(f"### Pairwise penalty matrix (row beat column; paired t-test, p < {p['alpha']})\n")
        out.append("| | " + " | ".join(_md_escape(s) for s in p["strategies"]) + " |")
        out.append("|---|" + "---|" * len(p["strategies"]))
        for s, line in zip(p["strategies"], p["matrix"]):
            out.append(f"| {_md_escape(s)} | " + " | ".join(_f(v, 2) for v in line) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def render_csv(lb: dict[str, Any]) -> str:
    """One CSV row per (benchmark, strategy)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["benchmark", "hash", "rank", "strategy", "aubc" if lb.get("metric", "accuracy") == "accuracy"
                     else f"aubc_{lb['metric']}", "aubc_low", "aubc_high", "final_accuracy",
                     "final_accuracy_std", "mean_rank", "seeds", "modality_accuracy", "contribution"])
    for b in lb["benchmarks"]:
        for row in b["rows"]:
            writer.writerow([
                b["name"], b.get("hash") or "", row["rank"], row["strategy"], row["aubc"], row["aubc_low"],
                row["aubc_high"], row["final_accuracy"], row["final_accuracy_std"], row["mean_rank"],
                " ".join(str(s) for s in row["seeds"]),
                json.dumps(row["modality_accuracy"], sort_keys=True) if row["modality_accuracy"] else "",
                json.dumps(row["contribution"], sort_keys=True) if row["contribution"] else "",
            ])
    return buf.getvalue()


def render_json(lb: dict[str, Any]) -> str:
    """The leaderboard dict as indented JSON."""
    return json.dumps(lb, indent=2, sort_keys=True, default=str) + "\n"


def plot_text(text: str) -> str:
    """``text`` as matplotlib shows it literally: ``$`` would start mathtext (and a malformed
    formula fails the whole figure) and a leading ``_`` hides a legend entry."""
    text = str(text).replace("$", r"\$")
    return "\u200b" + text if text.startswith("_") else text


def learning_curve_png(bench: dict[str, Any]) -> str:
    """A learning-curve plot (mean accuracy ± std over seeds per strategy) as base64 PNG.

    Strategy labels come from submitters: they are drawn literally (:func:`plot_text`), and
    should one still fail to render, the plot is drawn without the legend rather than failing
    the page.
    """
    from matplotlib.figure import Figure

    def draw(legend: bool) -> str:
        fig = Figure(figsize=(6.4, 3.6), dpi=90)
        ax = fig.add_subplot(1, 1, 1)
        for strategy, c in sorted(bench["curves"].items()):
            x, m, s = np.array(c["n_labeled"]), np.array(c["mean"]), np.array(c["std"])
            ax.plot(x, m, marker="o", markersize=3, label=plot_text(strategy))
            ax.fill_between(x, m - s, m + s, alpha=0.15)
        ax.set_xlabel("labeled samples")
        metric = bench.get("metric", "accuracy")
        ax.set_ylabel("test accuracy" if metric == "accuracy" else plot_text(metric))
        ax.set_title(plot_text(bench["name"]))
        ax.grid(alpha=0.3)
        if bench["curves"] and legend:
            ax.legend(fontsize=7, loc="lower right")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. glyphs missing from the font
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", metadata={"Software": None})
        return base64.b64encode(buf.getvalue()).decode("ascii")

    try:
        return draw(legend=True)
    except Exception:  # noqa: BLE001 - a label matplotlib cannot render must not break the page
        return draw(legend=False)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}
td.s,th.s{text-align:left}
caption{font-weight:bold;text-align:left;padding:0.3em 0}
code{background:#f3f3f3;padding:0 0.2em}
.muted{color:#777}
"""


def html_page(title: str, body: str) -> str:
    """A complete HTML document (``title`` is escaped; ``body`` must already be safe HTML)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def html_sections(lb: dict[str, Any], link: Callable[[dict[str, Any]], str | None] | None = None) -> str:
    """The leaderboard's tables and plots as HTML; every user-supplied string is escaped.

    link: optional function row -> URL; the strategy cell then links there.
    """
    e = html.escape
    out = []
    if not lb["benchmarks"]:
        out.append("<p class=\"muted\">No results yet.</p>")
    for b in lb["benchmarks"]:
        hash_ = f" <span class=\"muted\">hash <code>{e(b['hash'])}</code></span>" if b.get("hash") else ""
        out.append(f"<section class=\"benchmark\" id=\"bench-{e(b['name'])}\"><h2>{e(b['name'])}{hash_}</h2>")
        if b.get("summary"):
            out.append(f"<p>{e(b['summary'])}</p>")
        out.append("<table class=\"leaderboard\"><thead><tr>"
                   + "".join(f"<th class=\"{'s' if c in ('strategy', 'modality utilisation') else ''}\">{e(c)}</th>" for c in columns(lb))
                   + "</tr></thead><tbody>")
        for row in b["rows"]:
            cells = _cells(row)
            url = link(row) if link else None
            strategy = f"<a href=\"{e(url)}\">{e(cells[1])}</a>" if url else e(cells[1])
            tds = [f"<td>{e(cells[0])}</td>", f"<td class=\"s strategy\">{strategy}</td>"]
            tds += [f"<td>{e(c)}</td>" for c in cells[2:6]] + [f"<td class=\"s\">{e(cells[6])}</td>"]
            out.append("<tr>" + "".join(tds) + "</tr>")
        out.append("</tbody></table>")
        out.append(f"<img class=\"learning-curve\" alt=\"learning curves of {e(b['name'])}\" "
                   f"src=\"data:image/png;base64,{learning_curve_png(b)}\">")
        out.append("</section>")
    if lb["overall"]:
        out.append("<section><h2>Across benchmarks</h2><table class=\"overall\"><thead><tr>"
                   "<th class=\"s\">strategy</th><th>average rank</th><th>benchmarks</th></tr></thead><tbody>")
        for r in lb["overall"]:
            out.append(f"<tr><td class=\"s\">{e(r['strategy'])}</td><td>{_f(r['average_rank'], 2)}</td>"
                       f"<td>{r['benchmarks']}</td></tr>")
        out.append("</tbody></table>")
        p = lb["penalty"]
        out.append(f"<table class=\"penalty\"><caption>Pairwise penalty matrix (Ash et al. 2020): row beat column, "
                   f"in benchmarks' worth of rounds (paired t-test over seeds, p &lt; {p['alpha']})</caption><thead><tr><th></th>"
                   + "".join(f"<th>{e(s)}</th>" for s in p["strategies"]) + "</tr></thead><tbody>")
        for s, line in zip(p["strategies"], p["matrix"]):
            out.append(f"<tr><th class=\"s\">{e(s)}</th>" + "".join(f"<td>{_f(v, 2)}</td>" for v in line) + "</tr>")
        out.append("</tbody></table></section>")
    return "\n".join(out)


def render_html(lb: dict[str, Any], title: str = "mmal leaderboard") -> str:
    """One self-contained HTML page (plots embedded as base64 PNG)."""
    return html_page(title, f"<h1>{html.escape(title)}</h1>\n" + html_sections(lb))


def render(lb: dict[str, Any], fmt: str) -> str:
    """Render to ``md``, ``csv``, ``json`` or ``html`` text."""
    if fmt == "md":
        return render_markdown(lb)
    if fmt == "csv":
        return render_csv(lb)
    if fmt == "json":
        return render_json(lb)
    if fmt == "html":
        return render_html(lb)
    raise MmalError(f"--format {fmt}: expected one of {', '.join(FORMATS)}{did_you_mean(fmt, FORMATS)}")
