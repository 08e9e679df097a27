"""Prompt + response token sequences and their per-token log-probs under a model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from fairseq2.nn import BatchLayout
from torch import Tensor
from torch.nn import Module

from fs2_semionline.losses import token_stats


@dataclass
class ResponseBatch:
    """Right-padded prompt+response sequences; ``mask`` marks response targets."""

    seqs: Tensor  # [B, S]
    seq_lens: list[int]
    mask: Tensor  # [B, S-1], over targets seqs[:, 1:]
    response_lens: Tensor  # [B], float

    @staticmethod
    def build(
        prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_idx: int, device: torch.device
    ) -> "ResponseBatch":
        seq_lens = [len(p) + len(r) for p, r in zip(prompts, responses)]
        width = max(max(seq_lens), 2)
        seqs = torch.full((len(prompts), width), pad_idx, dtype=torch.int64)
        mask = torch.zeros((len(prompts), width - 1), dtype=torch.bool)
        for i, (p, r) in enumerate(zip(prompts, responses)):
            seqs[i, : len(p) + len(r)] = torch.as_tensor([*p, *r], dtype=torch.int64)
            # Target t predicts seqs[t + 1]: response tokens are targets len(p)-1 ...
            mask[i, len(p) - 1 : len(p) - 1 + len(r)] = True
        lens = torch.tensor([float(len(r)) for r in responses])
        return ResponseBatch(seqs.to(device), seq_lens, mask.to(device), lens.to(device))


@dataclass
class ResponseStats:
    logits: Tensor  # [B, S-1, V], the model's output (its dtype)
    token_logps: Tensor  # [B, S-1] float32; 0 outside the response mask
    token_neg_entropy: Tensor  # [B, S-1] float32, Σ_v p log p; 0 outside the response mask


def response_stats(model: Module, batch: ResponseBatch) -> ResponseStats:
    """Per-token log-probs and negative entropy of the response tokens, the softmax in
    fp32 a chunk of tokens at a time (``losses.token_stats``). ``model``: a ``CausalLM``
    or the data-parallel module that wraps one (same call)."""
    inputs = batch.seqs[:, :-1]
    layout = BatchLayout.of(inputs, [max(n - 1, 1) for n in batch.seq_lens])
    logits = model(inputs, layout)
    token_logps, neg_entropy = token_stats(logits, batch.seqs[:, 1:], batch.mask)
    return ResponseStats(logits, token_logps, neg_entropy)
