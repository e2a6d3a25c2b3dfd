"""PoolView and the strategy helpers."""

import re

import numpy as np
import pytest

from mmal_core import MmalError, PoolView, Strategy, top_k


def test_view_from_plain_arrays_fills_always_fields():
    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    view = PoolView(probs=probs)
    assert len(view) == 3 and view.n_classes == 2
    assert np.array_equal(view.ids, [0, 1, 2])
    assert view.metrics == {}


def test_missing_field_names_the_requirement():
    view = PoolView(probs=np.ones((2, 2)) / 2)._for_strategy("mine")
    with pytest.raises(MmalError, match="strategy 'mine' must list 'embeddings' in its requires"):
        view.embeddings


def test_view_is_read_only_and_rejects_unknown_fields():
    view = PoolView(probs=np.ones((2, 2)) / 2)
    with pytest.raises(AttributeError):
        view.probs = None
    with pytest.raises(MmalError, match="unknown field"):
        PoolView(prob=np.ones((2, 2)))


def test_mismatched_lengths_are_rejected():
    with pytest.raises(MmalError, match="'embeddings' has 3 rows, expected 2"):
        PoolView(probs=np.ones((2, 2)) / 2, embeddings=np.zeros((3, 4)))


def test_top_k_picks_largest_and_breaks_ties_reproducibly():
    scores = np.array([0.1, 0.9, 0.5, 0.9, 0.3])
    assert list(top_k(scores, 1, None)) == [1]
    assert set(top_k(scores, 2, np.random.default_rng(0))) == {1, 3}
    assert list(top_k(scores, 3, None)) == [1, 3, 2]
    ties = np.zeros(100)
    a = top_k(ties, 10, np.random.default_rng(5))
    b = top_k(ties, 10, np.random.default_rng(5))
    c = top_k(ties, 10, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c) and len(set(a)) == 10


def test_top_k_rejects_budget_beyond_pool():
    with pytest.raises(MmalError, match="budget"):
        top_k(np.zeros(3), 4)


def test_unknown_requirement_is_a_definition_error():
    with pytest.raises(TypeError, match="unknown requires"):
        class Bad(Strategy):
            name = "bad"
            requires = frozenset({"probabilities"})


@pytest.mark.parametrize("bad, got", [(None, "got None"), (np.zeros(3), "got shape (3,)"),
                                      (np.zeros((4, 2)), "got shape (4, 2)"), ("abc", "str"),
                                      (np.full(4, np.nan), "only NaN for 4 samples")])
def test_score_strategy_names_a_wrong_score(bad, got):
    from mmal_core import ScoreStrategy

    class Broken(ScoreStrategy):
        name = "broken"

        def score(self, view):
            return bad

    view = PoolView(probs=np.full((4, 2), 0.5))
    with pytest.raises(MmalError, match=rf"strategy broken: score\(\) .*{re.escape(got)}"):
        Broken().select(view, 2, np.random.default_rng(0))
