"""Per-token and per-sequence log-probabilities, and the entropy term of §4.2.

Every loss of the paper (Eq. 1, 3, 4) is written in terms of log π(y_t | x, y_<t);
they are computed here once, in float32, so that bf16 logits do not lose the small
differences that DPO and the GRPO ratio depend on.
"""

from __future__ import annotations

import torch
from torch import Tensor


def token_logprobs(logits: Tensor, targets: Tensor) -> Tensor:
    """log π(y_t | x, y_<t) for each target: [B, T, V], [B, T] -> [B, T] (float32).

    ``logits[:, t]`` must already be the prediction for ``targets[:, t]`` (shifted by
    the caller). Negative targets (e.g. an ignore index of -100 at padding) are read
    as token 0; their values are meaningless and must be masked out downstream.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, T, V] and targets [B, T], got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    logps = torch.log_softmax(logits.float(), dim=-1)
    index = targets.long().clamp(min=0).unsqueeze(-1)
    return logps.gather(-1, index).squeeze(-1)


def sequence_logprobs(token_logps: Tensor, mask: Tensor) -> Tensor:
    """log π(y | x) = Σ_t log π(y_t | ...) over the response tokens (Eq. 3): [B, T] -> [B].

    Padded positions are *selected away* (not multiplied by 0), so whatever they hold,
    even inf or NaN, reaches neither the value nor the gradient. An empty response
    has log-probability 0.
    """
    if token_logps.shape != mask.shape:
        raise ValueError(f"shape mismatch: {tuple(token_logps.shape)} vs {tuple(mask.shape)}")
    zero = torch.zeros((), dtype=token_logps.dtype, device=token_logps.device)
    return torch.where(mask.bool(), token_logps, zero).sum(dim=-1)


def negative_entropy(logits: Tensor, mask: Tensor) -> Tensor:
    """Mean over the masked tokens of Σ_v p log p, the −entropy regulariser of §4.2.

    Returns a float32 scalar; 0 (not NaN) when the mask is empty. Vocabulary entries
    with logit −inf (p = 0) contribute 0, as the limit p log p -> 0 says.
    """
    if logits.dim() != 3 or mask.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, T, V] and mask [B, T], got {tuple(logits.shape)} "
            f"and {tuple(mask.shape)}"
        )
    logps = torch.log_softmax(logits.float(), dim=-1)
    # Zero the -inf log-probs before the product so that neither value nor gradient is NaN.
    safe_logps = logps.masked_fill(torch.isneginf(logps), 0.0)
    per_token = (logps.exp() * safe_logps).sum(dim=-1)
    valid = mask.bool()
    zero = torch.zeros((), dtype=per_token.dtype, device=per_token.device)
    total = torch.where(valid, per_token, zero).sum()
    return total / valid.sum().clamp(min=1)
