"""Data-parallel trainers share one generator: rank 0 owns it, the others ask through
fairseq2's gang (``broadcast_objects``), so there is one set of actors per run.

Every rank calls ``submit``/``wait``/``sync`` in the same order (they run the same
steps), which is what collective calls need. Rank 0 generates for the concatenation of
all ranks' prompts; seeds follow the position in that concatenation, so each rank's
prompts get their own streams.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fairseq2.gang import Gang
from torch import Tensor

from fs2_semionline.generation.protocol import Completion, Generator, SamplingConfig


@dataclass
class _GangPending:
    inner: Any  # rank 0: the owner's handle; other ranks: None
    offsets: list[int]  # where each rank's prompts start in the concatenation
    counts: list[int]


class GangGenerator:
    def __init__(self, gang: Gang, owner: Generator | None) -> None:
        if (gang.rank == 0) != (owner is not None):
            raise ValueError("exactly rank 0 of the gang owns the generator")
        self._gang = gang
        self._owner = owner
        self._version = 0

    @property
    def version(self) -> int:
        return self._version

    def sync(self, state_dict: Mapping[str, Tensor], version: int) -> None:
        """Data-parallel replicas hold equal weights: rank 0's copy is the policy."""
        if self._owner is not None:
            self._owner.sync(state_dict, version)
        self._version = version

    def submit(
        self, prompts: Sequence[Sequence[int]], num_rollouts: int, sampling: SamplingConfig, seed: int
    ) -> _GangPending:
        every: list[list[list[int]]] = []
        for source in range(self._gang.size):
            box: list[object] = [[list(p) for p in prompts] if source == self._gang.rank else None]
            self._gang.broadcast_objects(box, source_rank=source)
            every.append(box[0])  # type: ignore[arg-type]
        counts = [len(p) for p in every]
        offsets = [sum(counts[:r]) for r in range(len(counts))]
        inner = None
        if self._owner is not None:
            inner = self._owner.submit([p for ps in every for p in ps], num_rollouts, sampling, seed)
        return _GangPending(inner, offsets, counts)

    def wait(self, pending: _GangPending) -> list[list[Completion]]:  # type: ignore[override]
        box: list[object] = [self._owner.wait(pending.inner) if self._owner is not None else None]
        self._gang.broadcast_objects(box, source_rank=0)
        everything: list[list[Completion]] = box[0]  # type: ignore[assignment]
        start = pending.offsets[self._gang.rank]
        return everything[start : start + pending.counts[self._gang.rank]]

    def close(self) -> None:
        if self._owner is not None:
            self._owner.close()
