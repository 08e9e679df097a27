"""GRPO (Eq. 1): group-relative advantages over a prompt's rollouts, the
policy-gradient loss summed over the group, k3 KL to the reference, and the opt-in
truncated importance weight per token."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import ClassVar

import torch

from fs2_semionline.config.training import GRPOConfig
from fs2_semionline.core.metrics import Metric, Term, enabled_names
from fs2_semionline.core.tasks import RewardKind
from fs2_semionline.losses import grpo_loss, truncated_weights
from fs2_semionline.objectives.base import (
    IS_TERM,
    AdvantageGroup,
    LossOutput,
    Rollouts,
    Scores,
    Traits,
    detached_mean,
)
from fs2_semionline.objectives.selection import PairingStats, grpo_advantages

GRPO_TERMS: tuple[Term, ...] = (
    Term("grpo_loss", Metric("GRPO Loss", 93)),
    Term("kl", Metric("KL (k3)", 94), when="kl_beta"),
)


class GRPOObjective:
    TERMS: ClassVar[tuple[Term, ...]] = (*GRPO_TERMS, IS_TERM)
    TRAITS: ClassVar[Traits] = Traits(on_policy_only=True)

    def __init__(self, config: GRPOConfig) -> None:
        self.config = config
        self.importance_cap = config.importance_cap_or_none

    @property
    def needs_reference(self) -> bool:
        """Only for the KL term."""
        return self.config.kl_beta != 0.0

    def metric_names(self) -> tuple[str, ...]:
        return enabled_names(self.TERMS, self.config)

    def skip_reasons(self, kinds: frozenset[RewardKind]) -> tuple[str, ...]:
        """Advantages need two valid rewards that differ, whatever their kind."""
        return ("all_equal", "too_few_valid")

    def select(self, rollouts: Rollouts, rng: random.Random) -> tuple[list[AdvantageGroup], PairingStats]:
        advantages, stats = grpo_advantages(rollouts.rewards, normalize_std=self.config.normalize_advantage_std)
        items: list[AdvantageGroup] = []
        for i, row in enumerate(advantages):
            kept = [j for j, a in enumerate(row) if a is not None]
            if kept:
                responses = tuple(rollouts.responses[i][j] for j in kept)
                adv = tuple(float(a) for a in row if a is not None)
                items.append(AdvantageGroup(i, rollouts.prompt_ids[i], responses, adv))
        return items, stats

    def loss(self, items: Sequence[AdvantageGroup], scores: Scores) -> LossOutput:
        """Eq. 1 sums over a prompt's rollouts; the unit normalises per prompt."""
        advantages = [a for item in items for a in item.advantages]
        metrics: dict[str, tuple[float, float]] = {}
        token_weights = None
        if self.importance_cap is not None and scores.mismatch is not None:
            off = scores.mismatch
            token_weights = truncated_weights(off.token_log_ratio, self.importance_cap).to(scores.token_logps.dtype)
            over = (off.token_log_ratio > math.log(self.importance_cap)) & scores.mask.bool()
            metrics["is_truncated"] = (float(over.sum()) / max(off.num_tokens, 1), off.num_tokens)
        gr = grpo_loss(
            scores.token_logps,
            scores.mask,
            torch.tensor(advantages, device=scores.token_logps.device),
            beta=self.config.kl_beta,
            ref_token_logps=scores.ref_token_logps,
            length_normalize=self.config.length_normalize,
            token_weights=token_weights,
        )
        n = len(items)
        metrics["grpo_loss"] = (float(gr.loss.detach().sum()) / n, n)
        metrics["kl"] = (detached_mean(gr.kl), len(advantages))
        return LossOutput(gr.loss.sum(), n, metrics)
