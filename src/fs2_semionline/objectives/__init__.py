"""Losses of "Bridging Offline and Online Reinforcement Learning for LLMs"
(arXiv 2506.21495): DPO (Eq. 3), GroupDPO (Eq. 4), GRPO (Eq. 1), their combination
and the entropy regulariser (§4.2). Pure torch, no fairseq2 dependency."""

from fs2_semionline.objectives.dpo import DPOOutput, dpo_loss
from fs2_semionline.objectives.group_dpo import GroupDPOOutput, combined_loss, group_dpo_loss
from fs2_semionline.objectives.grpo import GRPOOutput, group_advantages, grpo_loss, sum_by_group
from fs2_semionline.objectives.importance import Mismatch, mismatch, truncated_weights
from fs2_semionline.objectives.logprobs import (
    masked_mean,
    negative_entropy,
    sequence_logprobs,
    token_logprobs,
    token_stats,
)
from fs2_semionline.objectives.regularisers import entropy_regulariser

__all__ = [
    "DPOOutput",
    "GRPOOutput",
    "GroupDPOOutput",
    "combined_loss",
    "dpo_loss",
    "entropy_regulariser",
    "group_advantages",
    "group_dpo_loss",
    "grpo_loss",
    "negative_entropy",
    "sequence_logprobs",
    "sum_by_group",
    "token_logprobs",
    "token_stats",
    "masked_mean",
    "Mismatch",
    "mismatch",
    "truncated_weights",
]
