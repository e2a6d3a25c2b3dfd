"""The example metric's own tests: mmal's conformance kit, then its behaviour."""

import numpy as np
import pytest

from mmal_core import MetricContext
from mmal_core.testing import fitted_tiny_model, parametrize_with_checks
from mmal_example_metric.plugin import BrierScore


@parametrize_with_checks([BrierScore])
def test_conformance(check):
    check()


class _Fixed:
    """A 'model' that predicts fixed probabilities."""

    def __init__(self, probs):
        self.probs = probs

    def provided(self):
        return frozenset({"probs"})

    def predict(self, split, index=None, want=frozenset({"probs"}), params=None, keep=None):
        return {"probs": self.probs}


def test_brier_is_zero_when_certain_and_right_and_two_when_certain_and_wrong():
    _, data, labeled = fitted_tiny_model()
    right = np.eye(data.n_classes)[data.test.labels]
    wrong = np.eye(data.n_classes)[(data.test.labels + 1) % data.n_classes]
    assert BrierScore().compute(MetricContext(_Fixed(right), data, labeled)) == pytest.approx(0.0)
    assert BrierScore().compute(MetricContext(_Fixed(wrong), data, labeled)) == pytest.approx(2.0)
