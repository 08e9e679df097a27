"""GroupDPO (Eq. 4): every correct × incorrect pair of a prompt, averaged
per prompt; and GroupDPO + α·GRPO (§4.2) on the same responses.

Sets: binary rewards → (all correct, all incorrect); scalar rewards → above against
below the group's mean (``selection.select_pair_sets``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import ClassVar

import torch

from fs2_semionline.config.training import DPOTermConfig, GroupDPOGRPOConfig
from fs2_semionline.core.metrics import Term, enabled_names, under
from fs2_semionline.core.tasks import RewardKind
from fs2_semionline.losses import group_dpo_loss, grpo_loss, sum_by_group
from fs2_semionline.objectives.base import (
    GroupWithAdvantages,
    LossOutput,
    PreferenceGroup,
    Rollouts,
    Scores,
    Traits,
    detached_mean,
    preference_skip_reasons,
)
from fs2_semionline.objectives.dpo import SIDE_TERMS, reward_metrics, side_metrics
from fs2_semionline.objectives.grpo import GRPO_TERMS
from fs2_semionline.objectives.selection import PairingStats, grpo_advantages, select_pair_sets


class GroupDPOObjective:
    TERMS: ClassVar[tuple[Term, ...]] = SIDE_TERMS
    TRAITS: ClassVar[Traits] = Traits()

    def __init__(self, config: DPOTermConfig) -> None:
        self.config = config

    @property
    def needs_reference(self) -> bool:
        return True

    def metric_names(self) -> tuple[str, ...]:
        return enabled_names(self.TERMS, self.config)

    def skip_reasons(self, kinds: frozenset[RewardKind]) -> tuple[str, ...]:
        return preference_skip_reasons(kinds)

    def select(self, rollouts: Rollouts, rng: random.Random) -> tuple[list[PreferenceGroup], PairingStats]:
        sets, stats = select_pair_sets(rollouts.rewards, rollouts.kinds)
        items = []
        for s in sets:
            responses = rollouts.responses[s.prompt_idx]
            items.append(
                PreferenceGroup(
                    s.prompt_idx,
                    rollouts.prompt_ids[s.prompt_idx],
                    tuple(responses[j] for j in s.chosen),
                    tuple(responses[j] for j in s.rejected),
                    rollout_idx=(*s.chosen, *s.rejected),
                )
            )
        return items, stats

    def loss(self, items: Sequence[PreferenceGroup], scores: Scores) -> LossOutput:
        """Per item: its chosen rows, then its rejected rows."""
        cfg = self.config
        groups: list[tuple[list[int], list[int]]] = []
        for i, item in enumerate(items):
            first = scores.offsets[i]
            middle = first + len(item.chosen)
            groups.append((list(range(first, middle)), list(range(middle, scores.offsets[i + 1]))))
        out = group_dpo_loss(
            scores.logps,
            scores.ref_logps,
            groups,
            beta=cfg.beta,
            lens=scores.lens,
            length_normalize=cfg.length_normalize,
            nll_scale=cfg.nll_scale,
            nll_length_normalize=cfg.nll_length_normalize,
        )
        n = len(items)
        metrics = {
            "dpo_loss": (detached_mean(out.dpo_loss), n),
            "nll_loss": (detached_mean(out.nll_loss), n),
            "num_pairs": (float(out.num_pairs.sum()), 1.0),
        }
        chosen = [c for cs, _ in groups for c in cs]
        rejected = [r for _, rs in groups for r in rs]
        metrics |= side_metrics(scores, chosen, rejected)
        metrics |= reward_metrics(out.chosen_rewards, out.rejected_rewards)  # over all |Y_c|·|Y_r| pairs
        return LossOutput(out.loss.sum(), n, metrics)


class GroupDPOGRPOObjective:
    """§4.2: L = L_GroupDPO(x, Y_c, Y_r) + α · L_GRPO(x, Y_c ∪ Y_r), per prompt: GroupDPO's
    selection and loss, with a GRPO term on the same responses."""

    TERMS: ClassVar[tuple[Term, ...]] = (*under("dpo", SIDE_TERMS), *under("grpo", GRPO_TERMS))
    TRAITS: ClassVar[Traits] = GroupDPOObjective.TRAITS

    def __init__(self, config: GroupDPOGRPOConfig) -> None:
        self.config = config
        self.group_dpo = GroupDPOObjective(config.dpo)

    @property
    def needs_reference(self) -> bool:
        return True

    def metric_names(self) -> tuple[str, ...]:
        return enabled_names(self.TERMS, self.config)

    def skip_reasons(self, kinds: frozenset[RewardKind]) -> tuple[str, ...]:
        return self.group_dpo.skip_reasons(kinds)

    def select(self, rollouts: Rollouts, rng: random.Random) -> tuple[list[GroupWithAdvantages], PairingStats]:
        """GroupDPO's groups, each response with its advantage over all the prompt's rollouts."""
        groups, stats = self.group_dpo.select(rollouts, rng)
        advantages = grpo_advantages(rollouts.rewards, normalize_std=self.config.grpo.normalize_advantage_std)[0]
        items = []
        for g in groups:
            row = advantages[g.prompt_idx]
            items.append(GroupWithAdvantages(g, tuple(a if (a := row[j]) is not None else 0.0 for j in g.rollout_idx)))
        return items, stats

    def loss(self, items: Sequence[GroupWithAdvantages], scores: Scores) -> LossOutput:
        out = self.group_dpo.loss([item.group for item in items], scores)
        advantages = [a for item in items for a in item.advantages]
        group_ids = [i for i, item in enumerate(items) for _ in item.responses]
        device = scores.token_logps.device
        gr = grpo_loss(
            scores.token_logps,
            scores.mask,
            torch.tensor(advantages, device=device),
            beta=self.config.grpo.kl_beta,
            ref_token_logps=scores.ref_token_logps,
            length_normalize=self.config.grpo.length_normalize,
        )
        grpo_per_prompt = sum_by_group(gr.loss, torch.tensor(group_ids, device=device), len(items))
        out.metrics["grpo_loss"] = (detached_mean(grpo_per_prompt), out.num_items)
        out.metrics["kl"] = (detached_mean(gr.kl), len(advantages))
        return LossOutput(out.loss + self.config.alpha * grpo_per_prompt.sum(), out.num_items, out.metrics)
