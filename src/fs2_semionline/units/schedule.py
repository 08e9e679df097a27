"""When the generator (and the reference) take the policy's weights, and which
rollouts the generator works on between syncs.

    every s steps: trainer weights ─► generator (version v = step − 1); reference ←
    policy if configured; right after the sync the generator is handed the prompts of
    the next s steps (one window) and works through them while the trainer trains.

Every rank calls every method (gathering sharded weights is a collective). Resuming
needs no saved state: the generator's weights at a sync step are the policy's weights
at that step (checkpoints are on sync boundaries, which the recipe enforces), and the
rollouts of step t are seeded from (seed, t) wherever they are submitted from, so
working ahead changes no sample.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from fairseq2.gang import Gang
from fairseq2.models.clm import CausalLM
from torch.nn import Module

from fs2_semionline.config.training import ReferenceSyncSection, RolloutGeneratorSection
from fs2_semionline.core.seeding import step_seed
from fs2_semionline.data.batches import PromptBatch, sync_steps
from fs2_semionline.generation.protocol import Completion, Generator, PendingRollouts, SamplingConfig
from fs2_semionline.generation.sharding import copy_weights, full_weight_buckets


class RolloutSchedule:
    def __init__(
        self,
        generator: Generator[Any],
        policy_module: Module,
        reference: CausalLM | None,
        *,
        config: RolloutGeneratorSection,
        reference_sync: ReferenceSyncSection,
        seed: int,
        dp_gang: Gang,
        sync_dtype: torch.dtype | None = None,
    ) -> None:
        """``sync_dtype``: the generator's serving dtype; weights are cast as they are gathered."""
        self.generator = generator
        self._policy_module = policy_module
        self._reference = reference
        self._config = config
        self._ref_sync = reference_sync
        self._seed = seed
        self._dp_gang = dp_gang
        self._sync_dtype = sync_dtype
        self._pending: list[PendingRollouts | None] = []
        self._sampling = SamplingConfig(config.temperature, config.top_p, config.max_gen_len)

    def before_step(self, step: int) -> float:
        """Syncs what is due before ``step``; returns the seconds it took."""
        start = time.perf_counter()
        boundary = sync_steps(step, self._config.sync_every_n_steps)
        if boundary and self.generator.version != step - 1:  # a validation may have synced already
            self._sync_generator(version=step - 1)
        if self._reference is not None and step > 1:
            mode = self._ref_sync.mode
            if (mode == "with_generator" and boundary) or (
                mode == "every_n_steps" and sync_steps(step, self._ref_sync.every_n_steps)
            ):
                copy_weights(self._reference, self._policy_module)
        return time.perf_counter() - start

    def rollouts(self, batch: PromptBatch, step: int) -> list[list[Completion]]:
        """This step's rollouts; at the start of a window, the whole window is submitted."""
        window = batch.window
        if batch.index == 0:
            if any(p is not None for p in self._pending):
                raise RuntimeError(f"step {step}: a new rollout window began before the last one was consumed")
            self._pending = [
                self.generator.submit(
                    [e.token_ids for e in examples],
                    self._config.num_rollouts,
                    self._sampling,
                    seed=step_seed(self._seed, step + i) >> 1,
                )
                for i, examples in enumerate(window)
            ]
        pending = self._pending[batch.index] if batch.index < len(self._pending) else None
        if pending is None:
            raise RuntimeError(
                f"step {step}: no rollouts were submitted for position {batch.index} of its window; "
                "a run must start or resume on a generator sync boundary"
            )
        self._pending[batch.index] = None
        return self.generator.wait(pending)

    def hold_weights_of(self, step: int) -> bool:
        """For validation after ``step``: makes the generator hold the policy's weights of
        ``step`` if that is the sync step ``step + 1`` makes anyway (a sync boundary, no
        rollouts pending), and says whether it now does."""
        if self.generator.version == step:
            return True
        s = self._config.sync_every_n_steps
        if s is None or step % s != 0 or any(p is not None for p in self._pending):
            return False
        self._sync_generator(version=step)
        return True

    def _sync_generator(self, version: int) -> None:
        buckets = full_weight_buckets(
            self._policy_module,
            bucket_bytes=self._config.sync_bucket_mb << 20,
            dtype=self._sync_dtype,
            keep=self._dp_gang.rank == 0,
        )
        self.generator.sync(buckets, version=version)
