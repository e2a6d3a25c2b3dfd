"""Build the study summary `mmal diagnose` ships (mmal_core/study/pitfall_study.json).

    mmal run benchmarks/pitfalls.yaml --db benchmarks/out/pitfalls.db --workers 2
    python benchmarks/study/diagnose_summary.py benchmarks/out/pitfalls.db

Re-run it whenever the study is re-run (more seeds, more severities): every (dataset,
parameters) pair of the experiment becomes one cell. Per cell and strategy: the paired
difference of its normalised AUBC to `random` on the same seed, its mean and 95 % t-interval
over seeds, a paired t-test (scipy.stats.ttest_rel) and the Holm correction over the
strategies of the cell (statsmodels). Warnings are derived from what the strategies queried
(incomplete samples, compared with random; kind "missing", shown only for datasets with
missing modalities), from the final models' imbalance and from the multimodal strategies'
mean gain. Each cell
also gets the profile `mmal diagnose` computes on its dataset (one seed), which is how a
user's dataset is matched to the closest cells.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from mmal_core import MmalError, get_plugin_manager
from mmal_core.diagnose import diagnose, profile_vector
from mmal_core.metrics import aubc, get_metric
from mmal_core.store import Store

OUT = Path(__file__).resolve().parents[2] / "mmal_core" / "study" / "pitfall_study.json"
ALPHA = 0.05


def cell_name(dataset: str, params: dict) -> str:
    shown = {k: v for k, v in params.items() if k not in ("n_train", "n_test")}
    return dataset + (" (" + ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) + ")" if shown else "")


def load(db: str, experiment: str | None):
    """{(dataset, params json): {strategy label: {seed: facts}}}, the experiment row."""
    cells: dict = defaultdict(lambda: defaultdict(dict))
    with Store(db, readonly=True) as store:
        eid = store.resolve_experiment(experiment)
        exp = store.experiment_row(eid)
        for run in store.iter_finished_runs(eid):
            rounds = run["rounds"]
            n = [r["n_labeled"] for r in rounds]
            acc = [r["metrics"]["accuracy"] for r in rounds]
            queried = [r["metrics"]["query"] for r in rounds if r["metrics"].get("query")]
            missing = defaultdict(list)
            for q in queried:
                for m, v in (q.get("missing_fraction") or {}).items():
                    missing[m].append(v)
            key = (run["dataset"], json.dumps(run["dataset_params"], sort_keys=True))
            cells[key][run["strategy_label"]][run["seed"]] = {
                "strategy": run["strategy"],
                "aubc": aubc(n, acc),
                "missing": {m: float(np.mean(v)) for m, v in missing.items()},
                "imbalance": get_metric(rounds[-1]["metrics"], "imbalance"),
            }
    return cells, exp


def is_multimodal(strategy: str) -> bool:
    try:
        return bool(get_plugin_manager().get("strategy", strategy).multimodal)
    except MmalError:
        return False


def strategy_rows(runs: dict) -> list[dict]:
    """Each strategy's AUBC against random over the shared seeds: mmal report's paired test
    and Holm correction (mmal_core.stats), so the shipped advice says what the report says."""
    from mmal_core import stats

    base = runs["random"]
    rows = []
    for label, by_seed in sorted(runs.items()):
        if label == "random":
            continue
        seeds = sorted(set(by_seed) & set(base))
        if len(seeds) < 2:
            continue
        test = stats.paired_comparison(np.array([by_seed[s]["aubc"] for s in seeds]),
                                       np.array([base[s]["aubc"] for s in seeds]))
        rows.append({"strategy": label, "multimodal": is_multimodal(next(iter(by_seed.values()))["strategy"]),
                     "diff": test["mean"], "low": test["low"], "high": test["high"], "p": test["p"],
                     "seeds": len(seeds)})
    for r, ph in zip(rows, stats.holm([r["p"] for r in rows], alpha=ALPHA)):
        r["p_holm"] = ph
        r["significant"] = ph is not None and ph < ALPHA
    return sorted(rows, key=lambda r: -r["diff"])


def warnings_for(runs: dict, rows: list[dict]) -> list[str]:
    out = []
    base = runs["random"]
    mean = lambda by_seed, f: float(np.mean([f(v) for v in by_seed.values()]))  # noqa: E731
    modalities = sorted({m for v in base.values() for m in v["missing"]})
    for m in modalities:
        rand = mean(base, lambda v: v["missing"].get(m, 0.0))
        if rand < 0.02:
            continue
        over = []
        for label, by_seed in runs.items():
            share = mean(by_seed, lambda v: v["missing"].get(m, 0.0))
            if label != "random" and share >= rand + 0.1:
                over.append((share, label))
        under = [(mean(by_seed, lambda v: v["missing"].get(m, 0.0)), label) for label, by_seed in runs.items()
                 if label != "random" and mean(by_seed, lambda v: v["missing"].get(m, 0.0)) <= rand - 0.1]
        if over:
            listed = ", ".join(f"{label} {share:.0%}" for share, label in sorted(over, reverse=True))
            out.append({"kind": "missing",
                        "text": f"Over-picking incomplete samples: random queried {rand:.0%} samples missing {m}; {listed}."})
        if under:
            listed = ", ".join(f"{label} {share:.0%}" for share, label in sorted(under))
            out.append({"kind": "missing", "text": f"Under-picking incomplete samples (missing {m}; random {rand:.0%}): {listed}."})
    imb = [mean(by_seed, lambda v: v["imbalance"] if v["imbalance"] is not None else np.nan) for by_seed in runs.values()]
    imb = [v for v in imb if np.isfinite(v)]
    if imb and min(imb) >= 0.5:
        out.append({"kind": "imbalance",
                    "text": f"The fused model leaned on one modality under every strategy (final imbalance {min(imb):.2f}-{max(imb):.2f}); "
                    "no strategy removed the lean within the study's budget."})
    multi = [r for r in rows if r["multimodal"]]
    uni = [r for r in rows if not r["multimodal"]]
    if multi and uni:
        m_mean = float(np.mean([r["diff"] for r in multi]))
        u_mean = float(np.mean([r["diff"] for r in uni]))
        if m_mean < u_mean:
            out.append({"kind": "multimodal",
                        "text": f"Multimodal strategies did not beat unimodal ones here: mean AUBC − random {m_mean:+.3f} "
                        f"(multimodal) vs {u_mean:+.3f} (unimodal)."})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("db")
    ap.add_argument("--experiment", default=None)
    ap.add_argument("--output", default=str(OUT))
    args = ap.parse_args(argv)
    cells, exp = load(args.db, args.experiment)
    out_cells = []
    seeds = set()
    for (dataset, params_json), runs in sorted(cells.items()):
        if "random" not in runs:
            print(f"skipping {dataset} {params_json}: no random runs", file=sys.stderr)
            continue
        params = json.loads(params_json)
        rows = strategy_rows(runs)
        seeds |= {s for by_seed in runs.values() for s in by_seed}
        print(f"profiling {dataset} {params_json}", file=sys.stderr)
        profile = profile_vector(diagnose(dataset, params, seeds=1, with_advice=False))
        out_cells.append({
            "cell": cell_name(dataset, params),
            "dataset": dataset,
            "params": params,
            "profile": {k: round(v, 4) for k, v in profile.items()},
            "strategies": [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
            "warnings": warnings_for(runs, rows),
        })
    doc = {
        "study": {
            "name": exp["name"],
            "source": "benchmarks/pitfalls.yaml, summarised by benchmarks/study/diagnose_summary.py",
            "seeds": len(seeds),
            "cells": len(out_cells),
            "test": "paired t-test of AUBC − random over seeds (scipy.stats.ttest_rel), Holm-corrected over "
            "the strategies of each cell (statsmodels), alpha 0.05; intervals: 95% t-intervals",
        },
        "cells": out_cells,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
