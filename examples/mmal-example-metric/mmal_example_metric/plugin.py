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

        # The mean over samples of the summed squared error, [0, 2] for any number of classes
        # (scale_by_half=False: scikit-learn would halve it for two classes).
        return float(brier_score_loss(ctx.labels, ctx.probs, labels=list(range(ctx.n_classes)), scale_by_half=False))


@hookimpl
def mmal_register_metrics():
    return [BrierScore]
