"""Reliance beyond difficulty in the pitfall study: per cell, the stronger modality's Shapley
share of the final models (metrics ``contribution``) against the share the unimodal linear
probes of the same round predict (``probe_accuracy``: each modality's gain over chance,
normalised over the modalities), with a 95% t-interval over the seeds of ``random``.

    python benchmarks/study/reliance.py benchmarks/out/pitfalls.db

A positive gap means the fused model leans on that modality more than the probes say the
modality is worth at the same budget. Caveats: where a modality is missing from test samples
it cannot earn Shapley value there, so missing-modality cells mix both effects; where each
modality alone is at chance (synergy) the predicted share is undefined noise.
"""

import json
import sqlite3
import sys
from collections import defaultdict

import numpy as np
from scipy import stats

CHANCE = 0.25  # the pitfall study's generators have 4 classes
c = sqlite3.connect(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/out/pitfalls.db")
runs=c.execute("select id, dataset, dataset_params, strategy_label, seed from runs").fetchall()
last={}
for run_id, rnd, m in c.execute("select run_id, round, metrics from rounds"):
    if run_id not in last or rnd > last[run_id][0]:
        last[run_id]=(rnd, m)
cells=defaultdict(lambda: defaultdict(list))
for rid, ds, params, strat, seed in runs:
    m=json.loads(last[rid][1]); p=json.loads(params)
    key=ds+" "+json.dumps({k:v for k,v in p.items() if k not in ("n_train","n_test")}, sort_keys=True)
    probe=m["probe_accuracy"]; share=m["contribution"]
    gain={k:max(v-CHANCE,0) for k,v in probe.items()}
    tot=sum(gain.values()) or 1
    strong=max(share, key=share.get)
    cells[key][strat].append((share[strong], gain[strong]/tot, m["imbalance"]))
for key, by in cells.items():
    r=np.array(by["random"])
    allv=np.array([x for v in by.values() for x in v])
    gap=r[:,0]-r[:,1]
    lo,hi=stats.t.interval(0.95, len(gap)-1, loc=gap.mean(), scale=stats.sem(gap))
    gaps_by=[np.mean(np.array(v)[:,0]-np.array(v)[:,1]) for v in by.values()]
    print(f"{key}: random share {r[:,0].mean():.2f}, probes predict {r[:,1].mean():.2f}, gap {gap.mean():+.3f} [{lo:+.3f},{hi:+.3f}]; gap range over strategies {min(gaps_by):+.3f}..{max(gaps_by):+.3f}; imbalance {allv[:,2].mean():.2f}")
