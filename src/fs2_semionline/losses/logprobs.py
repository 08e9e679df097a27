"""Per-token and per-sequence log-probabilities, and the entropy term of §4.2.

Every loss of the paper (Eq. 1, 3, 4) is written in terms of log π(y_t | x, y_<t);
they are computed here once, in float32, so that bf16 logits do not lose the small
differences that DPO and the GRPO ratio depend on.
"""

from __future__ import annotations

import torch
from torch import Tensor

CHUNK_TOKENS = 1024
"""Rows of the vocabulary softmax computed at once: an fp32 temporary of
CHUNK_TOKENS × V (Llama-3's V = 128,256: 0.5 GB) instead of B × T × V (16 × 2,248 tokens:
18 GB per copy)."""


def _chunk_stats(flat_logits: Tensor, rows: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    logps = torch.log_softmax(flat_logits.index_select(0, rows).float(), dim=-1)
    token = logps.gather(-1, targets.index_select(0, rows).unsqueeze(-1)).squeeze(-1)
    # Zero the -inf log-probs before the product so that neither value nor gradient is NaN.
    neg_entropy = (logps.exp() * logps.masked_fill(torch.isneginf(logps), 0.0)).sum(dim=-1)
    return token, neg_entropy


def token_stats(
    logits: Tensor, targets: Tensor, mask: Tensor | None = None, *, chunk_tokens: int = CHUNK_TOKENS
) -> tuple[Tensor, Tensor]:
    """Per target: log π(y_t | x, y_<t) and Σ_v p log p (the negative entropy), float32.

    [B, T, V], [B, T] -> [B, T], [B, T]. Only the positions in ``mask`` (default: all)
    are computed; the others are 0. The softmax runs in float32 (bf16 logits lose the
    small differences DPO and the GRPO ratio depend on) but a chunk of rows at a time,
    and under gradient checkpointing, so no full-vocabulary fp32 copy of the batch's
    logits is ever held, in the forward or the backward pass.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, T, V] and targets [B, T], got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    batch, steps, vocab = logits.shape
    flat = logits.reshape(batch * steps, vocab)
    flat_targets = targets.reshape(-1).long().clamp(min=0)
    if mask is None:
        rows = torch.arange(batch * steps, device=logits.device)
    else:
        rows = mask.reshape(-1).bool().nonzero().squeeze(-1)
    token = torch.zeros(batch * steps, dtype=torch.float32, device=logits.device)
    neg_entropy = torch.zeros(batch * steps, dtype=torch.float32, device=logits.device)
    checkpointed = torch.is_grad_enabled() and logits.requires_grad
    for start in range(0, rows.numel(), chunk_tokens):
        chunk = rows[start : start + chunk_tokens]
        if checkpointed:
            from torch.utils.checkpoint import checkpoint

            tok, ent = checkpoint(_chunk_stats, flat, chunk, flat_targets, use_reentrant=False)
        else:
            tok, ent = _chunk_stats(flat, chunk, flat_targets)
        token = token.index_add(0, chunk, tok)
        neg_entropy = neg_entropy.index_add(0, chunk, ent)
    if rows.numel() == 0 and logits.requires_grad:  # still part of the graph, with zero gradient
        token = token + flat.sum().float() * 0.0
        neg_entropy = neg_entropy + flat.sum().float() * 0.0
    return token.view(batch, steps), neg_entropy.view(batch, steps)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask``; 0 (not NaN) when the mask is empty."""
    valid = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    return torch.where(valid, values, zero).sum() / valid.sum().clamp(min=1)


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
