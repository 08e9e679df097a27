"""GRPO (Eq. 1), on-policy as in the paper: the policy-gradient loss with a k3 KL
penalty to the reference model.

Per sequence y^i of a group:  L_i = −Σ_t ρ_t A(y^i) + β Σ_t k3_t,
  ρ_t = π_θ(y_t|x,y_<t) / sg[π_θ(y_t|x,y_<t)] (1 in value, ∇log π in gradient),
  A(y^i) = r(y^i) − mean_j r(y^j) (``selection.grpo_advantages``),
  k3_t = exp(ref_t − logp_t) − (ref_t − logp_t) − 1.
The group loss of Eq. 1 is the sum of L_i over the group (``sum_by_group``). GRPO is
refused off-policy (s > 1), so PPO's clipped ratio, which only matters there, is not
implemented; the off-policy correction offered is truncated IS (``importance.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class GRPOOutput:
    """Per-sequence terms, all of shape [S]."""

    loss: Tensor
    """``policy_loss + β · kl``: what is optimised."""
    policy_loss: Tensor
    """−Σ_t ρ_t A."""
    kl: Tensor
    """Σ_t k3_t (zeros when β = 0 and no reference is given). Carries the gradient;
    detach it for logging."""


def sum_by_group(values: Tensor, group_ids: Tensor, num_groups: int) -> Tensor:
    """Σ over each group's sequences (the Σ_{y^i∈G} of Eq. 1): [S] -> [num_groups].

    ``group_ids`` must be in [0, num_groups), e.g. the prompt index that GroupDPO uses,
    so that the result lines up with ``group_dpo_loss(...).loss`` per prompt (GroupDPO +
    α·GRPO, ``objectives/group_dpo.py``).
    """
    if values.shape != group_ids.shape:
        raise ValueError(f"shape mismatch: {tuple(values.shape)} vs {tuple(group_ids.shape)}")
    out = torch.zeros(num_groups, dtype=values.dtype, device=values.device)
    return out.index_add(0, group_ids.to(values.device).long(), values)


def grpo_loss(
    token_logps: Tensor,
    mask: Tensor,
    advantages: Tensor,
    *,
    beta: float = 0.0,
    ref_token_logps: Tensor | None = None,
    length_normalize: bool = False,
    token_weights: Tensor | None = None,
) -> GRPOOutput:
    """Eq. 1 per sequence: token log-probs [S, T], mask [S, T], advantages [S] -> [S].

    On-policy (θold = θ, as in the paper's experiments): ρ_t = exp(logp_t − logp_t.detach()),
    1 in value and ∇log π in gradient. Sums run over the valid tokens;
    ``length_normalize`` divides each sequence's policy and KL sums by its token count.
    ``token_weights`` [S, T] (detached) scale each token's policy term: the truncated
    importance weights of :mod:`fs2_semionline.losses.importance`.
    """
    if token_logps.dim() != 2 or mask.shape != token_logps.shape:
        raise ValueError(
            f"expected token_logps and mask [S, T], got {tuple(token_logps.shape)} and {tuple(mask.shape)}"
        )
    if advantages.shape != token_logps.shape[:1]:
        raise ValueError(f"advantages must be [S], got {tuple(advantages.shape)}")
    if beta != 0.0 and ref_token_logps is None:
        raise ValueError("beta != 0 needs ref_token_logps for the KL term")
    if ref_token_logps is not None and ref_token_logps.shape != token_logps.shape:
        raise ValueError(f"ref_token_logps has shape {tuple(ref_token_logps.shape)}, expected {tuple(mask.shape)}")

    valid = mask.bool()
    zero = torch.zeros((), dtype=token_logps.dtype, device=token_logps.device)

    def clean(t: Tensor) -> Tensor:
        # Padding may hold anything (-inf, NaN): select it away before exp / differences.
        return torch.where(valid, t.to(token_logps.dtype), zero)

    logp = clean(token_logps)
    adv = advantages.detach().to(logp.dtype).unsqueeze(-1)

    per_token = -torch.exp(logp - logp.detach()) * adv
    if token_weights is not None:
        if token_weights.shape != token_logps.shape:
            raise ValueError(f"token_weights has shape {tuple(token_weights.shape)}, expected {tuple(mask.shape)}")
        per_token = per_token * clean(token_weights).detach()
    policy_loss = torch.where(valid, per_token, zero).sum(dim=-1)

    if ref_token_logps is not None:
        diff = clean(ref_token_logps).detach() - logp
        k3 = torch.exp(diff) - diff - 1.0
        kl = torch.where(valid, k3, zero).sum(dim=-1)
    else:
        kl = torch.zeros_like(policy_loss)

    if length_normalize:
        num_tokens = valid.sum(dim=-1).clamp(min=1).to(policy_loss.dtype)
        policy_loss = policy_loss / num_tokens
        kl = kl / num_tokens

    return GRPOOutput(loss=policy_loss + beta * kl, policy_loss=policy_loss, kl=kl)
