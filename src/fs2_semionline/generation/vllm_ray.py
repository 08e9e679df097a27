"""``generator.backend=vllm``: vLLM engines as Ray actors behind the generator protocol.

    trainer rank 0 ──submit(prompts)──► replica 0 … replica R-1   (prompts split evenly)
                   ◄──wait()─────────── completions + sampled-token log-probs
                   ──sync(weights, v)─► CPU: one ray.put, every replica loads it
                                        GPU: NCCL broadcast in buckets (nccl_sync.py)

Faults (issue "vLLM on Ray" §7): a replica that dies or exceeds
``generate_timeout_s`` is replaced, loaded with the weights of the current version
(never newer), and its prompts re-issued with the same seeds, so the step goes on with
the same rollouts. A sync that exceeds ``sync_timeout_s`` raises
:class:`WeightSyncTimeout` naming the replica and actor.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fs2_semionline.generation.protocol import Completion, SamplingConfig
from fs2_semionline.generation.vllm_engine import VLLMEngine, cuda_available, prompt_seeds
from fs2_semionline.generation.vllm_worker import weights_checksum
from fs2_semionline.sharding import WeightBuckets, as_buckets

log = logging.getLogger(__name__)


class GeneratorError(RuntimeError):
    """A generator replica failed in a way a restart does not fix."""


class WeightSyncTimeout(GeneratorError):
    pass


@dataclass(frozen=True)
class ReplicaOptions:
    """What the recipe's ``generator`` section decides for each actor."""

    replicas: int = 1
    tensor_parallel_size: int = 1
    num_cpus: float = 1.0
    engine_args: Mapping[str, Any] = field(default_factory=dict)
    sync_timeout_s: float = 600.0
    generate_timeout_s: float = 1800.0
    max_restarts: int = 3
    """Replacements of one replica within one request before the run gives up."""


class GeneratorActor:
    """The Ray actor's body (``ray.remote`` is applied in :func:`_actor_class`)."""

    def __init__(self, model_dir: str, seed: int, max_model_len: int, engine_args: dict[str, Any], num_threads: int) -> None:
        if not cuda_available():
            torch.set_num_threads(max(1, num_threads))
        self._engine = VLLMEngine(model_dir, seed=seed, max_model_len=max_model_len, engine_args=engine_args)

    def pid(self) -> int:
        return os.getpid()

    def generate(
        self, prompts: list[list[int]], num_rollouts: int, sampling: SamplingConfig, seeds: list[int]
    ) -> list[list[Completion]]:
        return self._engine.generate(prompts, num_rollouts, sampling, seeds)

    def load_weights(self, hf_state: dict[str, torch.Tensor]) -> float:
        return self._engine.load_weights(hf_state)

    def collective_rpc(self, method: str, *args: Any) -> list[Any]:
        return self._engine.collective_rpc(method, *args)

    def reset_prefix_cache(self) -> None:
        self._engine.reset_prefix_cache()


def _actor_class() -> Any:
    import ray

    return ray.remote(GeneratorActor)


@dataclass
class _Chunk:
    replica: int
    start: int
    prompts: list[list[int]]
    seeds: list[int]
    ref: Any = None
    actor: Any = None  # the actor it was issued to (a replaced one fails; the new one need not restart)


@dataclass
class RayRollouts:
    """A request in flight: one chunk of prompts per replica."""

    num_prompts: int
    num_rollouts: int
    sampling: SamplingConfig
    version: int
    chunks: list[_Chunk]


def split_evenly(num_items: int, num_parts: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges whose sizes differ by at most one (empty ones dropped)."""
    base, extra = divmod(num_items, num_parts)
    ranges, start = [], 0
    for part in range(num_parts):
        end = start + base + (1 if part < extra else 0)
        if end > start:
            ranges.append((start, end))
        start = end
    return ranges


class RayVLLMGenerator:
    """The trainer-side handle of R vLLM replicas (created on trainer rank 0 only)."""

    def __init__(
        self,
        model_dir: Path,
        *,
        to_hf: Any,
        options: ReplicaOptions,
        max_model_len: int,
        seed: int,
        nccl_sender: Any = None,
    ) -> None:
        """``model_dir``: an HF folder of the seed weights (what a fresh replica loads);
        ``to_hf``: fairseq2 state dict → HF state dict (fairseq2's converter)."""
        self._model_dir = str(model_dir)
        self._to_hf = to_hf
        self._opts = options
        self._max_model_len = max_model_len
        self._seed = seed
        self._nccl = nccl_sender
        self._version = 0
        self._weights_refs: list[Any] = []  # the current version's buckets in Ray's object store
        self._restart_weights: list[dict[str, torch.Tensor]] = []  # NCCL path: host copies of the buckets
        self.num_restarts = 0
        self._actors = [self._start_actor() for _ in range(options.replicas)]
        self._wait_ready(range(options.replicas))
        if self._nccl is not None:
            self._nccl.connect(self._actors)

    # --- protocol ---------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    def sync(self, weights: Mapping[str, torch.Tensor] | WeightBuckets, version: int) -> None:
        """Loads the policy's weights (fairseq2 names, full tensors), a bucket at a time:
        no full HF copy is ever made on this side."""
        import ray

        expected = 0.0
        refs: list[Any] = []
        restart: list[dict[str, torch.Tensor]] = []
        got: list[float | None] = [None] * len(self._actors)
        for bucket in as_buckets(weights):
            hf_bucket = self._to_hf(bucket)
            if not hf_bucket:
                continue
            expected += weights_checksum(sorted(hf_bucket.items()))
            if self._nccl is not None:
                self._nccl.send(hf_bucket, self._actors, self._opts.sync_timeout_s)
                # A replaced replica must get this version again, not the policy's newer
                # weights: a host copy in the serving dtype (the buckets' dtype).
                restart.append({k: v.detach().to("cpu", copy=True) for k, v in hf_bucket.items()})
                continue
            ref = ray.put({k: v.detach().cpu() for k, v in hf_bucket.items()})
            refs.append(ref)
            loads = [actor.load_weights.remote(ref) for actor in self._actors]  # every replica at once
            for replica, load in enumerate(loads):
                try:
                    got[replica] = self._get(load, self._opts.sync_timeout_s, replica,
                                             what="weight sync", timeout_kls=WeightSyncTimeout)  # fmt: skip
                except ray.exceptions.RayActorError as err:
                    # Died since its last request: a new replica loads the buckets so far.
                    log.warning("generator replica %d died during a sync (%s); restarting it", replica, type(err).__name__)
                    self._weights_refs = list(refs)
                    got[replica] = self._restart(replica)
        if self._nccl is not None:
            self._nccl.reset_prefix_cache(self._actors, self._opts.sync_timeout_s)
            self._restart_weights = restart
        else:
            self._weights_refs = refs
            for replica, checksum in enumerate(got):
                if checksum is None or not _close(checksum, expected):
                    raise GeneratorError(
                        f"generator replica {replica}: weights did not load (checksum {checksum} != sent {expected})"
                    )
        self._version = version

    def submit(
        self, prompts: Sequence[Sequence[int]], num_rollouts: int, sampling: SamplingConfig, seed: int
    ) -> RayRollouts:
        seeds = prompt_seeds(seed, len(prompts), num_rollouts)
        chunks = [
            _Chunk(replica, start, [list(p) for p in prompts[start:end]], seeds[start:end])
            for replica, (start, end) in enumerate(split_evenly(len(prompts), len(self._actors)))
        ]
        request = RayRollouts(len(prompts), num_rollouts, sampling, self._version, chunks)
        for chunk in chunks:
            self._issue(request, chunk)
        return request

    def wait(self, pending: RayRollouts) -> list[list[Completion]]:  # type: ignore[override]
        import ray

        if pending.version != self._version:
            raise GeneratorError(
                f"rollouts requested at version {pending.version} collected at version {self._version}: "
                "a sync happened while they were in flight"
            )
        results: list[list[Completion]] = [[] for _ in range(pending.num_prompts)]
        for chunk in pending.chunks:
            for attempt in range(self._opts.max_restarts + 1):
                try:
                    out = ray.get(chunk.ref, timeout=self._opts.generate_timeout_s)
                    break
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as err:
                    if attempt == self._opts.max_restarts:
                        raise GeneratorError(
                            f"generator replica {chunk.replica} failed {attempt + 1} times in one request; "
                            f"last error: {type(err).__name__}: {err}"
                        ) from err
                    if chunk.actor is self._actors[chunk.replica]:
                        log.warning(
                            "generator replica %d failed (%s); restarting it at version %d and re-issuing its prompts",
                            chunk.replica, type(err).__name__, self._version,
                        )  # fmt: skip
                        self._restart(chunk.replica)
                    # else: issued to an actor already replaced (a request queued behind the
                    # failed one); the new actor has this version's weights: just re-issue.
                    self._issue(pending, chunk)
            results[chunk.start : chunk.start + len(out)] = out
        return results

    def close(self) -> None:
        import ray

        if self._nccl is not None:
            self._nccl.close()
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors = []

    # --- actors -----------------------------------------------------------------

    def actor_pids(self) -> list[int]:
        import ray

        return ray.get([a.pid.remote() for a in self._actors])

    def _start_actor(self) -> Any:
        opts = self._opts
        # Weights and tokenizer come from model_dir: never ask a hub (tests run offline).
        # torch symbolises the C++ stack of an exception vLLM's CPU path raises and catches
        # once per engine; with addr2line that took seconds (TORCH_DISABLE_ADDR2LINE skips it).
        # Under torchrun the actors inherit TORCHELASTIC_USE_AGENT_STORE=True (through the
        # raylet rank 0 started), and vLLM's own TCP store then waits forever for an agent.
        env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TORCH_DISABLE_ADDR2LINE": "1",
               "TORCHELASTIC_USE_AGENT_STORE": "False"}  # fmt: skip
        if not cuda_available():
            env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        actor_options: dict[str, Any] = {"num_cpus": opts.num_cpus, "max_restarts": 0, "runtime_env": {"env_vars": env}}
        if cuda_available():
            actor_options["num_gpus"] = opts.tensor_parallel_size
        engine_args = {"tensor_parallel_size": opts.tensor_parallel_size, **opts.engine_args}
        return _actor_class().options(**actor_options).remote(
            self._model_dir, self._seed, self._max_model_len, engine_args, max(1, int(opts.num_cpus))
        )

    def _wait_ready(self, replicas: Any) -> None:
        for replica in replicas:
            self._get(self._actors[replica].pid.remote(), None, replica, what="start")

    def _restart(self, replica: int) -> float | None:
        """Replaces a replica and loads the current version into it (returns the checksum)."""
        import ray

        ray.kill(self._actors[replica], no_restart=True)
        self._actors[replica] = self._start_actor()
        self._wait_ready([replica])
        self.num_restarts += 1
        if self._nccl is not None:
            self._nccl.connect(self._actors)  # an NCCL group cannot take a new member: all rejoin
            for bucket in self._restart_weights:
                self._nccl.send(bucket, self._actors, self._opts.sync_timeout_s)
            self._nccl.reset_prefix_cache(self._actors, self._opts.sync_timeout_s)
            return None
        checksum = None
        for ref in self._weights_refs:
            checksum = float(self._get(self._actors[replica].load_weights.remote(ref), self._opts.sync_timeout_s,
                                       replica, what="weight sync", timeout_kls=WeightSyncTimeout))  # fmt: skip
        return checksum

    def _issue(self, request: RayRollouts, chunk: _Chunk) -> None:
        actor = chunk.actor = self._actors[chunk.replica]
        chunk.ref = actor.generate.remote(chunk.prompts, request.num_rollouts, request.sampling, chunk.seeds)

    def _get(self, ref: Any, timeout: float | None, replica: int, *, what: str, timeout_kls: type[Exception] = GeneratorError) -> Any:
        import ray

        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError as err:
            actor_id = self._actors[replica]._actor_id.hex()
            raise timeout_kls(
                f"{what} of generator replica {replica} (Ray actor {actor_id}) exceeded its timeout of {timeout} s"
            ) from err


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))
