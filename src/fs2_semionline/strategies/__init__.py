"""Training objectives as strategies, registered by ``loss.name``: each selects what
to train on from the rewards and computes its loss on the selection
(:class:`~fs2_semionline.strategies.base.Objective`)."""

from __future__ import annotations

from collections.abc import Callable

from fs2_semionline.config import LossSection
from fs2_semionline.metrics import Metric
from fs2_semionline.strategies.base import (
    AdvantageGroup,
    Item,
    LossOutput,
    Objective,
    PreferenceGroup,
    PreferencePair,
    Response,
    Rollouts,
    Scores,
)
from fs2_semionline.strategies.dpo import DPOObjective, fixed_pairs
from fs2_semionline.strategies.group_dpo import GroupDPOGRPOObjective, GroupDPOObjective
from fs2_semionline.strategies.grpo import GRPOObjective

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
    "all_objective_metrics",
    "create_objective",
    "fixed_pairs",
]


def _cap(config: LossSection) -> float | None:
    return config.importance_cap if config.importance_sampling == "truncated" else None


OBJECTIVES: dict[str, tuple[type, Callable[[LossSection], Objective]]] = {
    "dpo": (DPOObjective, lambda c: DPOObjective(c.dpo, importance_cap=_cap(c))),
    "group_dpo": (GroupDPOObjective, lambda c: GroupDPOObjective(c.dpo)),
    "grpo": (GRPOObjective, lambda c: GRPOObjective(c.grpo, importance_cap=_cap(c))),
    "group_dpo_grpo": (GroupDPOGRPOObjective, lambda c: GroupDPOGRPOObjective(c.dpo, c.grpo, c.group_dpo_grpo.alpha)),
}
"""``loss.name`` → (strategy class, factory from the loss section)."""


def create_objective(config: LossSection) -> Objective:
    try:
        _, factory = OBJECTIVES[config.name]
    except KeyError:
        raise ValueError(f"loss.name: unknown objective {config.name!r}; known: {sorted(OBJECTIVES)}") from None
    return factory(config)


def all_objective_metrics() -> dict[str, Metric]:
    """Every metric any objective can log (registered as fairseq2 descriptors)."""
    out: dict[str, Metric] = {}
    for kls, _ in OBJECTIVES.values():
        out |= kls.METRICS
    return out
