"""Probe accuracy of every modality subset of ``synthetic-interaction`` (README tables).

For each interaction, number of modalities and seed, trains two probes on the whole pool,
restricted to the features of one subset of the modalities, and reports the mean test
accuracy over the seeds: scikit-learn's ``HistGradientBoostingClassifier`` (defaults) and an
``MLPClassifier`` with one hidden layer of 256 units on standardised features.

    python plugins/mmal-synthetic/scripts/interaction_probes.py --modalities 2 3 --seeds 0 1 2

Prints one Markdown table per (interaction, number of modalities): the cells are
``gradient boosting / MLP``.
"""

from __future__ import annotations

import argparse
import itertools
import warnings

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmal_synthetic import SyntheticInteraction


def probes(seed: int = 0):
    """The two probes, freshly built: (name, estimator)."""
    return [
        ("boosting", HistGradientBoostingClassifier(random_state=seed)),
        ("mlp", make_pipeline(StandardScaler(), MLPClassifier((256,), alpha=1e-3, max_iter=300, random_state=seed))),
    ]


def subset_accuracies(ds, subsets=None, seed: int = 0) -> dict[tuple[str, ...], dict[str, float]]:
    """{subset: {probe name: test accuracy}} for every non-empty subset of ``ds``'s modalities
    (or the given ``subsets``), each probe trained on the whole pool."""
    names = ds.modality_names
    if subsets is None:
        subsets = [s for r in range(1, len(names) + 1) for s in itertools.combinations(names, r)]
    out = {}
    for subset in subsets:
        xtr = np.concatenate([ds.train.features[m] for m in subset], axis=1)
        xte = np.concatenate([ds.test.features[m] for m in subset], axis=1)
        out[tuple(subset)] = {}
        for name, probe in probes(seed):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                probe.fit(xtr, ds.train.labels)
            out[tuple(subset)][name] = float(probe.score(xte, ds.test.labels))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", nargs="+", default=["synergy"])
    parser.add_argument("--modalities", nargs="+", type=int, default=[2, 3])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args(argv)
    for interaction in args.interactions:
        for m in args.modalities:
            runs = [subset_accuracies(SyntheticInteraction(interaction=interaction, n_modalities=m).load(s), seed=s)
                    for s in args.seeds]
            print(f"\n`interaction: {interaction}`, {m} modalities, seeds {args.seeds}\n")
            print("| modalities | gradient boosting / MLP |\n|---|---|")
            for subset in runs[0]:
                acc = {p: np.mean([r[subset][p] for r in runs]) for p in ("boosting", "mlp")}
                print(f"| {' + '.join(subset)} | {acc['boosting']:.2f} / {acc['mlp']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
