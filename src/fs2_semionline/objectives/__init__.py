"""Training objectives as strategies, registered as fairseq2 components by ``loss.name`` (``registry.py``): each selects what
to train on from the rewards and computes its loss on the selection
(:class:`~fs2_semionline.objectives.base.Objective`)."""

from __future__ import annotations

from fs2_semionline.objectives.base import (
    AdvantageGroup,
    GroupWithAdvantages,
    ItemT,
    LossOutput,
    Objective,
    PreferenceGroup,
    PreferencePair,
    Response,
    Rollouts,
    Scores,
    TrainItem,
    Traits,
)
from fs2_semionline.objectives.dpo import DPOObjective, fixed_pairs
from fs2_semionline.objectives.group_dpo import GroupDPOGRPOObjective, GroupDPOObjective
from fs2_semionline.objectives.grpo import GRPOObjective
from fs2_semionline.objectives.registry import (
    OBJECTIVES,
    LossSection,
    ObjectiveEntry,
    all_objective_metrics,
    build_objective,
    create_objective,
    objective_traits,
    objectives_configured_by,
    objectives_with,
    register_objectives,
)

__all__ = [
    "OBJECTIVES",
    "AdvantageGroup",
    "DPOObjective",
    "GRPOObjective",
    "GroupDPOGRPOObjective",
    "GroupDPOObjective",
    "GroupWithAdvantages",
    "ItemT",
    "LossOutput",
    "LossSection",
    "ObjectiveEntry",
    "Objective",
    "PreferenceGroup",
    "PreferencePair",
    "Response",
    "Rollouts",
    "Scores",
    "Traits",
    "TrainItem",
    "all_objective_metrics",
    "build_objective",
    "create_objective",
    "objective_traits",
    "objectives_configured_by",
    "objectives_with",
    "register_objectives",
    "fixed_pairs",
]
