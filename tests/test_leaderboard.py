"""Local leaderboards: AUBC ranking with bootstrap intervals, mean rank, the Ash et al. penalty
matrix, utilisation columns and the table/md/csv/json/html renderers."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from mmal_core import MmalError
from mmal_core.leaderboard.ranking import Curve, build_leaderboard, curves_from_store
from mmal_core.leaderboard.render import render, render_html
from mmal_core.stats import bootstrap_interval, significantly_better
from mmal_core.metrics import aubc
from serverkit import TINY_BENCHMARK
from mmal_core.store import Store
from _support import cli_in_process  # noqa: E402

COUNTS = [10, 20, 30, 40]


def _curves(benchmark: str, strategy: str, level: float, seeds=range(5), noise=0.01, utilisation=None):
    rng = np.random.default_rng(abs(hash((benchmark, strategy))) % 2**32)
    out = []
    for seed in seeds:
        acc = level + 0.05 * np.arange(len(COUNTS)) + rng.normal(0, noise, len(COUNTS))
        metrics = [{"accuracy": float(a), "modality_accuracy": {"m0": float(a) - 0.1, "m1": 0.3}} for a in acc]
        if utilisation:
            for m in metrics:
                m["contribution"] = dict(utilisation)
        out.append(Curve(benchmark, strategy, seed, list(COUNTS), metrics))
    return out


def test_a_clearly_better_strategy_ranks_first_and_wins_every_round():
    curves = (_curves("b1", "strong", 0.7) + _curves("b1", "weak", 0.5)
              + _curves("b2", "strong", 0.6) + _curves("b2", "weak", 0.4))
    lb = build_leaderboard(curves)
    for table in lb["benchmarks"]:
        assert [r["strategy"] for r in table["rows"]] == ["strong", "weak"]
        strong = table["rows"][0]
        assert strong["rank"] == 1.0 and strong["mean_rank"] == 1.0
        assert strong["aubc_low"] <= strong["aubc"] <= strong["aubc_high"]
        assert strong["aubc_high"] - strong["aubc_low"] < 0.05
        expected = np.mean([aubc(c.n_labeled, c.accuracy) for c in curves
                            if c.benchmark == table["name"] and c.strategy == "strong"])
        assert strong["aubc"] == pytest.approx(expected)
        assert strong["seeds"] == [0, 1, 2, 3, 4]
    assert [r["strategy"] for r in lb["overall"]] == ["strong", "weak"]
    assert lb["overall"][0]["average_rank"] == 1.0 and lb["overall"][1]["average_rank"] == 2.0
    p = lb["penalty"]
    s, w = p["strategies"].index("strong"), p["strategies"].index("weak")
    # every round of both benchmarks: strong significantly better -> 1 per benchmark
    assert p["matrix"][s][w] == pytest.approx(2.0)
    assert p["matrix"][w][s] == 0.0 and p["matrix"][s][s] == 0.0


def test_indistinguishable_strategies_get_no_penalty_and_shared_ranks():
    curves = _curves("b", "a", 0.5, noise=0.05) + [
        Curve("b", "twin", c.seed, c.n_labeled, c.metrics) for c in _curves("b", "a", 0.5, noise=0.05)
    ]
    lb = build_leaderboard(curves)
    assert np.array(lb["penalty"]["matrix"]).sum() == 0.0
    assert {r["rank"] for r in lb["benchmarks"][0]["rows"]} == {1.5}
    assert {r["mean_rank"] for r in lb["benchmarks"][0]["rows"]} == {1.5}


def test_statistics_helpers():
    assert bootstrap_interval(np.array([0.4])) == (0.4, 0.4)
    low, high = bootstrap_interval(np.array([0.1, 0.2, 0.3, 0.4, 0.5]))
    assert 0.1 <= low < 0.3 < high <= 0.5
    assert bootstrap_interval(np.array([0.1, 0.2, 0.3, 0.4, 0.5])) == (low, high)  # seeded: deterministic
    assert not significantly_better(np.array([0.5, 0.6]), np.array([0.5, 0.6]))
    assert not significantly_better(np.array([0.9]), np.array([0.1]))  # one seed: no test
    assert significantly_better(np.array([0.9, 0.8, 0.85]), np.array([0.5, 0.45, 0.5]))
    assert not significantly_better(np.array([0.5, 0.45, 0.5]), np.array([0.9, 0.8, 0.85]))


def test_utilisation_sits_next_to_accuracy():
    curves = (_curves("b", "uses-both", 0.6, utilisation={"m0": 0.5, "m1": 0.5})
              + _curves("b", "ignores-m1", 0.62, utilisation={"m0": 1.0, "m1": 0.0}))
    lb = build_leaderboard(curves)
    rows = {r["strategy"]: r for r in lb["benchmarks"][0]["rows"]}
    assert rows["ignores-m1"]["contribution"] == {"m0": 1.0, "m1": 0.0}
    assert rows["uses-both"]["modality_accuracy"]["m1"] == pytest.approx(0.3)
    md = render(lb, "md")
    assert "shapley m0=1.00 m1=0.00" in md and "only m0=" in md


def test_renderers_agree_and_html_is_self_contained_and_escaped():
    evil = '<script>alert("x")</script>'
    lb = build_leaderboard(_curves("b", evil, 0.7) + _curves("b", "margin", 0.5))
    data = json.loads(render(lb, "json"))
    assert data["benchmarks"][0]["rows"][0]["strategy"] == evil
    rows = list(csv.DictReader(io.StringIO(render(lb, "csv"))))
    assert [r["strategy"] for r in rows] == [evil, "margin"] and rows[0]["rank"] == "1.0"
    md = render(lb, "md")
    assert md.count("\n| 1.0 |") == 1 and "## b" in md
    page = render_html(lb)
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "&lt;script&gt;" in page
    assert page.count('src="data:image/png;base64,') == 1
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    with pytest.raises(MmalError, match="--format xml"):
        render(lb, "xml")


# -- against a real results database ---------------------------------------------------------------------------
def test_leaderboard_of_a_results_database(tiny, capsys, tmp_path):
    from mmal_core.leaderboard.benchmarks import get_benchmark

    bench = get_benchmark(TINY_BENCHMARK["name"])
    with Store(tiny["db"], readonly=True) as store:
        curves = curves_from_store(store, [bench])
    assert sorted({(c.strategy, c.seed) for c in curves}) == [("margin", 0), ("margin", 1), ("random", 0), ("random", 1)]
    assert all(c.n_labeled == bench.labeled_counts() for c in curves)

    code, out, err = cli_in_process(capsys, "leaderboard", "--db", str(tiny["db"]), "--benchmark", bench.name, "--format", "json")
    assert code == 0, err
    lb = json.loads(out)
    rows = lb["benchmarks"][0]["rows"]
    assert lb["benchmarks"][0]["hash"] == bench.hash
    assert sorted(r["strategy"] for r in rows) == ["margin", "random"]
    by_name = {r["strategy"]: r for r in rows}
    for name in ("margin", "random"):
        mine = [c for c in curves if c.strategy == name]
        assert by_name[name]["aubc"] == pytest.approx(np.mean([aubc(c.n_labeled, c.accuracy) for c in mine]))
        assert set(by_name[name]["modality_accuracy"]) == {"m0", "m1"}

    out_file = tmp_path / "lb.html"
    code, _, err = cli_in_process(capsys, "leaderboard", "--db", str(tiny["db"]), "--format", "html", "--output", str(out_file))
    assert code == 0, err
    assert "data:image/png;base64," in out_file.read_text() and "margin" in out_file.read_text()
    code, out, _ = cli_in_process(capsys, "leaderboard", "--db", str(tiny["db"]), "--format", "table")
    assert code == 0 and "pairwise penalty" in out and "margin" in out


def test_leaderboard_errors_name_the_option(tiny, capsys, tmp_path):
    code, _, err = cli_in_process(capsys, "leaderboard", "--db", str(tiny["db"]), "--format", "yaml")
    assert code == 2 and "--format yaml" in err
    code, _, err = cli_in_process(capsys, "leaderboard", "--db", str(tiny["db"]), "--benchmark", "synthetic-missing")
    assert code == 2 and "no finished runs of benchmark 'synthetic-missing'" in err
    code, _, err = cli_in_process(capsys, "leaderboard", "--db", str(tmp_path / "none.db"))
    assert code == 2 and "none.db" in err
    code, _, err = cli_in_process(capsys, "leaderboard", "--db", str(tiny["db"]), "--benchmark", "tiny-misssing")
    assert code == 2 and "did you mean 'tiny-missing'" in err
    code, _, err = cli_in_process(capsys, "leaderboard", "--db", str(tiny["db"]), "--format", "csv",
                        "--output", str(tmp_path / "no" / "x.csv"))
    assert code == 2 and "does not exist" in err
