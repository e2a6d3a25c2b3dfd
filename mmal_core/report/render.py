"""The report as HTML (one self-contained page), Markdown (+ PNG files) or JSON.

The report dict is first laid out as a list of blocks (heading, paragraph, list, table,
plot); the HTML and Markdown writers only translate blocks, so both formats show the same
content. Every string from the database (strategy labels, dataset names, parameter values)
is escaped: HTML-escaped on the page, table-escaped in Markdown, and drawn literally in plots
(:func:`mmal_core.pages.plot_text`, so ``$x$`` is not read as mathtext).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..pages import html_page, plot_text

FORMATS = ("html", "md", "json")


# -- blocks -----------------------------------------------------------------------------------------
@dataclass
class Plot:
    name: str  # file stem (safe characters only)
    alt: str
    png: bytes


Block = tuple  # ("h", level, text) | ("p", text) | ("list", [text]) | ("table", caption, headers, rows) | ("plot", Plot)


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _p(v: float | None) -> str:
    return "-" if v is None else (f"{v:.3g}" if v >= 0.001 else f"{v:.1e}")


def _ci(d: dict[str, Any] | None, digits: int = 3) -> str:
    if not d or d.get("mean") is None or not math.isfinite(d["mean"]):
        return "-"
    return f"{_f(d['mean'], digits)} [{_f(d['low'], digits)}, {_f(d['high'], digits)}]"


def _diff(d: dict[str, Any] | None) -> str:
    if not d or not d.get("n"):
        return "-"
    if d["p"] is None:
        return f"{d['mean']:+.3f}"
    return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def _point(pt: dict[str, Any] | None) -> str:
    """A severity-curve point: difference [interval] (verdict)."""
    if pt is None:
        return "-"
    if pt.get("verdict") in (None, "no test"):
        return f"{pt['mean']:+.3f} (no test)"
    return f"{pt['mean']:+.3f} [{pt['low']:+.3f}, {pt['high']:+.3f}] ({pt['verdict']})"


# -- plots ------------------------------------------------------------------------------------------
def _figure(draw: Callable[[Any, bool], None], size, margins: dict | None, legend: bool, fit: bool = False):
    """The figure ``draw(ax, legend)`` makes, with ``margins`` (None: the defaults; {}: as drawn).

    ``fit``: widen and heighten the figure by whatever the axes' contents (labels drawn
    beside the axes, a legend outside them, the title) stick out of it, keeping the axes'
    size, so nothing is cut at an edge. It measures the text once (a layout, not a draw), so
    only the few figures with labels of unknown length ask for it; the others keep fixed
    margins (tight_layout would draw every figure twice, and a 2,000-run study has dozens).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    margins = {"left": 0.11, "right": 0.98, "bottom": 0.14, "top": 0.91} if margins is None else margins
    fig = Figure(figsize=size, dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    draw(ax, legend)
    if margins:
        fig.subplots_adjust(**margins)
    if fit:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # glyphs missing from the font
            box = ax.get_tightbbox(fig.canvas.get_renderer())
        w, h = fig.bbox.width, fig.bbox.height
        pad = 4.0  # pixels
        out = [max(0.0, pad - box.x0), max(0.0, box.x1 - w + pad), max(0.0, pad - box.y0), max(0.0, box.y1 - h + pad)]
        if any(out):
            pos = ax.get_position()
            w2, h2 = w + out[0] + out[1], h + out[2] + out[3]
            fig.set_size_inches(w2 / fig.dpi, h2 / fig.dpi)
            ax.set_position([(pos.x0 * w + out[0]) / w2, (pos.y0 * h + out[2]) / h2, pos.width * w / w2, pos.height * h / h2])
    return fig


def _png(draw: Callable[[Any, bool], None], size=(6.4, 3.6), margins: dict | None = None, fit: bool = False) -> bytes:
    """Render ``draw(ax, legend)`` to PNG bytes (see :func:`_figure`); if a label still fails to
    render, again without the legend rather than failing the report."""

    def once(legend: bool) -> bytes:
        fig = _figure(draw, size, margins, legend, fit)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # glyphs missing from the font
            buf = io.BytesIO()
            fig.savefig(buf, format="png", metadata={"Software": None})
        return buf.getvalue()

    try:
        return once(True)
    except Exception:  # noqa: BLE001 - a label matplotlib cannot draw must not break the report
        return once(False)


def _bands_plot(title: str, ylabel: str, curves: dict[str, dict[str, Any]]) -> bytes:
    def draw(ax, legend):
        for s, c in curves.items():
            x = np.array(c["n_labeled"])
            ax.plot(x, c["mean"], marker="o", markersize=3, label=plot_text(s))
            ax.fill_between(x, c["low"], c["high"], alpha=0.15)
        ax.set_xlabel("labeled samples")
        ax.set_ylabel(ylabel)
        ax.set_title(plot_text(title), fontsize=9)
        ax.grid(alpha=0.3)
        if legend and curves:
            ax.legend(fontsize=6, loc="best")

    return _png(draw)


def _utilization_plot(title: str, over_rounds: dict[str, dict[str, Any]]) -> bytes:
    """Left: imbalance degree over rounds per strategy (mean and band over seeds); right: the
    Shapley share of each modality (one line style per modality, mean and band over seeds)."""
    styles = ["-", "--", ":", "-."]

    def draw(ax, legend):
        fig = ax.figure
        ax.set_position([0.08, 0.14, 0.38, 0.76])
        right = fig.add_axes([0.58, 0.14, 0.38, 0.76])
        for k, (s, v) in enumerate(over_rounds.items()):
            color = f"C{k % 10}"
            b = v["imbalance"]
            ax.plot(b["n_labeled"], b["mean"], color=color, marker="o", markersize=3, label=plot_text(s))
            ax.fill_between(b["n_labeled"], b["low"], b["high"], color=color, alpha=0.15)
            for j, (m, c) in enumerate(sorted(v.get("contribution", {}).items())):
                right.plot(c["n_labeled"], c["mean"], color=color, linestyle=styles[j % len(styles)],
                           label=plot_text(m) if k == 0 else None)
                if c.get("low") is not None and c.get("high") is not None:
                    right.fill_between(c["n_labeled"], c["low"], c["high"], color=color, alpha=0.1, linewidth=0)
        ax.set_xlabel("labeled samples")
        ax.set_ylabel("imbalance degree")
        ax.set_title(plot_text(title), fontsize=8, loc="left")
        right.set_xlabel("labeled samples")
        right.set_ylabel("Shapley share (line style: modality)")
        right.set_ylim(-0.02, 1.02)
        for a in (ax, right):
            a.grid(alpha=0.3)
        if legend:
            ax.legend(fontsize=6, loc="best")
            if right.get_legend_handles_labels()[0]:
                right.legend(fontsize=6, loc="best")

    return _png(draw, size=(9.0, 3.6), margins={})


def _severity_plot(sev: dict[str, Any], baseline: str) -> bytes:
    def draw(ax, legend):
        values = sev["values"]
        xs = values if sev["numeric"] else list(range(len(values)))
        pos = {json.dumps(v, sort_keys=True): x for v, x in zip(values, xs)}
        for s, points in sev["series"].items():
            x = np.array([pos[json.dumps(p["value"], sort_keys=True)] for p in points], dtype=float)
            m = np.array([p["mean"] for p in points], dtype=float)
            lo = np.array([p["low"] if p["low"] is not None else np.nan for p in points], dtype=float)
            hi = np.array([p["high"] if p["high"] is not None else np.nan for p in points], dtype=float)
            ax.errorbar(x, m, yerr=[np.nan_to_num(m - lo), np.nan_to_num(hi - m)], marker="o", markersize=3,
                        capsize=2, label=plot_text(s))
        ax.axhline(0, color="black", linewidth=0.8)
        if not sev["numeric"]:
            ax.set_xticks(xs, [plot_text(str(v)) for v in values])
        ax.set_xlabel(plot_text(sev["param"]))
        ax.set_ylabel(f"AUBC - {plot_text(baseline)}")
        fixed = ", ".join(f"{k}={v}" for k, v in sorted(sev["fixed"].items()))
        ax.set_title(plot_text(sev["dataset"] + (f" ({fixed})" if fixed else "")), fontsize=8)
        ax.grid(alpha=0.3)
        if legend:  # beside the axes: inside, it covered the curves
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)

    return _png(draw, fit=True)


def _cd_plot(ranks: dict[str, Any]) -> bytes | None:
    """Critical-difference diagram (Demšar 2006) drawn by scikit-posthocs from the mean ranks and
    the Nemenyi p-values."""
    if ranks.get("nemenyi_p") is None:
        return None
    import pandas as pd
    import scikit_posthocs as sp

    labels = [plot_text(s) for s in ranks["strategies"]]
    mean = pd.Series([ranks["mean_ranks"][s] for s in ranks["strategies"]], index=labels)
    sig = pd.DataFrame(ranks["nemenyi_p"], index=labels, columns=labels)

    def draw(ax, legend):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sp.critical_difference_diagram(mean, sig, ax=ax, label_props={"fontsize": 7})
        cd = ranks.get("critical_difference")
        ax.set_title("mean rank by AUBC (1 = best); bars join strategies not different (Nemenyi)"
                     + (f"; CD = {cd:.2f}" if cd else ""), fontsize=8)

    return _png(draw, size=(7.0, 1.0 + 0.25 * len(labels)), margins={"left": 0.2, "right": 0.8, "bottom": 0.02, "top": 0.85},
                fit=True)


# -- layout -----------------------------------------------------------------------------------------
def _cell_blocks(i: int, c: dict[str, Any], report: dict[str, Any], plots: bool) -> list[Block]:
    base = report["baseline"]
    out: list[Block] = [("h", 2, f"Cell {i + 1}: {c['label']}")]
    out.append(("p", f"{c['seeds']} seed(s) finished per strategy at most."))
    if c["note"]:
        out.append(("p", f"Note: {c['note']}."))
    for m in c["missing"]:
        out.append(("p", f"Missing seeds: {m['strategy']} lacks seed(s) {', '.join(map(str, m['seeds']))} "
                         f"({', '.join(m['status'])})."))
    rows = []
    for r in c["rows"]:
        d = r["difference"]
        rows.append([r["strategy"], str(len(r["seeds"])), _ci(r["aubc"]), _ci(r["final_accuracy"]), _f(r["mean_rank"], 2),
                     _diff(d), _p(d["p"]) if d else "-", _p(d.get("p_holm")) if d else "-",
                     _p(d["wilcoxon_p"]) if d else "-", (d.get("verdict") or d["test"]) if d else "baseline" if r["strategy"] == base else "-"])
    metric = report.get("metric", "accuracy")
    of = "" if metric == "accuracy" else (
        f" (AUBC of {metric}, {'higher' if report.get('higher_is_better', True) else 'lower'} is better)")
    out.append(("table", f"AUBC and final accuracy (mean [{report['confidence']:.0%} bootstrap CI]){of}; "
                         f"difference of AUBC to {base} paired by seed [{1 - report['alpha']:.0%} t interval]",
                ["strategy", "seeds", "AUBC", "final accuracy", "mean rank", f"AUBC - {base}", "p (t)",
                 "p (Holm)", "p (Wilcoxon)", "verdict"], rows))
    if plots and c["curves"]:
        out.append(("plot", Plot(f"cell{i + 1}-curves", f"learning curves of {c['label']}",
                                 _bands_plot(c["label"], "test accuracy" if metric == "accuracy" else metric,
                                             c["curves"]))))
    q = c["queries"]
    pool = q["pool"]
    heads = ["strategy", "picks"] + [f"missing {m}" for m in q["modalities"]] + ["difficulty", "class shares", "balance"]
    qrows = []
    if pool:
        qrows.append(["(pool)", "-"] + [_f(pool["missing"].get(m), 3) for m in q["modalities"]]
                     + [_f(pool["difficulty"]), " ".join(f"{k}:{v:.2f}" for k, v in pool["classes"].items()), "-"])
    for r in q["rows"]:
        qrows.append([r["strategy"], str(r["picks"])] + [_f(r["missing"].get(m)) for m in q["modalities"]]
                     + [_f(r["difficulty"]), " ".join(f"{k}:{v:.2f}" for k, v in r["classes"].items()),
                        _f(r["balance"], 2)])
    out.append(("table", "What each strategy queried (all query rounds and seeds): fraction of picks missing each "
                         "modality, mean difficulty, class shares and balance (normalised entropy, 1 = even); "
                         "the first row is the pool" + ("" if pool else f" ({q['pool_note']})"), heads, qrows))
    u = c["utilization"]
    if u["rows"]:
        mods = u["modalities"]
        heads = ["strategy"] + [f"Shapley share {m}" for m in mods] + ["imbalance"] + [f"only {m} present" for m in mods]
        urows = [[r["strategy"]] + [_ci(r["contribution"].get(m)) for m in mods] + [_ci(r["imbalance"])]
                 + [_ci(r["modality_accuracy"].get(m)) for m in mods] for r in u["rows"]]
        out.append(("table", "Modality use of the final models (mean [bootstrap CI] over seeds)", heads, urows))
        if plots and u["over_rounds"]:
            out.append(("plot", Plot(f"cell{i + 1}-imbalance", f"imbalance degree and Shapley shares over rounds, "
                                     f"{c['label']}", _utilization_plot(c["label"], u["over_rounds"]))))
    return out


def layout(report: dict[str, Any], plots: bool = True) -> list[Block]:
    """The report as blocks; ``plots=False`` leaves the plots out (Markdown on standard output)."""
    exp = report["experiment"]
    out: list[Block] = [("h", 1, f"mmal report: {exp['name']}")]
    runs = report["runs"]
    out.append(("p", f"Experiment {exp['name']} (id {exp['id']}, config {exp['config_hash']}): "
                     + ", ".join(f"{v} {k}" for k, v in runs.items()) + f" run(s); seeds {', '.join(map(str, report['seeds']))}; "
                     f"baseline {report['baseline']}; alpha {report['alpha']}."))
    out.append(("table", "Strategies", ["strategy", "registered name", "kind"],
                [[s["label"], s["name"], {True: "multimodal", False: "unimodal"}.get(s["multimodal"], "unknown (not installed here)")]
                 for s in report["strategies"]]))
    out.append(("h", 2, "Findings"))
    out.append(("list", report["findings"]))
    out.append(("h", 2, "Methods"))
    out.append(("list", [f"{k}: {v}" for k, v in report["methods"].items()]))
    for i, c in enumerate(report["cells"]):
        out += _cell_blocks(i, c, report, plots)

    across = report["across"]
    out.append(("h", 2, "Across cells"))
    ranks = across["ranks"]
    fr = ranks["friedman"]
    out.append(("h", 3, "Mean ranks, Friedman test and critical difference"))
    text = (f"Friedman chi2 = {fr['statistic']:.3f}, p = {_p(fr['p'])} over {fr['blocks']} cells and "
            f"{fr['treatments']} strategies" if fr["p"] is not None else fr["test"])
    if ranks["left_out"]:
        text += f"; left out (not every strategy finished there): {'; '.join(ranks['left_out'])}"
    if ranks.get("critical_difference"):
        text += f"; Nemenyi critical difference {ranks['critical_difference']:.3f} at alpha {report['alpha']}"
    out.append(("p", text + "."))
    if ranks["mean_ranks"]:
        out.append(("table", "Mean rank by AUBC over cells (1 = best)", ["strategy", "mean rank"],
                    [[s, _f(r, 2)] for s, r in sorted(ranks["mean_ranks"].items(), key=lambda kv: kv[1])]))
    if plots:
        png = _cd_plot(ranks)
        if png:
            out.append(("plot", Plot("critical-difference", "critical-difference diagram", png)))
    p = across["penalty"]
    out.append(("h", 3, "Pairwise penalty matrix (Ash et al. 2020)"))
    out.append(("table", f"Row beat column: cells' worth of rounds in which the row was significantly better "
                         f"(paired t-test over seeds, p < {p['alpha']}; {p['n_cells']} cells)",
                [""] + p["strategies"], [[s] + [_f(v, 2) for v in line] for s, line in zip(p["strategies"], p["matrix"])]))
    g = across["groups"]
    out.append(("h", 3, "Unimodal against multimodal strategies"))
    out.append(("p", f"Multimodal: {', '.join(g['multimodal']) or 'none'}. Unimodal: {', '.join(g['unimodal']) or 'none'} "
                     f"(the baseline {report['baseline']} is in neither group)."))
    grow = [[x["cell"], _diff(x["difference"]), _p(x["difference"]["p"]) if x["difference"] else "-",
             _p(x["difference"].get("p_holm")) if x["difference"] else "-",
             (x["difference"].get("verdict") or x["difference"]["test"]) if x["difference"] else "no test"]
            for x in g["cells"]]
    out.append(("table", "Mean AUBC of the multimodal group minus the unimodal group, paired by seed "
                         "(positive: multimodal higher); Holm over cells",
                ["cell", "difference", "p (t)", "p (Holm)", "verdict"], grow))
    o = g["overall"]
    out.append(("p", f"Across cells: {o['test']}" + (f", mean {o['mean']:+.3f} [{o['low']:+.3f}, {o['high']:+.3f}], "
                                                       f"p = {_p(o['p'])}: {o['verdict']}" if o.get("p") is not None else "") + "."))
    if across["utilization"]:
        out.append(("h", 3, "Modality use across cells"))
        out.append(("table", "Final imbalance degree, mean over cells [bootstrap CI over cells]", ["strategy", "imbalance"],
                    [[r["strategy"], _ci(r["imbalance"])] for r in across["utilization"]]))
    if across["severity"]:
        out.append(("h", 3, "Severity curves"))
        for k, sev in enumerate(across["severity"]):
            fixed = ", ".join(f"{a}={b}" for a, b in sorted(sev["fixed"].items()))
            out.append(("p", f"{sev['dataset']}: AUBC - {report['baseline']} against {sev['param']}"
                             + (f" ({fixed})" if fixed else "")))
            if plots:
                out.append(("plot", Plot(f"severity-{k + 1}", f"severity curve of {sev['dataset']} over {sev['param']}",
                                         _severity_plot(sev, report["baseline"]))))
            values = [json.dumps(v) if not isinstance(v, str) else v for v in sev["values"]]
            srows = []
            for s, points in sev["series"].items():
                by = {json.dumps(pt["value"], sort_keys=True): pt for pt in points}
                cells = [by.get(json.dumps(v, sort_keys=True)) for v in sev["values"]]
                srows.append([s] + [_point(pt) for pt in cells])
            out.append(("table", "", ["strategy"] + [f"{sev['param']}={v}" for v in values], srows))
    return out


# -- writers ----------------------------------------------------------------------------------------
_CSS_EXTRA = ("body{max-width:100em}img{max-width:100%;display:block;margin:0.5em 0 1.5em}td{white-space:nowrap}"
              ".wide{overflow-x:auto;max-width:100%}")


def to_html(blocks: list[Block], title: str) -> str:
    """One self-contained page: plots as base64 PNG, no scripts, no external resources."""
    e = html.escape
    out = [f"<style>{_CSS_EXTRA}</style>"]
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
        elif kind == "p":
            out.append(f"<p>{e(b[1])}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            _, caption, heads, rows = b
            out.append("<div class=\"wide\"><table>" + (f"<caption>{e(caption)}</caption>" if caption else "") + "<thead><tr>"
                       + "".join(f"<th class=\"s\">{e(h)}</th>" if j == 0 else f"<th>{e(h)}</th>" for j, h in enumerate(heads))
                       + "</tr></thead><tbody>")
            for row in rows:
                out.append("<tr>" + "".join(f"<td class=\"s\">{e(c)}</td>" if j == 0 else f"<td>{e(c)}</td>"
                                            for j, c in enumerate(row)) + "</tr>")
            out.append("</tbody></table></div>")
        elif kind == "plot":
            plot: Plot = b[1]
            out.append(f"<img class=\"plot\" alt=\"{e(plot.alt)}\" "
                       f"src=\"data:image/png;base64,{base64.b64encode(plot.png).decode('ascii')}\">")
    return html_page(title, "\n".join(out))


def _md(text: Any) -> str:
    """Markdown-safe text: HTML and Markdown specials escaped, one line."""
    text = html.escape(str(text), quote=False).replace("\n", " ")
    return re.sub(r"([\\`*_{}\[\]|#$!~])", r"\\\1", text)


def to_markdown(blocks: list[Block], plot_dir: str | None) -> tuple[str, list[Plot]]:
    """Markdown text and the plots to write as ``plot_dir/NAME.png`` (linked from the text)."""
    out: list[str] = []
    plots: list[Plot] = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append("#" * b[1] + " " + _md(b[2]) + "\n")
        elif kind == "p":
            out.append(_md(b[1]) + "\n")
        elif kind == "list":
            out += [f"- {_md(x)}" for x in b[1]] + [""]
        elif kind == "table":
            _, caption, heads, rows = b
            if caption:
                out.append(f"*{_md(caption)}*\n")
            out.append("| " + " | ".join(_md(h) for h in heads) + " |")
            out.append("|" + "---|" * len(heads))
            out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows] + [""]
        elif kind == "plot" and plot_dir is not None:
            plot = b[1]
            plots.append(plot)
            out.append(f"![{_md(plot.alt)}]({plot_dir}/{plot.name}.png)\n")
    return "\n".join(out) + "\n", plots


def to_json(report: dict[str, Any]) -> str:
    """Every number, as strict JSON (non-finite numbers become null)."""
    def clean(v):
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v

    return json.dumps(clean(report), indent=2, sort_keys=True, allow_nan=False) + "\n"
