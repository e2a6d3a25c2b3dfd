"""`mmal report`: statistics checked against values computed by hand on a handmade table of
AUBCs, every section on a tiny real experiment, and bad input (one line, exit 2, nothing written).

The handmade fixture: two cells (``handmade`` with ``missing_rate`` 0.3 and 0.6), four seeds,
four strategies whose accuracy is the same in every round, so a run's AUBC is that accuracy:

    seed        0     1     2     3
    random    .50   .52   .54   .56
    A         random + [.01, .02, .03, .04]     (margin, unimodal)
    B         random - [.10, .11, .12, .13]     (entropy, unimodal)
    C         random + [.01, -.01, .02, -.01]   (modality_uncertainty, multimodal)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("statsmodels")
pytest.importorskip("scikit_posthocs")

from mmal_core import stats  # noqa: E402
from mmal_core.report import build_report  # noqa: E402
from mmal_core.report.render import layout, to_html, to_json, to_markdown  # noqa: E402
from mmal_core.report.synthetic import add_run  # noqa: E402
from mmal_core.store import Store  # noqa: E402
from _support import cli_in_process, digest, one_line_error, run_cli, tiny_config  # noqa: E402

RANDOM = np.array([0.50, 0.52, 0.54, 0.56])
OFFSETS = {"A": [0.01, 0.02, 0.03, 0.04], "B": [-0.10, -0.11, -0.12, -0.13], "C": [0.01, -0.01, 0.02, -0.01]}
NAMES = {"random": "random", "A": "margin", "B": "entropy", "C": "modality_uncertainty"}
COUNTS = [10, 20, 30]
T975_DF3 = 3.182446305284263  # t quantile 0.975 with 3 degrees of freedom (any t table)


def handmade_db(path, labels=None, unfinished=False, one_seed_cell=False):
    """The fixture above; ``labels`` renames strategies (for the escaping tests)."""
    labels = labels or {}
    with Store(path) as store:
        eid = store.experiment("handmade", "h1", {"seeds": [0, 1, 2, 3]}, {})
        for rate in (0.3, 0.6):
            for s, name in NAMES.items():
                values = RANDOM + (np.array(OFFSETS[s]) if s in OFFSETS else 0.0)
                for seed, v in enumerate(values):
                    extra = [{"modality_accuracy": {"m0": v - 0.1, "m1": v - 0.2}, "contribution": {"m0": 0.7, "m1": 0.3},
                              "imbalance": 0.4 + 0.01 * seed,
                              **({"query": {"class_histogram": {"0": 3, "1": 1}, "missing_fraction": {"m0": 0.25, "m1": 0.0},
                                            "difficulty": 0.5}} if r < len(COUNTS) - 1 else {})}
                             for r in range(len(COUNTS))]
                    status = "running" if (unfinished and s == "C" and seed == 3 and rate == 0.6) else "finished"
                    add_run(store, eid, dataset="handmade", params={"missing_rate": rate}, strategy=name,
                            label=labels.get(s, s), seed=seed, n_labeled=COUNTS, accuracy=[v] * len(COUNTS),
                            extra=extra, status=status)
        if one_seed_cell:
            for s, name in NAMES.items():
                add_run(store, eid, dataset="single", params={}, strategy=name, label=labels.get(s, s), seed=0,
                        n_labeled=COUNTS, accuracy=[0.5] * len(COUNTS))
    return path


def t_pvalue_df3(diffs) -> tuple[float, float, float, float]:
    """(mean, p, low, high) of a paired t-test with 4 pairs, by the closed-form t CDF for 3
    degrees of freedom: p = 1 - (2/pi) (x / (1 + x^2) + atan x), x = |t| / sqrt 3."""
    d = np.asarray(diffs, dtype=float)
    mean = d.mean()
    se = math.sqrt(((d - mean) ** 2).sum() / 3) / 2
    x = abs(mean / se) / math.sqrt(3)
    p = 1 - (2 / math.pi) * (x / (1 + x * x) + math.atan(x))
    return mean, p, mean - T975_DF3 * se, mean + T975_DF3 * se


def holm_by_hand(ps):
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out, running = [0.0] * len(ps), 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - k) * ps[i]))
        out[i] = running
    return out


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    path = handmade_db(tmp_path_factory.mktemp("report") / "handmade.db")
    with Store(path, readonly=True) as store:
        return build_report(store, store.resolve_experiment(None))


def test_paired_differences_tests_and_holm_match_hand_computation(handmade):
    cell = handmade["cells"][0]
    rows = {r["strategy"]: r for r in cell["rows"]}
    assert rows["random"]["difference"] is None
    by_hand = {s: t_pvalue_df3(OFFSETS[s]) for s in ("A", "B", "C")}
    adjusted = dict(zip(by_hand, holm_by_hand([by_hand[s][1] for s in by_hand])))
    for s, (mean, p, low, high) in by_hand.items():
        d = rows[s]["difference"]
        assert d["test"] == "paired t-test" and d["n"] == 4
        assert d["mean"] == pytest.approx(mean, abs=1e-12)
        assert d["p"] == pytest.approx(p, rel=1e-9)
        assert (d["low"], d["high"]) == (pytest.approx(low, rel=1e-6), pytest.approx(high, rel=1e-6))
        assert d["p_holm"] == pytest.approx(adjusted[s], rel=1e-9)
    # A's raw p (0.031) is below 0.05, but not after Holm (x2 = 0.061): no verdict of "better"
    assert by_hand["A"][1] < 0.05 < adjusted["A"]
    assert rows["A"]["difference"]["verdict"] == "no detectable difference"
    assert rows["B"]["difference"]["verdict"] == "worse"
    assert rows["C"]["difference"]["verdict"] == "no detectable difference"
    # Wilcoxon as a check: all four differences positive -> exact two-sided p = 2 / 2**4
    assert rows["A"]["difference"]["wilcoxon_p"] == pytest.approx(0.125)
    # AUBC of a constant curve is that constant; the bootstrap interval holds the mean
    assert rows["random"]["aubc"]["mean"] == pytest.approx(RANDOM.mean())
    assert rows["random"]["aubc"]["low"] <= RANDOM.mean() <= rows["random"]["aubc"]["high"]


def test_friedman_nemenyi_and_penalty_match_hand_computation(handmade):
    ranks = handmade["across"]["ranks"]
    # both cells order A > C > random > B: mean ranks 1, 2, 3, 4
    assert ranks["mean_ranks"] == {"random": 3.0, "A": 1.0, "B": 4.0, "C": 2.0}
    # chi2 = 12 N / (k (k+1)) sum R^2 - 3 N (k+1) = 24/20 * 30 - 30 = 6 with 3 degrees of freedom,
    # whose survival function is erfc(sqrt(x/2)) + sqrt(2x/pi) exp(-x/2)
    fr = ranks["friedman"]
    assert fr["statistic"] == pytest.approx(6.0)
    assert fr["p"] == pytest.approx(math.erfc(math.sqrt(3)) + math.sqrt(12 / math.pi) * math.exp(-3), rel=1e-9)
    # Demsar (2006), table 5: q_0.05 = 2.569 for 4 classifiers; CD = q sqrt(k (k+1) / (6 N))
    assert ranks["critical_difference"] == pytest.approx(2.569 * math.sqrt(20 / 12), rel=1e-3)
    # penalty: A beats random (p = 0.031) and B; random and C beat B; A vs C (p = 0.13) does not count
    p = handmade["across"]["penalty"]
    assert p["strategies"] == ["random", "A", "B", "C"] and p["n_cells"] == 2
    assert p["matrix"] == [[0, 0, 2, 0], [2, 0, 2, 0], [0, 0, 0, 0], [0, 0, 2, 0]]


def test_statistics_module_against_textbook_values():
    # Holm: p = (.01, .04, .03) -> (.03, .06, .06)
    assert stats.holm([0.01, 0.04, None, 0.03]) == [pytest.approx(0.03), pytest.approx(0.06), None, pytest.approx(0.06)]
    # identical rankings in 3 blocks of 3: chi2 = 6 with 2 degrees of freedom, p = exp(-3)
    fr = stats.friedman(np.array([[3, 2, 1], [3, 2, 1], [3, 2, 1]]))
    assert fr["statistic"] == pytest.approx(6.0) and fr["p"] == pytest.approx(math.exp(-3))
    assert stats.friedman(np.array([[1, 2], [2, 1]]))["p"] is None  # two strategies: no Friedman test
    # Demsar (2006) table 5: q_0.05 = 2.343 (k=3), 2.569 (k=4), 2.850 (k=6)
    for k, q in ((3, 2.343), (4, 2.569), (6, 2.850)):
        assert stats.nemenyi_critical_difference(k, 10) == pytest.approx(q * math.sqrt(k * (k + 1) / 60), rel=1e-3)
    one = stats.paired_comparison(np.array([0.6]), np.array([0.5]))
    assert one["p"] is None and one["test"].startswith("no test")
    same = stats.paired_comparison(np.array([1.5, 2.5, 3.5]), np.array([1.0, 2.0, 3.0]))  # t undefined
    assert same["p"] == pytest.approx(0.25) and same["low"] == same["high"] == 0.5
    # batched bootstrap: deterministic, interval around the mean, zero width for constant rows
    low, high = stats.bootstrap_intervals(np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]]))
    assert low[0] < 0.25 < high[0] and low[1] == high[1] == 0.5


def test_groups_severity_queries_and_findings(handmade):
    g = handmade["across"]["groups"]
    assert g["multimodal"] == ["C"] and g["unimodal"] == ["A", "B"]
    per_seed = np.array(OFFSETS["C"]) - (np.array(OFFSETS["A"]) + np.array(OFFSETS["B"])) / 2
    assert g["cells"][0]["difference"]["mean"] == pytest.approx(per_seed.mean())
    sev = handmade["across"]["severity"]
    assert len(sev) == 1 and sev[0]["param"] == "missing_rate" and sev[0]["values"] == [0.3, 0.6]
    assert set(sev[0]["series"]) == {"A", "B", "C"}
    q = handmade["cells"][0]["queries"]
    row = next(r for r in q["rows"] if r["strategy"] == "A")
    assert row["missing"] == {"m0": pytest.approx(0.25), "m1": 0.0} and row["classes"] == {"0": 0.75, "1": 0.25}
    assert row["difficulty"] == pytest.approx(0.5) and q["pool"] is None and "unavailable" in q["pool_note"]
    u = handmade["cells"][0]["utilization"]["rows"][0]
    assert u["contribution"]["m0"]["mean"] == pytest.approx(0.7) and u["imbalance"]["mean"] == pytest.approx(0.415)
    findings = " ".join(handmade["findings"])
    mean, _, low, high = t_pvalue_df3(OFFSETS["B"])
    assert f"B is worse than random by 0.115 AUBC [{-high:.3f}, {-low:.3f}]" in findings
    assert "A is better" not in findings
    assert "Friedman" in findings


def test_unfinished_runs_are_flagged_and_one_seed_gets_no_tests(tmp_path):
    path = handmade_db(tmp_path / "h.db", unfinished=True, one_seed_cell=True)
    with Store(path, readonly=True) as store:
        rep = build_report(store, store.resolve_experiment(None))
    second = rep["cells"][1]
    assert second["missing"] == [{"strategy": "C", "seeds": [3], "status": ["running"]}]
    assert next(r for r in second["rows"] if r["strategy"] == "C")["difference"]["n"] == 3
    single = rep["cells"][2]
    assert single["note"].startswith("one seed only: no tests")
    assert all(r["difference"] is None for r in single["rows"])
    assert any("one seed only" in f for f in rep["findings"])
    assert rep["runs"]["running"] == 1
    assert rep["findings"][0].startswith("1 of 36 runs are not finished")
    json.loads(to_json(rep))  # strict JSON


def test_labels_are_text_in_markdown_and_html(tmp_path):
    path = handmade_db(tmp_path / "h.db", labels={"A": "<script>alert(1)</script>", "C": "$x$"})
    with Store(path, readonly=True) as store:
        rep = build_report(store, store.resolve_experiment(None))
    page = to_html(layout(rep), "t")
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "$x$" in page
    md, plots = to_markdown(layout(rep), "r_files")
    assert "<script" not in md and "\\$x\\$" in md
    assert plots and all(p.png[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)


def test_synthetic_study_of_the_benchmark_builds_a_report(tmp_path):
    from mmal_core.report.synthetic import synthetic_study

    n = synthetic_study(tmp_path / "s.db", cells=4, strategies=[("random", "random"), ("margin", "margin"),
                                                               ("bmmal", "bmmal"), ("mystery", "not-installed")],
                        seeds=3, rounds=3)
    assert n == 48
    with Store(tmp_path / "s.db", readonly=True) as store:
        rep = build_report(store, store.resolve_experiment(None), pool_info=False)
    assert len(rep["cells"]) == 4 and rep["across"]["ranks"]["friedman"]["blocks"] == 4
    # a strategy whose plugin is not installed here belongs to neither group, and the report says so
    assert rep["strategies"][3] == {"label": "mystery", "name": "not-installed", "multimodal": None}
    assert rep["across"]["groups"]["unimodal"] == ["margin"] and rep["across"]["groups"]["multimodal"] == ["bmmal"]
    assert {s["param"] for s in rep["across"]["severity"]} == {"missing_rate", "mechanism"}
    md, _ = to_markdown(layout(rep, plots=False), None)
    assert "Severity curves" in md and "| mystery | not-installed | unknown (not installed here) |" in md
    assert any(v in md for v in ("(no detectable difference)", "(better)", "(worse)"))


# -- the command ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    """A real experiment: two missing rates x three strategies x two seeds, two query rounds."""
    folder = tmp_path_factory.mktemp("tiny-report")
    cfg = tiny_config(
        dataset=[{"name": "synthetic-missing", "params": {"n_train": 200, "n_test": 100, "missing_rate": r}}
                 for r in (0.3, 0.6)],
        model={"name": "fusion-mlp", "params": {"epochs": 4, "hidden": 8}},
        budget={"initial": 10, "per_round": 10, "rounds": 2},
        strategies=["random", "margin", "modality_uncertainty"], seeds=2)
    import yaml

    (folder / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    result = run_cli("run", str(folder / "tiny.yaml"), "--db", str(folder / "tiny.db"))
    assert result.returncode == 0, result.stderr[-2000:]
    return folder


SECTIONS = ("Findings", "Methods", "Cell 1: synthetic-missing", "Cell 2: synthetic-missing", "AUBC - random",
            "What each strategy queried", "Modality use of the final models", "Across cells",
            "Mean ranks, Friedman test and critical difference", "Pairwise penalty matrix",
            "Unimodal against multimodal strategies", "Modality use across cells", "Severity curves")


@pytest.mark.slow
def test_report_on_a_tiny_real_experiment_has_every_section(tiny_experiment, capsys):
    db = str(tiny_experiment / "tiny.db")
    html_path, md_path, json_path = (tiny_experiment / n for n in ("r.html", "r.md", "r.json"))
    for fmt, path in (("html", html_path), ("md", md_path), ("json", json_path)):
        code, out, err = cli_in_process(capsys, "report", "--db", db, "--format", fmt, "-o", str(path))
        assert code == 0, err
    page = html_path.read_text()
    for section in SECTIONS:
        assert section in page, section
    # curves and imbalance per cell, critical-difference diagram, one severity plot
    assert page.count('src="data:image/png;base64,') == 6
    assert "http://" not in page and "https://" not in page and "<script" not in page
    md = md_path.read_text()
    for section in SECTIONS:
        assert section in md, section
    pngs = sorted(p.name for p in (tiny_experiment / "r_files").iterdir())
    assert pngs == ["cell1-curves.png", "cell1-imbalance.png", "cell2-curves.png", "cell2-imbalance.png",
                    "critical-difference.png", "severity-1.png"]
    assert all(f"](r_files/{p})" in md for p in pngs)
    data = json.loads(json_path.read_text())
    assert data["runs"]["finished"] == 12 and len(data["cells"]) == 2
    cell = data["cells"][0]
    assert cell["queries"]["pool"]["missing"]["m0"] > 0  # the pool was loaded through the plugin registry
    assert {r["strategy"] for r in cell["rows"]} == {"random", "margin", "modality_uncertainty"}
    assert cell["utilization"]["rows"][0]["imbalance"] is not None
    assert data["strategies"][2] == {"label": "modality_uncertainty", "name": "modality_uncertainty", "multimodal": True}
    # standard output when -o is left out
    code, out, _ = cli_in_process(capsys, "report", "--db", db, "--format", "json")
    assert code == 0 and json.loads(out)["experiment"]["name"] == "tiny"


@pytest.mark.parametrize("args, needles", [
    (["--db", "{tmp}/nowhere.db"], ["--db", "no results database"]),
    (["--experiment", "nope"], ["--experiment nope", "no such experiment"]),
    (["--baseline", "randmo"], ["--baseline randmo", "did you mean 'random'"]),
    (["--alpha", "0"], ["--alpha", "between 0 and 1"]),
    (["--alpha", "1"], ["--alpha", "between 0 and 1"]),
    (["--alpha", "-0.5"], ["--alpha", "between 0 and 1"]),
    (["--alpha", "nan"], ["--alpha", "between 0 and 1"]),
    (["--format", "pdf"], ["--format pdf", "html, md, json"]),
    (["-o", "{tmp}/missing/r.html"], ["--output", "does not exist"]),
    (["-o", "{tmp}"], ["--output", "is a directory"]),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, args, needles):
    db = handmade_db(tmp_path / "h.db")

    def written():  # SQLite's own -wal/-shm files of a read-only open do not count
        return sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(("-wal", "-shm")))

    before = written()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out.html")]
    if "--db" not in args:
        args = ["--db", str(db), *args]
    one_line_error(cli_in_process(capsys, "report", *args, raw=True), *needles)
    assert written() == before


def test_output_onto_the_database_or_a_plot_folder_that_is_a_file(tmp_path, capsys):
    db = handmade_db(tmp_path / "h.db")
    before = digest(db)
    one_line_error(cli_in_process(capsys, "report", "--db", str(db), "-o", str(db), raw=True), "results database")
    assert digest(db) == before
    (tmp_path / "r_files").write_text("x")
    one_line_error(cli_in_process(capsys, "report", "--db", str(db), "-f", "md", "-o", str(tmp_path / "r.md"), raw=True),
                   "r_files", "is a file")
    assert not (tmp_path / "r.md").exists()


def test_missing_packages_name_the_extra(tmp_path, capsys, monkeypatch):
    from mmal_core import extras

    monkeypatch.setitem(extras.EXTRAS, "report", ("scipy", "mmal_no_such_package"))
    db = handmade_db(tmp_path / "h.db")
    one_line_error(cli_in_process(capsys, "report", "--db", str(db), "-o", str(tmp_path / "r.html"), raw=True),
                   "mmal_no_such_package", "pip install 'mmal[report]'")
    assert not (tmp_path / "r.html").exists()


def test_a_file_that_is_not_a_results_database(tmp_path, capsys):
    other = tmp_path / "notes.db"
    other.write_text("not sqlite")
    one_line_error(cli_in_process(capsys, "report", "--db", str(other), raw=True), f"--db {other}", "not an mmal")
    assert other.read_text() == "not sqlite"


def test_unwritable_output_folder(tmp_path, capsys):
    import os

    db = handmade_db(tmp_path / "h.db")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK) and os.geteuid() == 0:
            # root writes anywhere but in /proc
            target = Path("/proc") / "mmal-report.html"
        else:
            target = locked / "r.html"
        one_line_error(cli_in_process(capsys, "report", "--db", str(db), "-o", str(target), raw=True),
                       "--output", "cannot write")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_severity_axis_of_per_modality_list_parameters():
    from mmal_core.report.build import _severity_axis

    assert _severity_axis([0.6, 0.3]) == [0.6, 0.3]
    # missing_rate: [0.0, r] as the pitfall grid writes it: the element that varies is the axis
    assert _severity_axis([[0.0, 0.9], [0.0, 0.3]]) == [0.9, 0.3]
    assert _severity_axis([[0.1, 0.9], [0.0, 0.3]]) is None  # two elements vary: no single axis
    assert _severity_axis(["mcar", "class"]) is None and _severity_axis([[1, 2], [1, 2, 3]]) is None


# --- plots: nothing cut at the figure's edges, nothing covering the curves ---------------------------
@pytest.fixture
def figures(monkeypatch):
    """Plot builders return the matplotlib Figure instead of PNG bytes."""
    from mmal_core.report import render

    monkeypatch.setattr(render, "_png", lambda draw, size=(6.4, 3.6), margins=None, fit=False:
                        render._figure(draw, size, margins, True, fit))
    return render


def _inside(fig, artist) -> bool:
    box = artist.get_window_extent(fig.canvas.get_renderer())
    return box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.width and box.y1 <= fig.bbox.height


LONG = ["batchbald(mc_samples=20, batch_candidates=512, pool_subsample=4000)", "random",
        "modality_uncertainty(aggregate=max, temperature=2.0)", "margin", "entropy(mc_samples=30, dropout=0.2)"]


def test_critical_difference_labels_are_inside_the_figure(figures):
    n = len(LONG)
    p = np.full((n, n), 0.5)
    p[0, 1] = p[1, 0] = 0.001
    ranks = {"strategies": LONG, "mean_ranks": {s: 1.0 + 0.8 * i for i, s in enumerate(LONG)},
             "nemenyi_p": p.tolist(), "critical_difference": 1.2}
    fig = figures._cd_plot(ranks)
    labels = [t for t in fig.axes[0].texts if any(s in t.get_text() for s in LONG)]
    assert len(labels) == n
    assert all(_inside(fig, t) for t in labels), [t.get_text() for t in labels if not _inside(fig, t)]


def test_severity_legend_beside_the_curves_and_inside_the_figure(figures):
    values = [0.1, 0.3, 0.5, 0.7]
    series = {s: [{"value": v, "mean": 0.01 * k - 0.02 * v, "low": 0.01 * k - 0.02 * v - 0.01,
                   "high": 0.01 * k - 0.02 * v + 0.01} for v in values] for k, s in enumerate(LONG)}
    sev = {"dataset": "synthetic-missing", "param": "missing_rate", "values": values, "numeric": True,
           "series": series, "fixed": {"mechanism": "class"}}
    fig = figures._severity_plot(sev, "random")
    ax = fig.axes[0]
    legend = ax.get_legend()
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1  # not over the curves
    assert _inside(fig, legend) and _inside(fig, ax.title)


def test_shapley_share_over_rounds_has_bands(figures):
    from matplotlib.collections import PolyCollection

    x = [20, 40, 60]
    band = lambda m: {"n_labeled": x, "mean": [m] * 3, "low": [m - 0.05] * 3, "high": [m + 0.05] * 3}  # noqa: E731
    over = {s: {"imbalance": band(0.3), "contribution": {"image": band(0.6), "text": band(0.4)}} for s in ("random", "margin")}
    fig = figures._utilization_plot("cell", over)
    right = fig.axes[1]
    bands = [c for c in right.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 4  # two strategies x two modalities
    lows = sorted(round(float(b.get_paths()[0].vertices[:, 1].min()), 2) for b in bands)
    assert lows == [0.35, 0.35, 0.55, 0.55]
