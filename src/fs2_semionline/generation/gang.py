"""Data-parallel trainers share one generator: rank 0 owns it, the others ask through
the data-parallel gang's process group (``gather_object`` / ``scatter_object_list``), so
there is one set of actors per run.

Every rank calls ``submit``/``wait``/``sync`` in the same order (they run the same
steps), which is what collective calls need. Prompts are gathered on rank 0, which
generates for their concatenation (seeds follow the position in it, so each rank's
prompts get their own streams), and each rank receives only its own completions
(a scatter): no rank but 0 ever holds another rank's rollouts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fairseq2.gang import Gang
from torch import Tensor

from fs2_semionline.generation.protocol import Completion, Generator, SamplingConfig
from fs2_semionline.generation.sharding import WeightBuckets, as_buckets


@dataclass
class _GangPending:
    inner: Any  # rank 0: the owner's handle; other ranks: None
    offsets: list[int]  # rank 0: where each rank's prompts start in the concatenation
    counts: list[int]  # rank 0: each rank's number of prompts


class GangGenerator:
    def __init__(self, gang: Gang, owner: Generator[Any] | None) -> None:
        if (gang.rank == 0) != (owner is not None):
            raise ValueError("exactly rank 0 of the gang owns the generator")
        self._gang = gang
        self._owner = owner
        self._version = 0

    @property
    def version(self) -> int:
        return self._version

    def sync(self, weights: Mapping[str, Tensor] | WeightBuckets, version: int) -> None:
        """Every rank walks the buckets (gathering a sharded policy is a collective);
        rank 0 hands them to the generator, the others drop them as they come."""
        if self._owner is not None:
            self._owner.sync(weights, version)
        else:
            for _ in as_buckets(weights):
                pass
        self._version = version

    def submit(
        self, prompts: Sequence[Sequence[int]], num_rollouts: int, sampling: SamplingConfig, seed: int
    ) -> _GangPending:
        import torch.distributed as dist

        group = self._gang.as_process_group()
        every: list[Any] | None = [None] * self._gang.size if self._gang.rank == 0 else None
        dist.gather_object([list(p) for p in prompts], every, group=group, group_dst=0)
        inner, counts = None, []
        if self._owner is not None:
            assert every is not None
            counts = [len(p) for p in every]
            inner = self._owner.submit([p for ps in every for p in ps], num_rollouts, sampling, seed)
        return _GangPending(inner, [sum(counts[:r]) for r in range(len(counts))], counts)

    def wait(self, pending: _GangPending) -> list[list[Completion]]:
        import torch.distributed as dist

        parts: list[Any] | None = None
        if self._owner is not None:
            everything = self._owner.wait(pending.inner)
            parts = [everything[o : o + n] for o, n in zip(pending.offsets, pending.counts)]
        box: list[Any] = [None]
        dist.scatter_object_list(box, parts, group=self._gang.as_process_group(), group_src=0)
        return box[0]  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._owner is not None:
            self._owner.close()
