"""GroupDPO (Eq. 4).

For one prompt with correct responses Y_c and incorrect ones Y_r:
    L_GroupDPO = 1/(|Y_c||Y_r|) Σ_{c∈Y_c} Σ_{r∈Y_r} L_DPO(x, c, r)
All pairs of all prompts of a batch go through one vectorised ``dpo_loss`` call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fs2_semionline.losses.dpo import dpo_loss


@dataclass
class GroupDPOOutput:
    """Per-prompt terms are [G]; per-pair terms are [P], P = Σ_g |Y_c^g||Y_r^g|."""

    loss: Tensor
    """[G] mean over the prompt's pairs of (DPO + NLL), Eq. 4."""
    dpo_loss: Tensor
    """[G] mean of the DPO term alone."""
    nll_loss: Tensor
    """[G] mean of the NLL term alone (zeros when its scale is 0)."""
    num_pairs: Tensor
    """[G] |Y_c| · |Y_r| (long)."""
    chosen_rewards: Tensor
    """[P] detached β (log π − log π_ref) of each pair's chosen response."""
    rejected_rewards: Tensor
    """[P] same for the rejected response."""


def _pair_indices(
    groups: Sequence[tuple[Sequence[int], Sequence[int]]], num_responses: int
) -> tuple[list[int], list[int], list[int], list[int]]:
    chosen: list[int] = []
    rejected: list[int] = []
    pair_group: list[int] = []
    num_pairs: list[int] = []
    for g, (cs, rs) in enumerate(groups):
        cs, rs = list(cs), list(rs)
        if not cs or not rs:
            raise ValueError(f"group {g} has {len(cs)} chosen and {len(rs)} rejected responses; both must be non-empty")
        for i in cs + rs:
            if not 0 <= i < num_responses:
                raise ValueError(f"group {g}: response index {i} is outside [0, {num_responses})")
        if set(cs) & set(rs):
            raise ValueError(f"group {g}: responses {sorted(set(cs) & set(rs))} are both chosen and rejected")
        for c in cs:
            for r in rs:
                chosen.append(c)
                rejected.append(r)
        pair_group.extend([g] * (len(cs) * len(rs)))
        num_pairs.append(len(cs) * len(rs))
    return chosen, rejected, pair_group, num_pairs


def group_dpo_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    groups: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    beta: float,
    lens: Tensor | None = None,
    length_normalize: bool = False,
    nll_scale: float = 0.0,
    nll_length_normalize: bool = False,
) -> GroupDPOOutput:
    """Eq. 4 for every prompt of a batch.

    ``policy_logps`` / ``ref_logps`` are the summed log-probs [R] of all responses;
    ``groups[g] = (chosen indices, rejected indices)`` into R. ``lens`` [R] (response
    token counts) is needed by either normalisation option, see ``dpo_loss``. A
    group with an empty side, or no group at all, raises ValueError: the caller's
    pairing step drops such prompts (and skips a batch left with none).
    """
    if policy_logps.dim() != 1 or ref_logps.shape != policy_logps.shape:
        raise ValueError(
            f"expected policy_logps and ref_logps [R], got {tuple(policy_logps.shape)} and {tuple(ref_logps.shape)}"
        )
    if lens is not None and lens.shape != policy_logps.shape:
        raise ValueError(f"lens must be [R], got {tuple(lens.shape)}")
    if not groups:
        raise ValueError("no groups: GroupDPO needs at least one prompt with both sides")

    chosen, rejected, pair_group, num_pairs = _pair_indices(groups, policy_logps.shape[0])
    device = policy_logps.device
    c_idx = torch.tensor(chosen, dtype=torch.long, device=device)
    r_idx = torch.tensor(rejected, dtype=torch.long, device=device)
    g_idx = torch.tensor(pair_group, dtype=torch.long, device=device)
    counts = torch.tensor(num_pairs, dtype=torch.long, device=device)

    out = dpo_loss(
        policy_logps[c_idx],
        policy_logps[r_idx],
        ref_logps[c_idx],
        ref_logps[r_idx],
        beta=beta,
        chosen_lens=None if lens is None else lens[c_idx.to(lens.device)],
        rejected_lens=None if lens is None else lens[r_idx.to(lens.device)],
        length_normalize=length_normalize,
        nll_scale=nll_scale,
        nll_length_normalize=nll_length_normalize,
    )

    def mean_per_group(per_pair: Tensor) -> Tensor:
        sums = torch.zeros(len(num_pairs), dtype=per_pair.dtype, device=device).index_add(0, g_idx, per_pair)
        return sums / counts.to(per_pair.dtype)

    return GroupDPOOutput(
        loss=mean_per_group(out.loss),
        dpo_loss=mean_per_group(out.dpo_loss),
        nll_loss=mean_per_group(out.nll_loss),
        num_pairs=counts,
        chosen_rewards=out.chosen_rewards,
        rejected_rewards=out.rejected_rewards,
    )
