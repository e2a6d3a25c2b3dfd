"""Registers :class:`ModalityGapSampling` with mmal through the ``mmal`` entry-point group."""

from __future__ import annotations

import numpy as np

from mmal_core import PoolView, ScoreStrategy, hookimpl


class ModalityGapSampling(ScoreStrategy):
    """Pick samples whose unimodal heads are least confident in the true direction of the fused head.

    Score = 1 - min over present modalities of p_m(argmax fused). A small worked example of a
    multimodal strategy for plugin authors; not from a paper.
    """

    name = "example_modality_gap"
    summary = "example plugin: weakest unimodal support for the fused prediction"
    requires = frozenset({"probs", "modality_probs"})
    multimodal = True

    def __init__(self, floor: float = 0.0):
        self.floor = floor

    def score(self, view: PoolView) -> np.ndarray:
        pred = np.asarray(view.probs).argmax(axis=1)
        rows = np.arange(len(pred))
        support = np.stack([np.asarray(view.modality_probs[m])[rows, pred] for m in view.modalities], axis=1)
        support = np.where(view.mask, support, np.inf)  # missing modalities do not vote
        return 1.0 - np.maximum(support.min(axis=1), self.floor)


@hookimpl
def mmal_register_strategies():
    return [ModalityGapSampling]
