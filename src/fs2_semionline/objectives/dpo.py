"""DPO (Eq. 3): one pair per prompt, the loss on the pairs' sequence
log-probs, and the opt-in truncated importance weight per pair.

Pairs: binary rewards → a random correct against a random incorrect rollout; scalar
rewards → the best against the worst (``selection.select_dpo_pairs``). Fixed pairs read
from a file (offline DPO form (b)) are a DPO selection too (:func:`fixed_pairs`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import ClassVar

from torch import Tensor

from fs2_semionline.config.training import DPOConfig
from fs2_semionline.core.metrics import Metric, Term, enabled_names
from fs2_semionline.core.tasks import RewardKind
from fs2_semionline.data.jsonl import PairExample
from fs2_semionline.losses import dpo_loss, truncated_weights
from fs2_semionline.objectives.base import (
    IS_TERM,
    LossOutput,
    PreferencePair,
    Response,
    Rollouts,
    Scores,
    Traits,
    detached_mean,
    preference_skip_reasons,
)
from fs2_semionline.objectives.selection import PairingStats, select_dpo_pairs

#: What a preference objective (DPO, GroupDPO) logs about its chosen and rejected sides.
SIDE_TERMS: tuple[Term, ...] = (
    Term("dpo_loss", Metric("DPO Loss", 91)),
    Term("nll_loss", Metric("NLL Loss", 92), when="nll_scale"),
    Term("chosen_logps", Metric("Chosen Log-prob", 120)),
    Term("rejected_logps", Metric("Rejected Log-prob", 121)),
    Term("chosen_len", Metric("Chosen Length", 122)),
    Term("rejected_len", Metric("Rejected Length", 123)),
    # What TRL and torchtune users read first: how often the implicit reward β log π/π_ref
    # ranks chosen above rejected, and by how much (both before this step's update).
    Term("reward_accuracy", Metric("Reward Accuracy", 124)),
    Term("reward_margin", Metric("Reward Margin", 125)),
    Term("num_pairs", Metric("Pairs", 130, "sum")),
)


def side_metrics(scores: Scores, chosen: list[int], rejected: list[int]) -> dict[str, tuple[float, float]]:
    """Mean log-prob and length of the chosen and the rejected responses (rows)."""
    c, r = scores.index(chosen), scores.index(rejected)
    return {
        "chosen_logps": (detached_mean(scores.logps[c]), len(chosen)),
        "rejected_logps": (detached_mean(scores.logps[r]), len(rejected)),
        "chosen_len": (detached_mean(scores.lens[c]), len(chosen)),
        "rejected_len": (detached_mean(scores.lens[r]), len(rejected)),
    }


def reward_metrics(chosen_rewards: Tensor, rejected_rewards: Tensor) -> dict[str, tuple[float, float]]:
    """Per pair, the implicit rewards as z uses them: the share ranked right, the mean margin."""
    margin = (chosen_rewards - rejected_rewards).detach().double()
    n = float(margin.numel())
    return {"reward_accuracy": (float((margin > 0).double().mean()), n), "reward_margin": (float(margin.mean()), n)}


def fixed_pairs(pairs: Sequence[PairExample]) -> list[PreferencePair]:
    """Pairs read from a file as a DPO selection (no generator log-probs)."""
    return [
        PreferencePair(i, tuple(p.prompt_ids), Response(tuple(p.chosen_ids)), Response(tuple(p.rejected_ids)))
        for i, p in enumerate(pairs)
    ]


class DPOObjective:
    TERMS: ClassVar[tuple[Term, ...]] = (*SIDE_TERMS, IS_TERM)
    TRAITS: ClassVar[Traits] = Traits(fixed_pairs=True)

    def __init__(self, config: DPOConfig) -> None:
        self.config = config
        self.importance_cap = config.importance_cap_or_none
        """C of the truncated importance weights (None: no correction)."""

    @property
    def needs_reference(self) -> bool:
        return True

    def metric_names(self) -> tuple[str, ...]:
        return enabled_names(self.TERMS, self.config)

    def skip_reasons(self, kinds: frozenset[RewardKind]) -> tuple[str, ...]:
        return preference_skip_reasons(kinds)

    def select(self, rollouts: Rollouts, rng: random.Random) -> tuple[list[PreferencePair], PairingStats]:
        pairs, stats = select_dpo_pairs(rollouts.rewards, rollouts.kinds, rng)
        items = [
            PreferencePair(
                p.prompt_idx,
                rollouts.prompt_ids[p.prompt_idx],
                rollouts.responses[p.prompt_idx][p.chosen_idx],
                rollouts.responses[p.prompt_idx][p.rejected_idx],
            )
            for p in pairs
        ]
        return items, stats

    def loss(self, items: Sequence[PreferencePair], scores: Scores) -> LossOutput:
        """Row ``offsets[i]`` is pair i's chosen response, the next its rejected one."""
        cfg = self.config
        chosen = [scores.offsets[i] for i in range(len(items))]
        rejected = [c + 1 for c in chosen]
        c, r = scores.index(chosen), scores.index(rejected)
        out = dpo_loss(
            scores.logps[c],
            scores.logps[r],
            scores.ref_logps[c],
            scores.ref_logps[r],
            beta=cfg.beta,
            chosen_lens=scores.lens[c],
            rejected_lens=scores.lens[r],
            length_normalize=cfg.length_normalize,
            nll_scale=cfg.nll_scale,
            nll_length_normalize=cfg.nll_length_normalize,
        )
        per_pair: Tensor = out.loss
        n = len(items)
        metrics = {
            "dpo_loss": (detached_mean(out.dpo_loss), n),
            "nll_loss": (detached_mean(out.nll_loss), n),
            "num_pairs": (float(n), 1.0),
        }
        metrics |= side_metrics(scores, chosen, rejected)
        metrics |= reward_metrics(out.chosen_rewards, out.rejected_rewards)
        if self.importance_cap is not None and scores.mismatch is not None:
            # A pair (y_w, y_l) is drawn from μ × μ: its weight is ρ(y_w)·ρ(y_l), in log space.
            log_pair = scores.mismatch.seq_log_ratio[c] + scores.mismatch.seq_log_ratio[r]
            per_pair = per_pair * truncated_weights(log_pair, self.importance_cap).to(per_pair.dtype)
            metrics["is_truncated"] = (float((log_pair > math.log(self.importance_cap)).double().mean()), n)
        return LossOutput(per_pair.sum(), n, metrics)
