"""``generator.colocate: true``: one vLLM engine in the trainer's own process, on its device.

For a single trainer process (one GPU, or a CPU): NCCL refuses two ranks on one GPU, so
there is no broadcast here; each bucket of the policy's weights is handed to the
engine's ``load_weights`` in-process, on the device it already lives on (no copy over a
wire, no CUDA IPC needed). The engine takes ``gpu_memory_utilization`` of the device
(the factory's default leaves the rest to the trainer); with
``engine_args.enable_sleep_mode: true`` it sleeps between generations (CUDA only: vLLM
offloads its weights to host memory and drops the KV cache). It wakes in two parts: the
weights before a sync loads into them, the KV cache just before it generates; and before
either, PyTorch's cache is emptied: after a training step it still holds the memory the
engine is about to map back.

Same protocol and checks as the replicas: the checksum after a sync must equal the
sender's, and rollouts are collected at the version they were requested at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fs2_semionline.generation.protocol import Completion, GeneratorError, SamplingConfig
from fs2_semionline.generation.sharding import WeightBuckets, as_buckets
from fs2_semionline.generation.vllm_engine import VLLMEngine, prompt_seeds
from fs2_semionline.generation.vllm_worker import checksums_match, weights_checksum


@dataclass(frozen=True)
class ColocatedRollouts:
    prompts: list[list[int]]
    num_rollouts: int
    sampling: SamplingConfig
    seeds: list[int]
    version: int


class ColocatedVLLMGenerator:
    def __init__(
        self, model_dir: Path, *, to_hf: Any, max_model_len: int, seed: int, engine_args: Mapping[str, Any]
    ) -> None:
        self._to_hf = to_hf
        self._sleeps = bool(engine_args.get("enable_sleep_mode", False))
        self._engine = VLLMEngine(
            model_dir, seed=seed, max_model_len=max_model_len, engine_args=engine_args, in_process=True
        )
        self._awake = {"weights", "kv_cache"}  # what of vLLM's sleep mode is mapped
        self._version = 0

    @property
    def version(self) -> int:
        return self._version

    @torch.no_grad()
    def sync(self, weights: Mapping[str, torch.Tensor] | WeightBuckets, version: int) -> None:
        self._wake("weights")
        expected = 0.0
        for bucket in as_buckets(weights):
            hf_bucket = self._to_hf(bucket)
            if hf_bucket:
                expected += weights_checksum(sorted(hf_bucket.items()))
                self._engine.load_weights(hf_bucket)
        got = self._engine.checksum()
        if not checksums_match(got, expected):
            raise GeneratorError(f"colocated generator: weights did not load (checksum {got} != sent {expected})")
        self._engine.reset_prefix_cache()
        self._version = version

    def submit(
        self, prompts: Sequence[Sequence[int]], num_rollouts: int, sampling: SamplingConfig, seed: int
    ) -> ColocatedRollouts:
        """Generation shares the trainer's process and device: nothing to overlap with, so
        the request runs at ``wait`` (with the weights of the version it was made at)."""
        seeds = prompt_seeds(seed, len(prompts), num_rollouts)
        return ColocatedRollouts([list(p) for p in prompts], num_rollouts, sampling, seeds, self._version)

    def wait(self, pending: ColocatedRollouts) -> list[list[Completion]]:
        if pending.version != self._version:
            raise GeneratorError(
                f"rollouts requested at version {pending.version} collected at version {self._version}: "
                "a sync happened while they were pending"
            )
        self._wake("weights", "kv_cache")
        out = self._engine.generate(pending.prompts, pending.num_rollouts, pending.sampling, pending.seeds)
        if self._sleeps:
            self._engine.sleep()
            self._awake.clear()
        return out

    def close(self) -> None:
        self.__dict__.pop("_engine", None)

    def _wake(self, *tags: str) -> None:
        asleep = [t for t in tags if t not in self._awake]
        if not asleep:
            return
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # give back what the training step left cached
        self._engine.wake_up(asleep)
        self._awake.update(asleep)
