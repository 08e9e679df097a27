"""What fairseq2's data reader hands the training unit: a micro-batch of one step's
prompts (with the rest of its sync window) or of fixed pairs."""

from __future__ import annotations

from dataclasses import dataclass

from fairseq2.device import Device, SupportsDeviceTransfer

from fs2_semionline.data.jsonl import PairExample, PromptExample


@dataclass
class PromptBatch(SupportsDeviceTransfer):
    """One micro-batch of one step's prompts on this data-parallel rank (they stay on the
    CPU; the unit moves tensors itself).

    ``window`` holds this rank's prompts of this step and of the steps up to the next
    generator sync (``index`` is this step's place in it), so the generator can be
    handed all of them right after a sync and work ahead of the trainer (asynchronous
    semi-online). With gradient accumulation (``trainer.grad_accumulation.num_batches``
    = k) fairseq2 calls the unit k times per step; ``micro`` says which k-th of the
    step's prompts this call trains on. Rollouts, rewards and pairs are made once per
    step, for the whole step, whatever k is.
    """

    window: tuple[list[PromptExample], ...]
    index: int = 0
    micro: int = 0
    num_micro: int = 1

    @property
    def step_examples(self) -> list[PromptExample]:
        return self.window[self.index]

    @property
    def examples(self) -> list[PromptExample]:
        """This micro-batch's prompts."""
        start, end = micro_range(len(self.step_examples), self.micro, self.num_micro)
        return self.step_examples[start:end]

    def to(self, device: Device, *, non_blocking: bool = False) -> None:
        """Nothing to move: rollouts are generated from the prompts' token ids."""


@dataclass
class PairBatch(SupportsDeviceTransfer):
    """Offline DPO form (b): fixed pairs read from a file; no generation, no rewards.
    ``pairs`` are the whole step's; ``micro`` as in :class:`PromptBatch`."""

    pairs: list[PairExample]
    micro: int = 0
    num_micro: int = 1

    def to(self, device: Device, *, non_blocking: bool = False) -> None:
        """Nothing to move: the unit builds its tensors on the device."""


def micro_range(num_items: int, micro: int, num_micro: int) -> tuple[int, int]:
    """[start, end) of micro-batch ``micro`` of ``num_micro`` equal parts of a step."""
    size = num_items // num_micro
    return micro * size, (micro + 1) * size if micro < num_micro - 1 else num_items


def sync_steps(step_nr: int, every_n_steps: int | None) -> bool:
    """Steps are 1-based; the generator syncs before steps 1, s+1, 2s+1, ... (offline: 1 only)."""
    if every_n_steps is None:
        return step_nr == 1
    return (step_nr - 1) % every_n_steps == 0
