"""DPO (Eq. 3) on summed sequence log-probabilities, with the length-normalised and
NLL-on-chosen variants the paper's ablations use.

    L = −log σ( β[log π(y_c|x) − log π_ref(y_c|x)] − β[log π(y_r|x) − log π_ref(y_r|x)] )
        + nll_scale · (−log π(y_c|x))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class DPOOutput:
    """Per-pair terms, all of shape [P]."""

    loss: Tensor
    """``dpo_loss + nll_loss``: what is optimised."""
    dpo_loss: Tensor
    """−log σ(z), Eq. 3."""
    nll_loss: Tensor
    """``nll_scale · −log π(y_c|x)`` (zeros when the scale is 0)."""
    chosen_rewards: Tensor
    """β (log π − log π_ref) of the chosen response, as used in z (length-normalised if
    that option is on); detached, for logging."""
    rejected_rewards: Tensor
    """Same for the rejected response; detached."""


def _lengths(lens: Tensor, like: Tensor) -> Tensor:
    # An empty response has log-prob 0; dividing by max(len, 1) keeps it 0, not NaN.
    return lens.to(device=like.device, dtype=like.dtype).clamp(min=1)


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    *,
    beta: float,
    chosen_lens: Tensor | None = None,
    rejected_lens: Tensor | None = None,
    length_normalize: bool = False,
    nll_scale: float = 0.0,
    nll_length_normalize: bool = False,
) -> DPOOutput:
    """Eq. 3 for P pairs; inputs are summed sequence log-probs [P].

    ``length_normalize`` divides each of the four log-probs by its response's length
    (policy and reference of one response by the same length), so that z compares
    per-token log-ratios. ``nll_length_normalize`` divides the NLL term alone by the
    chosen length. Lengths are required by either option. The reference log-probs
    are detached: the reference model is frozen.
    """
    shape = policy_chosen.shape
    others = (("policy_rejected", policy_rejected), ("ref_chosen", ref_chosen), ("ref_rejected", ref_rejected))
    for name, t in others:
        if t.shape != shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    if length_normalize and (chosen_lens is None or rejected_lens is None):
        raise ValueError("length_normalize=True needs chosen_lens and rejected_lens")
    if nll_length_normalize and chosen_lens is None:
        raise ValueError("nll_length_normalize=True needs chosen_lens")

    pc, pr, rc, rr = policy_chosen, policy_rejected, ref_chosen.detach(), ref_rejected.detach()
    if length_normalize:
        assert chosen_lens is not None and rejected_lens is not None
        lc = _lengths(chosen_lens, pc)
        lr = _lengths(rejected_lens, pr)
        pc, rc = pc / lc, rc / lc
        pr, rr = pr / lr, rr / lr

    chosen_rewards = beta * (pc - rc)
    rejected_rewards = beta * (pr - rr)
    dpo = -F.logsigmoid(chosen_rewards - rejected_rewards)

    if nll_scale != 0.0:
        nll = -policy_chosen
        if nll_length_normalize:
            assert chosen_lens is not None
            nll = nll / _lengths(chosen_lens, policy_chosen)
        nll = nll_scale * nll
    else:
        nll = torch.zeros_like(dpo)

    return DPOOutput(
        loss=dpo + nll,
        dpo_loss=dpo,
        nll_loss=nll,
        chosen_rewards=chosen_rewards.detach(),
        rejected_rewards=rejected_rewards.detach(),
    )
