"""Losses of "Bridging Offline and Online Reinforcement Learning for LLMs"
(arXiv 2506.21495): DPO (Eq. 3), GroupDPO (Eq. 4), GRPO (Eq. 1), the log-probs and
entropies they are built from, and the mismatch / importance weights; ``objectives/``
turns them into objectives. Pure torch, no fairseq2 dependency."""

from fs2_semionline.losses.dpo import DPOOutput, dpo_loss
from fs2_semionline.losses.group_dpo import GroupDPOOutput, group_dpo_loss
from fs2_semionline.losses.grpo import GRPOOutput, grpo_loss, sum_by_group
from fs2_semionline.losses.importance import Mismatch, mismatch, truncated_weights
from fs2_semionline.losses.logprobs import masked_mean, sequence_logprobs, token_stats

__all__ = [
    "DPOOutput",
    "GRPOOutput",
    "GroupDPOOutput",
    "dpo_loss",
    "group_dpo_loss",
    "grpo_loss",
    "sequence_logprobs",
    "sum_by_group",
    "token_stats",
    "masked_mean",
    "Mismatch",
    "mismatch",
    "truncated_weights",
]
