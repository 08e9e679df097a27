"""``preference_finetune`` with one poisoned forward pass (fault injection for the
voided-step tests in ``test_fsdp.py`` and ``test_preference_finetune.py``).

On rank ``NAN_RANK``, at step ``NAN_STEP``, micro-batch ``NAN_MICRO``, a forward hook
multiplies the output of the policy's first decoder layer by NaN: the weights stay
finite, the forward pass does not (as in a bf16 overflow). Everything else is the
real recipe (under torchrun when run as a script).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from fs2_semionline.units.preference import PreferenceUnit

_process_batch = PreferenceUnit.process_batch


def poisoned_process_batch(rank: int, step: int, micro: int) -> Callable[..., tuple[torch.Tensor, int]]:
    """``PreferenceUnit.process_batch`` with a NaN forward at (rank, step, micro-batch)."""

    def process_batch(self: PreferenceUnit, batch: Any, metric_bag: Any) -> tuple[torch.Tensor, int]:
        if not (self._dp_gang.rank == rank and self._step_nr == step and batch.micro == micro):
            return _process_batch(self, batch, metric_bag)
        layer = next(m for name, m in self._policy.named_modules() if name.endswith("layers.0"))
        handle = layer.register_forward_hook(lambda module, args, out: out * float("nan"))
        try:
            return _process_batch(self, batch, metric_bag)
        finally:
            handle.remove()

    return process_batch


if __name__ == "__main__":
    from fs2_semionline.recipes.preference_finetune import main

    where = (int(os.environ[k]) for k in ("NAN_RANK", "NAN_STEP", "NAN_MICRO"))
    PreferenceUnit.process_batch = poisoned_process_batch(*where)  # type: ignore[method-assign]
    main()
