"""Training objectives as strategies, registered by ``loss.name``: each selects what
to train on from the rewards and computes its loss on the selection
(:class:`~fs2_semionline.objectives.base.Objective`)."""

from __future__ import annotations

from collections.abc import Callable

from fs2_semionline.config.training import LossSection
from fs2_semionline.core.metrics import Metric
from fs2_semionline.objectives.base import (
    AdvantageGroup,
    Item,
    LossOutput,
    Objective,
    PreferenceGroup,
    PreferencePair,
    Response,
    Rollouts,
    Scores,
    Traits,
)
from fs2_semionline.objectives.dpo import DPOObjective, fixed_pairs
from fs2_semionline.objectives.group_dpo import GroupDPOGRPOObjective, GroupDPOObjective
from fs2_semionline.objectives.grpo import GRPOObjective

__all__ = [
    "OBJECTIVES",
    "AdvantageGroup",
    "DPOObjective",
    "GRPOObjective",
    "GroupDPOGRPOObjective",
    "GroupDPOObjective",
    "Item",
    "LossOutput",
    "Objective",
    "PreferenceGroup",
    "PreferencePair",
    "Response",
    "Rollouts",
    "Scores",
    "Traits",
    "all_objective_metrics",
    "create_objective",
    "objective_traits",
    "objectives_with",
    "fixed_pairs",
]


def _cap(config: LossSection) -> float | None:
    return config.importance_cap if config.importance_sampling == "truncated" else None


OBJECTIVES: dict[str, tuple[type[Objective], Callable[[LossSection], Objective]]] = {
    "dpo": (DPOObjective, lambda c: DPOObjective(c.dpo, importance_cap=_cap(c))),
    "group_dpo": (GroupDPOObjective, lambda c: GroupDPOObjective(c.dpo)),
    "grpo": (GRPOObjective, lambda c: GRPOObjective(c.grpo, importance_cap=_cap(c))),
    "group_dpo_grpo": (GroupDPOGRPOObjective, lambda c: GroupDPOGRPOObjective(c.dpo, c.grpo, c.group_dpo_grpo.alpha)),
}
"""``loss.name`` → (strategy class, factory from the loss section)."""


def create_objective(config: LossSection) -> Objective:
    _kind(config.name)
    return OBJECTIVES[config.name][1](config)


def objective_traits(name: str) -> Traits:
    """What ``loss.name`` accepts (its class's declaration)."""
    return _kind(name).TRAITS


def objectives_with(trait: str) -> list[str]:
    """The ``loss.name`` values whose objective declares ``trait``."""
    return [name for name, (kls, _) in OBJECTIVES.items() if getattr(kls.TRAITS, trait)]


def _kind(name: str) -> type[Objective]:
    try:
        return OBJECTIVES[name][0]
    except KeyError:
        raise ValueError(f"loss.name: unknown objective {name!r}; known: {sorted(OBJECTIVES)}") from None


def all_objective_metrics() -> dict[str, Metric]:
    """Every metric any objective can log (registered as fairseq2 descriptors)."""
    out: dict[str, Metric] = {}
    for kls, _ in OBJECTIVES.values():
        out |= kls.METRICS
    return out
