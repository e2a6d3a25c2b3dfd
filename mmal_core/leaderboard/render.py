"""The renderers of a leaderboard: terminal table, Markdown, CSV, JSON and HTML with plots."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import warnings
from typing import Any, Callable

import numpy as np

from ..errors import MmalError, did_you_mean
from ..pages import html_page, plot_text

FORMATS = ("table", "md", "csv", "json", "html")


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
