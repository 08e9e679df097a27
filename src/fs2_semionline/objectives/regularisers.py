"""The entropy regulariser of §4.2: coef · mean over rollout tokens of −H(π(· | x, y_<t))."""

from __future__ import annotations

from torch import Tensor

from fs2_semionline.objectives.logprobs import negative_entropy

__all__ = ["entropy_regulariser", "negative_entropy"]


def entropy_regulariser(logits: Tensor, mask: Tensor, coef: float) -> Tensor:
    """``coef · negative_entropy(logits, mask)``, a scalar to add to the loss (§4.2).

    A positive ``coef`` rewards higher entropy. The caller skips this (and the
    [B, T, V] float32 softmax it needs) when ``coef == 0``.
    """
    return coef * negative_entropy(logits, mask)
