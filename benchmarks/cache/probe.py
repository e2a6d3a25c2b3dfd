"""Linear-probe accuracy of the cached features: each modality alone and both together.

    python benchmarks/cache/probe.py av-digits clipart

Logistic regression (scikit-learn, L2, C=1, features standardised on the train split) on
the full train split of each dataset's cache, accuracy on its test split. A sample missing
a modality contributes zeros for it (the cache's convention). Builds the caches if needed.
"""

from __future__ import annotations

import argparse

import numpy as np


def probe(train_x, train_y, test_x, test_y) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000))
    clf.fit(train_x, train_y)
    return float(clf.score(test_x, test_y))


def main(argv=None) -> None:
    import mmal_core

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+")
    args = parser.parse_args(argv)
    print("| dataset | train / test | classes | " + "modality alone | " + "both |")
    print("|---|---|---|---|---|")
    for name in args.datasets:
        ds = mmal_core.load_dataset(name, seed=0)
        tr, te = ds.train, ds.test
        parts = []
        for m in ds.modality_names:
            acc = probe(tr.features[m], tr.labels, te.features[m], te.labels)
            parts.append(f"{m} ({ds.modalities[ds.modality_names.index(m)].encoder}): {acc:.3f}")
        joint = probe(
            np.concatenate([tr.features[m] for m in ds.modality_names], axis=1), tr.labels,
            np.concatenate([te.features[m] for m in ds.modality_names], axis=1), te.labels,
        )
        majority = float(np.mean(te.labels == np.bincount(tr.labels).argmax()))
        print(f"| {name} | {len(tr)} / {len(te)} | {ds.n_classes} (majority {majority:.3f}) | {'; '.join(parts)} | {joint:.3f} |")


if __name__ == "__main__":
    main()
