"""Training and validation metrics: how each is reduced, and a writer that refuses unregistered names.

Every metric is declared once, where it is computed (the unit's common ones in
``units/preference.py``, each objective's as a table of :class:`Term` in its module
under ``objectives/``), with its display name and reduction. A run registers exactly
the ones it logs: a registered metric that is never updated would show as a silent 0,
and an update of an undeclared one is a bug (``MetricWriter`` raises).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from fairseq2.metrics import Max, Mean, MetricBag, Min, Sum
from fairseq2.metrics.formatters import format_as_float
from fairseq2.metrics.recorders import MetricDescriptor
from torch import Tensor

Reduce = Literal["mean", "sum", "max", "min"]


@dataclass(frozen=True)
class Metric:
    """One metric of training or validation, declared once: its fairseq2 descriptor
    (display name, priority, whether higher is better) and how it is reduced."""

    display: str
    priority: int
    reduce: Reduce = "mean"
    """``mean``: weighted mean over the publish window; ``sum``: counts (fairseq2 also
    sums them over ranks); ``max``/``min``: the window's extreme."""
    higher_better: bool = False
    """For checkpoint selection (``regime.score_metric``): a score, an accuracy."""

    def descriptor(self, name: str) -> MetricDescriptor:
        """fairseq2's descriptor of this metric under ``name``."""
        return MetricDescriptor(name, self.display, self.priority, format_as_float, higher_better=self.higher_better)


class MeanOrNaN(Mean):
    """A mean that is NaN, not 0, when nothing was measured in its window (e.g. every
    reward failed): a silent 0 would read as a real reward. Also exact means of 0 no
    longer trip torcheval's "No calls to update()" warning."""

    weights: Tensor
    weighted_sum: Tensor  # torcheval's Mean keeps both as state; its stubs do not declare them

    @torch.inference_mode()
    def compute(self) -> Tensor:
        if not self.weights:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.weighted_sum / self.weights


@dataclass(frozen=True)
class Term:
    """One metric of an objective's table, and the config key that turns it on.

    The table is read twice, by the objective's ``metric_names()`` (what a run
    registers) and by the unit when it logs a loss's values, so "log the NLL term when
    ``nll_scale`` ≠ 0" is written once, here, and a loss computes its terms unconditionally."""

    name: str
    metric: Metric
    when: str | None = None
    """A key of the objective's config (dotted for a nested one): the term is logged when
    its value is set (not 0, not None). None: always."""

    def enabled(self, config: object) -> bool:
        if self.when is None:
            return True
        value: object = config
        for part in self.when.split("."):
            value = getattr(value, part)
        return value is not None and value != 0


def metrics_of(terms: Iterable[Term]) -> dict[str, Metric]:
    """The table's metrics by name (fairseq2 descriptors are registered from these)."""
    return {t.name: t.metric for t in terms}


def under(key: str, terms: Iterable[Term]) -> tuple[Term, ...]:
    """The terms of a part of a composed objective, whose config sits at ``config.<key>``."""
    return tuple(replace(t, when=f"{key}.{t.when}") if t.when else t for t in terms)


def enabled_names(terms: Iterable[Term], config: object) -> tuple[str, ...]:
    """The names of the table's terms that ``config`` turns on, in table order."""
    return tuple(t.name for t in terms if t.enabled(config))


def as_float(value: object) -> float:
    """A metric value as fairseq2 hands it over (``object``: a number or a 0-d tensor)."""
    if isinstance(value, (int, float, Tensor)):
        return float(value)
    raise TypeError(f"a metric value must be a number, got {type(value).__name__}: {value!r}")


_KLS: dict[str, Callable[[], Any]] = {"mean": MeanOrNaN, "sum": Sum, "max": Max, "min": Min}


def add_metrics(bag: MetricBag, names: Collection[str], specs: Mapping[str, Metric]) -> None:
    """Registers ``names`` (each must have a spec) in fairseq2's metric bag."""
    for name in names:
        bag.add(name, _KLS[specs[name].reduce]())


class MetricWriter:
    """Updates a metric bag by name; an unregistered name raises."""

    def __init__(self, bag: MetricBag, specs: Mapping[str, Metric], names: Collection[str]) -> None:
        self._bag, self._specs, self._names = bag, specs, frozenset(names)

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def update(self, name: str, value: float, weight: float = 1.0) -> None:
        """``weight`` is used by means only. A NaN mean value is dropped (nothing measured)."""
        if name not in self._names:
            raise KeyError(f"metric {name!r} is not registered for this run (registered: {sorted(self._names)})")
        reduce = self._specs[name].reduce
        if reduce == "mean":
            if not math.isnan(value):
                self._bag.get(name, MeanOrNaN).update(value, weight=weight)
        else:
            self._bag.get(name, _KLS[reduce]).update(value)  # type: ignore[arg-type]

    def update_terms(self, values: Mapping[str, tuple[float, float]]) -> None:
        """``{name: (value, weight)}``, as an objective's loss returns every term it
        computed: the registered ones are logged (the run registers the terms its
        config turns on); a name with no spec at all is a bug and raises."""
        for name, (value, weight) in values.items():
            if name not in self._specs:
                raise KeyError(f"metric {name!r} is declared by no objective's TERMS")
            if name in self._names:
                self.update(name, value, weight)
