"""The four baseline strategies: contract conformance and picks that are known to be right."""

import numpy as np

from mmal_core import PoolView
from mmal_core.testing import parametrize_with_checks
from mmal_strategies.uncertainty import Entropy, LeastConfidence, Margin, RandomSampling, entropy


@parametrize_with_checks([RandomSampling, LeastConfidence, Margin, Entropy])
def test_conformance(check):
    check()


PROBS = np.array(
    [
        [0.98, 0.01, 0.01],  # 0 confident
        [0.40, 0.35, 0.25],  # 1 small margin, high entropy
        [0.50, 0.48, 0.02],  # 2 second-smallest margin, low entropy
        [0.34, 0.33, 0.33],  # 3 max entropy, least confidence
        [0.70, 0.20, 0.10],  # 4
    ]
)


def test_margin_takes_the_smallest_margins():
    picks = Margin().select(PoolView(probs=PROBS), 2, np.random.default_rng(0))
    assert list(picks) == [3, 2]


def test_least_confidence_takes_lowest_max_probability():
    picks = LeastConfidence().select(PoolView(probs=PROBS), 2, np.random.default_rng(0))
    assert list(picks) == [3, 1]


def test_entropy_takes_highest_entropy():
    picks = Entropy().select(PoolView(probs=PROBS), 3, np.random.default_rng(0))
    assert list(picks) == [3, 1, 4]
    assert entropy(np.array([[1.0, 0.0]]))[0] == 0.0
    assert np.isclose(entropy(np.array([[0.5, 0.5]]))[0], np.log(2))


def test_random_is_uniform_and_seeded():
    view = PoolView(ids=np.arange(10))
    counts = np.zeros(10)
    rng = np.random.default_rng(1)
    for _ in range(2000):
        counts[RandomSampling().select(view, 3, rng)] += 1
    assert counts.min() > 500 and counts.max() < 700
    a = RandomSampling().select(view, 4, np.random.default_rng(9))
    b = RandomSampling().select(view, 4, np.random.default_rng(9))
    assert np.array_equal(a, b)
