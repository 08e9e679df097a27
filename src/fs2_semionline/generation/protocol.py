"""The generator protocol every rollout backend implements (local sampler, vLLM on Ray).

A generator holds its own copy of the policy's weights, *version* v = the trainer step
whose weights it was last synced to (0 = the seed model). It never uses weights newer
than its last sync, which is what makes semi-online training semi-online.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from torch import Tensor


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0
    top_p: float = 1.0
    max_gen_len: int = 64


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]  # generated tokens, without the final EOS
    text: str
    finished: bool  # ended with EOS rather than at max_gen_len
    logprobs: tuple[float, ...] | None = None
    """The generator's log-prob of each sampled token (raw logits, before temperature)."""


Sampler = Callable[[Sequence[Sequence[int]], int, SamplingConfig, int], list[list[Completion]]]
"""``sample(prompts, num_samples, sampling, seed)`` → completions in prompt order: what
evaluation and validation sample with (``local.PolicySampler``: fairseq2's sampler on a
model; ``local.GeneratorSampler``: a rollout generator, e.g. vLLM)."""


class GeneratorError(RuntimeError):
    """A generator failed in a way a restart does not fix (or a weight load did not happen)."""


class WeightSyncTimeout(GeneratorError):
    """A weight sync exceeded ``generator.sync_timeout_s``; the message names the replica."""


class PendingRollouts(Protocol):
    """A rollout request in flight; ``Generator.wait`` turns it into completions."""


PendingT = TypeVar("PendingT")


class Generator(Protocol[PendingT]):
    """Rollouts from a copy of the policy; ``PendingT`` is its own in-flight request type."""

    @property
    def version(self) -> int: ...

    def sync(self, weights: Mapping[str, Tensor] | Iterable[Mapping[str, Tensor]], version: int) -> None:
        """Loads the trainer's weights (fairseq2 names, full tensors) as ``version``: a
        state dict, or buckets of one (``sharding.full_weight_buckets``), consumed once."""

    def submit(
        self, prompts: Sequence[Sequence[int]], num_rollouts: int, sampling: SamplingConfig, seed: int
    ) -> PendingT:
        """Starts ``num_rollouts`` completions per prompt with the current weights and
        returns at once; reproducible for a given ``seed`` whatever runs beside it."""

    def wait(self, pending: PendingT) -> list[list[Completion]]:
        """The completions of ``submit``, in prompt order."""

    def close(self) -> None: ...


def rollouts(
    generator: Generator[Any], prompts: Sequence[Sequence[int]], num_rollouts: int, sampling: SamplingConfig, seed: int
) -> list[list[Completion]]:
    """Synchronous rollouts: submit, then wait."""
    return generator.wait(generator.submit(prompts, num_rollouts, sampling, seed))
