"""How off-policy a step is, and the opt-in truncated importance-sampling correction.

The rollouts are sampled from μ, the generator's copy of the policy: the weights of its
last sync (version v ≤ t) served by the generator's kernels (vLLM: fused, other
reduction orders, bf16). The loss is computed under π_θ, the trainer's weights at step
t. Per sampled token y_k of a response y:

    δ_k = log π_θ(y_k | x, y_<k) − log μ(y_k | x, y_<k)        ρ(y) = exp(Σ_k δ_k)

mean and max |δ_k| and ρ(y) measure the mismatch: kernel noise only at s = 1, growing
with s as θ moves away from θ_v (semi-online), largest offline.

Truncated importance sampling (``loss.config.importance_sampling: truncated``) reweights the
gradient towards what it would be had the rollouts come from π_θ, with weights capped
at C (``loss.config.importance_cap``) so their variance stays bounded. The weights are
detached: they scale the gradient and carry none.

- GRPO, per token (the correction of "Your Efficient RL Framework Secretly Brings You
  Off-Policy RL Training", 2025):
      ∇ = Σ_k min(exp δ_k, C) · A · ∇ log π_θ(y_k | x, y_<k)
- DPO, per pair, on the sequence log-probs the loss is built from (a pair (y_w, y_l) is
  drawn from μ × μ):
      ℓ'(y_w, y_l) = min(ρ(y_w) ρ(y_l), C) · ℓ(y_w, y_l)

Truncation itself goes back to "Truncated Importance Sampling" (J. Comput. Graph.
Stat., 2008). The paper trains without a correction (the default, ``none``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Mismatch:
    """Detached statistics of one batch of responses ([S, T] tensors, mask [S, T])."""

    token_log_ratio: Tensor
    """δ per token, 0 where masked."""
    seq_log_ratio: Tensor
    """Σ_k δ_k per response, [S]."""
    num_tokens: int

    @property
    def mean_abs(self) -> float:
        return float(self.token_log_ratio.abs().sum()) / max(self.num_tokens, 1)

    @property
    def max_abs(self) -> float:
        return float(self.token_log_ratio.abs().max()) if self.num_tokens else 0.0


def mismatch(train_token_logps: Tensor, gen_token_logps: Tensor, mask: Tensor) -> Mismatch:
    if train_token_logps.shape != gen_token_logps.shape or mask.shape != train_token_logps.shape:
        raise ValueError(
            f"expected [S, T] log-probs and mask of one shape, got {tuple(train_token_logps.shape)}, "
            f"{tuple(gen_token_logps.shape)} and {tuple(mask.shape)}"
        )
    valid = mask.bool()
    delta = torch.where(valid, train_token_logps.detach().double() - gen_token_logps.double(), 0.0)
    return Mismatch(delta, delta.sum(dim=-1), int(valid.sum()))


def truncated_weights(log_ratio: Tensor, cap: float) -> Tensor:
    """min(exp(log_ratio), cap), computed in log space (a long sequence's ratio
    overflows), detached."""
    if cap <= 0:
        raise ValueError(f"the importance cap must be > 0, got {cap}")
    return torch.exp(log_ratio.detach().clamp(max=math.log(cap)))
