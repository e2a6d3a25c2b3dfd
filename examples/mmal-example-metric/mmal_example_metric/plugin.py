"""Registers :class:`BrierScore` with mmal through the ``mmal`` entry-point group."""

from __future__ import annotations

from mmal_core import Metric, MetricContext, hookimpl


class BrierScore(Metric):
    """Mean squared distance between the predicted class probabilities and the one-hot label.

    0 for confident correct predictions, up to 2 for confident wrong ones: a proper scoring
    rule that, unlike accuracy, rewards calibrated probabilities. Lower is better.
    """

    name = "example_brier"
    summary = "example plugin: multiclass Brier score of the fused model"
    higher_is_better = False
    needs = frozenset({"probs"})

    def compute(self, ctx: MetricContext) -> float:
        from sklearn.metrics import brier_score_loss

        # scikit-learn's multiclass form is the mean over samples of the summed squared error.
        return float(brier_score_loss(ctx.labels, ctx.probs, labels=list(range(ctx.n_classes))))


@hookimpl
def mmal_register_metrics():
    return [BrierScore]
