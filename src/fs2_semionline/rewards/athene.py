"""The Athene-RM reward head: ``LlamaModel`` + ``v_head``, read at the CLS token.

The architecture of Nexusflow's Athene-RM-8B (https://huggingface.co/Nexusflow/Athene-RM-8B)
is defined in code in its model card's "Usage" section (README added 2024-10-21; the
identical code is in the Athene-RM-70B card, huggingface.co/Nexusflow/Athene-RM-70B
commit e71206c, and in AllenAI RewardBench's ``rewardbench/models/athene.py``). This
module reproduces it, so that :class:`~fs2_semionline.rewards.reward_model.RewardModel`
loads the checkpoint with ``head="athene"``. The card says:

* ``class AtheneForSequenceClassification(LlamaPreTrainedModel)`` holds
  ``self.model = LlamaModel(config)`` and
  ``self.v_head = nn.Linear(config.hidden_size, 1, bias=False)`` with
  ``self.CLS_ID = 128003`` (``<|reserved_special_token_1|>`` in the Llama-3
  vocabulary);
* its ``forward`` applies ``v_head`` to ``hidden_states[-1]`` at every position
  and returns, per row, the value at the *last* position whose id is ``CLS_ID``
  (``c_inds = (input_ids[i] == self.CLS_ID).nonzero(); c_ind = c_inds[-1]``).

Deliberate differences: we use ``last_hidden_state`` (equal to ``hidden_states[-1]``,
without keeping every layer's activations), and a row without a CLS token scores NaN
instead of raising. How the scored text is built (chat template + CLS token, no
truncation) is :mod:`~fs2_semionline.rewards.reward_model`'s business.

This module imports torch and transformers.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LlamaConfig, LlamaModel, LlamaPreTrainedModel

__all__ = [
    "ATHENE_CLS_ID",
    "AtheneForSequenceClassification",
]

#: ``self.CLS_ID`` of the model card: ``<|reserved_special_token_1|>`` in Llama-3.
ATHENE_CLS_ID = 128003


class AtheneForSequenceClassification(LlamaPreTrainedModel):
    """Athene-RM's architecture as its model card defines it: ``LlamaModel`` + ``v_head``.

    The checkpoint's keys are ``model.*`` and ``v_head.weight``; ``forward`` returns
    ``{"scores": ...}`` like the card, with NaN for a row that has no CLS token
    (the card's code raises there) so the caller can turn it into ``None``.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__(config)
        self.model = LlamaModel(config)
        self.v_head = nn.Linear(config.hidden_size, 1, bias=False)
        self.CLS_ID = ATHENE_CLS_ID
        self.post_init()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        hidden = self.model(input_ids, attention_mask=attention_mask).last_hidden_state
        rewards = self.v_head(hidden).squeeze(-1)  # [batch, seq]
        is_cls = input_ids == self.CLS_ID
        if attention_mask is not None:
            is_cls &= attention_mask.bool()
        positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
        last_cls = (positions * is_cls).argmax(-1)  # the card's ``c_inds[-1]``
        scores = rewards.gather(1, last_cls[:, None]).squeeze(1)
        return {"scores": torch.where(is_cls.any(-1), scores, torch.nan)}
