"""The example plugin's own tests: mmal's conformance kit, then one behaviour of its own."""

import numpy as np

from mmal_core.testing import parametrize_with_checks, synthetic_view
from mmal_example_strategy.plugin import ModalityGapSampling


@parametrize_with_checks([ModalityGapSampling, (ModalityGapSampling, {"floor": 0.2})])
def test_conformance(check):
    check()


def test_weakest_unimodal_support_is_picked_first():
    view = synthetic_view(n=30, seed=1)
    scores = ModalityGapSampling().score(view)
    pick = ModalityGapSampling().select(view, 1, np.random.default_rng(0))
    assert scores[pick[0]] == scores.max()
