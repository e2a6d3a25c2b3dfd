"""Per-round evaluation metrics and learning-curve summaries.

Every round the loop evaluates the fused model on the test split: accuracy, macro-F1, and
``modality_accuracy[m]``, the accuracy of the fused model when only modality ``m`` is present
(the others masked as missing). Learning curves are summarised by the normalised area under
the budget curve (:func:`aubc`).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def accuracy(labels: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of ``pred`` equal to ``labels`` (both (n,) ints)."""
    labels = np.asarray(labels)
    return float(np.mean(np.asarray(pred) == labels)) if labels.size else float("nan")


def macro_f1(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``labels`` or ``pred``.

    Matches ``sklearn.metrics.f1_score(average="macro")`` (a class absent from both gets no
    vote; a class with no true or predicted positives scores 0).
    """
    labels = np.asarray(labels, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    cm = np.bincount(labels * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    present = (support + predicted) > 0
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean()) if present.any() else float("nan")


def evaluate(model: Any, dataset: Any) -> dict[str, Any]:
    """Metrics of a fitted model on ``dataset.test``.

    Returns ``{"accuracy", "macro_f1", "modality_accuracy": {m: acc}}``.
    """
    test = dataset.test
    probs = model.predict(test, want={"probs"})["probs"]
    pred = probs.argmax(axis=1)
    out: dict[str, Any] = {
        "accuracy": accuracy(test.labels, pred),
        "macro_f1": macro_f1(test.labels, pred, dataset.n_classes),
    }
    names = dataset.modality_names
    per: dict[str, float] = {}
    for j, m in enumerate(names):
        keep = np.zeros(len(names), dtype=bool)
        keep[j] = True
        p = model.predict(test, want={"probs"}, keep=keep)["probs"].argmax(axis=1)
        per[m] = accuracy(test.labels, p)
    out["modality_accuracy"] = per
    return out


def aubc(n_labeled: list[int] | np.ndarray, values: list[float] | np.ndarray) -> float:
    """Normalised area under the budget curve: trapezoid area / labeled range.

    A curve of constant value ``v`` scores ``v``; a single point scores its value.
    """
    x = np.asarray(n_labeled, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return float("nan")
    if x.size == 1 or x[-1] == x[0]:
        return float(y.mean())
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def get_metric(metrics: dict[str, Any], path: str) -> Any:
    """Look up a dotted metric path (``modality_accuracy.m0``) in a round's metrics."""
    value: Any = metrics
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (for CSV export and metric listings)."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
