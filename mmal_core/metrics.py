"""Per-round evaluation metrics, the :class:`Metric` plugin kind, and learning-curve summaries.

Every round the loop evaluates the fitted model on the test split with every registered
metric (hook ``mmal_register_metrics``) whose ``needs`` the model provides. The built-ins
(registered by :mod:`mmal_core.builtin`) are ``accuracy``, ``macro_f1``, ``log_likelihood``
(mean log-probability of the true label), ``modality_accuracy[m]`` (accuracy of the fused
model when only modality ``m`` is present, the others masked as missing) and the
modality-utilization metrics of :mod:`mmal_core.utilization`. All metrics of a round share one
:class:`MetricContext`, which computes each prediction once and caches it. Learning curves are
summarised by the normalised area under the budget curve (:func:`aubc`).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import numpy as np

from .errors import MmalError


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


def log_likelihood(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean natural log of the probability given to the true label (clipped at 1e-12)."""
    labels = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)[np.arange(len(labels)), labels]
    return float(np.mean(np.log(np.clip(p, 1e-12, None))))


# -- the metric plugin kind ---------------------------------------------------------------------
#: What a metric may need besides the model's PoolView fields (``mmal_core.view.REQUIREMENTS``):
#: ``keep``, predictions with some modalities hidden (:meth:`MetricContext.kept_probs`);
#: ``coalitions``, the prediction of every modality coalition
#: (:meth:`MetricContext.coalition_probs`); ``labeled``, the round's labeled set.
CONTEXT_NEEDS: frozenset[str] = frozenset({"keep", "coalitions", "labeled"})

#: Keys of a round's metrics that the loop fills itself: no metric may take them.
RESERVED_NAMES: frozenset[str] = frozenset({"query", "timings"})


class Metric:
    """A per-round evaluation metric: subclass, set the class attributes, implement :meth:`compute`.

    name: the key the value is stored under in every round's metrics (lower case).
    summary: one line for ``mmal list metrics``.
    higher_is_better: the direction used when ranking by it (``False``: lower is better).
    needs: model fields (``probs``, ``modality_probs``, ``modality_embeddings``, ...) and
        context needs (:data:`CONTEXT_NEEDS`) it reads; the loop computes it only when the
        model provides them, and the context refuses anything not declared.
    utilization: True for modality-utilization metrics; the config's ``metrics.utilization``
        (auto/true/false) turns them on or off.

    ``compute(ctx)`` returns a float, or a dict of floats (one per modality, say), stored
    under ``name`` (a dict's members are ranked as ``name.member``). Metrics take no
    parameters: one instance is built per round.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset({"probs"})
    utilization: ClassVar[bool] = False

    def compute(self, ctx: MetricContext) -> float | dict[str, float]:
        raise NotImplementedError


class MetricContext:
    """What the metrics of one round read: the fitted model's test predictions, computed once.

    model: a fitted :class:`mmal_core.model.Model`; dataset: its
    :class:`~mmal_core.data.MultimodalDataset` (metrics use ``dataset.test``); labeled:
    positions of the labeled set in ``dataset.train``. ``prefetch``: model fields the round's
    metrics will ask :meth:`output` for, fetched in one ``predict`` call.
    """

    def __init__(self, model: Any, dataset: Any, labeled: np.ndarray, prefetch: Iterable[str] = ()):
        self.model, self.dataset = model, dataset
        self._labeled = np.asarray(labeled, dtype=np.int64)
        self.test = dataset.test
        self.labels = dataset.test.labels
        self.n_classes = dataset.n_classes
        self.modality_names = list(dataset.modality_names)
        self.provided = frozenset(model.provided())
        self._prefetch = set(prefetch) - {"probs"}
        self._cache: dict[Any, Any] = {}
        self._allowed: frozenset[str] | None = None  # None: everything (outside a metric)
        self._who = ""

    # -- access control: a metric reads only what it declared --------------------------------
    def _need(self, what: str) -> None:
        if self._allowed is not None and what not in self._allowed:
            raise MmalError(f"{self._who} reads '{what}' but does not list it in needs")

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per round under ``key``: shares work between metrics."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    # -- what metrics read ---------------------------------------------------------------------
    @property
    def labeled(self) -> np.ndarray:
        """Positions of the labeled set in ``dataset.train`` (need ``labeled``)."""
        self._need("labeled")
        return self._labeled

    @property
    def labeled_labels(self) -> np.ndarray:
        self._need("labeled")
        return self.dataset.train.labels[self._labeled]

    @property
    def probs(self) -> np.ndarray:
        """(n_test, C) fused class probabilities (need ``probs``)."""
        self._need("probs")
        return self.cached("probs", lambda: self.model.predict(self.test, want={"probs"})["probs"])

    @property
    def pred(self) -> np.ndarray:
        """(n_test,) predicted labels (need ``probs``)."""
        return self.cached("pred", lambda: self.probs.argmax(axis=1))

    def kept_probs(self, keep: tuple[str, ...]) -> np.ndarray:
        """(n_test, C) probabilities with only the modalities in ``keep`` present (need ``keep``)."""
        self._need("keep")

        def run():
            mask = np.array([m in keep for m in self.modality_names], dtype=bool)
            return self.model.predict(self.test, want={"probs"}, keep=mask)["probs"]

        return self.cached(("keep", tuple(keep)), run)

    def coalition_probs(self) -> list[np.ndarray]:
        """(n_test, C) probabilities of every coalition of modalities, indexed by bitmask
        (:func:`mmal_core.coalitions.coalition_probs`); entry 0, the empty coalition, is the
        add-one smoothed label prior of the labeled set (need ``coalitions``)."""
        self._need("coalitions")

        def run():
            from .coalitions import check_modality_count, coalition_probs, label_prior

            check_modality_count(len(self.modality_names), f"dataset '{self.dataset.name}'")
            probs = coalition_probs(self.model, self.test, self.modality_names)
            prior = label_prior(self.dataset.train.labels[self._labeled], self.n_classes)
            probs[0] = np.broadcast_to(prior, (len(self.labels), self.n_classes))
            return probs

        return self.cached("coalitions", run)

    def output(self, field: str) -> Any:
        """A model field (``modality_probs``, ``modality_embeddings``, ...) on the test split."""
        self._need(field)
        if field == "probs":
            return self.probs
        if ("output", field) not in self._cache:
            want = {f for f in self._prefetch | {field} if f in self.provided and ("output", f) not in self._cache}
            out = self.model.predict(self.test, want=want)
            for f in want:
                self._cache[("output", f)] = out[f]
        return self._cache[("output", field)]

    def labeled_output(self, field: str) -> Any:
        """A model field on the labeled samples of the pool (need the field and ``labeled``)."""
        self._need(field)
        self._need("labeled")
        return self.cached(("labeled_output", field), lambda: self.model.predict(
            self.dataset.train, self._labeled, want={field})[field])


def check_metric_class(cls: Any, where: str) -> None:
    """Raise :class:`MmalError` unless ``cls`` is a well-formed :class:`Metric` subclass."""
    from .view import REQUIREMENTS

    if not (isinstance(cls, type) and issubclass(cls, Metric)):
        raise MmalError(f"{where}: {cls!r} is not a subclass of mmal_core.Metric")
    if cls.name in RESERVED_NAMES or "." in cls.name:
        raise MmalError(f"{where}: metric name '{cls.name}' is reserved or contains '.'")
    if not isinstance(cls.higher_is_better, bool):
        raise MmalError(f"{where}: {cls.__name__}.higher_is_better must be True or False")
    unknown = set(cls.needs) - REQUIREMENTS - CONTEXT_NEEDS
    if unknown:
        known = ", ".join(sorted(REQUIREMENTS | CONTEXT_NEEDS))
        raise MmalError(f"{where}: {cls.__name__}.needs has unknown {sorted(unknown)}; expected some of {known}")


def metric_value(value: Any, where: str) -> float | dict[str, float]:
    """``value`` as a float or a dict of str -> float; anything else raises :class:`MmalError`."""

    def number(v: Any) -> float | None:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            return None
        return float(v)

    if isinstance(value, dict):
        out: dict[str, float] = {}
        for k, v in value.items():
            x = number(v)
            if not isinstance(k, str) or x is None:
                raise MmalError(f"{where} returned a bad value: {k!r}: {v!r} (expected str keys and numbers)")
            out[k] = x
        return out
    x = number(value)
    if x is None:
        raise MmalError(f"{where} returned {type(value).__name__} {value!r}; expected a number or a dict of numbers")
    return x


def compute_metrics(metrics: Iterable[tuple[Metric, str]], ctx: MetricContext) -> dict[str, Any]:
    """``{name: value}`` of every ``(metric, who)`` pair, in order, over one shared context.

    who: how an error names the metric (``metric 'x' of plugin 'p'``). A metric that raises,
    reads what it did not declare or returns a bad value raises one-line :class:`MmalError`.
    """
    out: dict[str, Any] = {}
    for metric, who in metrics:
        ctx._allowed, ctx._who = frozenset(metric.needs), who
        try:
            value = metric.compute(ctx)
        except MmalError as err:
            raise MmalError(f"{who} failed: {err}") from None
        except Exception as err:
            last = " ".join(traceback.format_exception_only(type(err), err)[-1].split())
            raise MmalError(f"{who} failed: {last}") from None
        finally:
            ctx._allowed, ctx._who = None, ""
        out[metric.name] = metric_value(value, who)
    return out


def metric_series(rounds: Iterable[dict[str, Any]], path: str) -> np.ndarray:
    """(n_rounds,) values of the metric ``path`` in each round's metrics; NaN where a round
    holds no number there (a database from before the metric existed)."""
    out = []
    for m in rounds:
        v = get_metric(m, path)
        out.append(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan"))
    return np.array(out, dtype=np.float64)


def records_metric(rounds: Iterable[dict[str, Any]], path: str) -> bool:
    """True when every round holds a number under ``path``."""
    return all(isinstance(get_metric(m, path), (int, float)) for m in rounds)


class Accuracy(Metric):
    """Fraction of test samples whose most probable class is the true one."""

    name = "accuracy"
    summary = "test accuracy of the fused model"

    def compute(self, ctx: MetricContext) -> float:
        return accuracy(ctx.labels, ctx.pred)


class MacroF1(Metric):
    name = "macro_f1"
    summary = "unweighted mean of per-class F1 on the test split"

    def compute(self, ctx: MetricContext) -> float:
        return macro_f1(ctx.labels, ctx.pred, ctx.n_classes)


class LogLikelihood(Metric):
    name = "log_likelihood"
    summary = "mean log-probability of the true test label"

    def compute(self, ctx: MetricContext) -> float:
        return log_likelihood(ctx.labels, ctx.probs)


class ModalityAccuracy(Metric):
    name = "modality_accuracy"
    summary = "test accuracy with only modality m present, per modality"
    needs = frozenset({"probs", "keep"})

    def compute(self, ctx: MetricContext) -> dict[str, float]:
        return {m: accuracy(ctx.labels, ctx.kept_probs((m,)).argmax(axis=1)) for m in ctx.modality_names}


def evaluate(model: Any, dataset: Any) -> dict[str, Any]:
    """The core metrics of a fitted model on ``dataset.test``.

    Returns ``{"accuracy", "macro_f1", "log_likelihood", "modality_accuracy": {m: acc}}``.
    """
    metrics = [Accuracy(), MacroF1(), LogLikelihood(), ModalityAccuracy()]
    return compute_metrics([(m, f"metric '{m.name}'") for m in metrics], MetricContext(model, dataset, []))


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
