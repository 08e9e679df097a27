"""``generator.backend=vllm``: vLLM engines as Ray actors behind the generator protocol.

    trainer rank 0 ──submit(prompts)──► replica 0 … replica R-1   (prompts split evenly)
                   ◄──wait()─────────── completions + sampled-token log-probs
                   ──sync(weights, v)─► a broadcast per bucket over a process group
                                        (pg_sync.py: gloo on CPU, NCCL on GPU)

Faults: a replica that dies or exceeds
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

from fs2_semionline.generation.pg_sync import ProcessGroupWeightSender, wait_all
from fs2_semionline.generation.protocol import Completion, GeneratorError, SamplingConfig
from fs2_semionline.generation.protocol import WeightSyncTimeout as WeightSyncTimeout  # re-exported for callers
from fs2_semionline.generation.sharding import WeightBuckets, as_buckets
from fs2_semionline.generation.vllm_engine import VLLMEngine, cuda_available, prompt_seeds
from fs2_semionline.generation.vllm_worker import checksums_match, weights_checksum
from fs2_semionline.glue.ray_internals import actor_id_hex

log = logging.getLogger(__name__)


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
    batch_invariant: bool = False
    """vLLM's batch-invariant mode in every replica (``VLLM_BATCH_INVARIANT=1``)."""


class GeneratorActor:
    """The Ray actor's body (``ray.remote`` is applied in :func:`_actor_class`)."""

    def __init__(
        self, model_dir: str, seed: int, max_model_len: int, engine_args: dict[str, Any], num_threads: int
    ) -> None:
        if not cuda_available():
            torch.set_num_threads(max(1, num_threads))
        self._engine = VLLMEngine(model_dir, seed=seed, max_model_len=max_model_len, engine_args=engine_args)

    def pid(self) -> int:
        return os.getpid()

    def generate(
        self, prompts: list[list[int]], num_rollouts: int, sampling: SamplingConfig, seeds: list[int]
    ) -> list[list[Completion]]:
        return self._engine.generate(prompts, num_rollouts, sampling, seeds)

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
        sync_bucket_bytes: int = 1 << 30,
        sync_host: str | None = None,
        sync_backend: str | None = None,
    ) -> None:
        """``model_dir``: an HF folder of the seed weights (what a fresh replica loads);
        ``to_hf``: fairseq2 state dict → HF state dict (fairseq2's converter).
        ``sync_backend``: the weight-sync data plane, ``nccl`` on CUDA and ``gloo`` otherwise
        by default (gloo on a GPU machine: host buffers, e.g. to check one GPU)."""
        self._model_dir = str(model_dir)
        self._to_hf = to_hf
        self._opts = options
        self._max_model_len = max_model_len
        self._seed = seed
        self._sender = ProcessGroupWeightSender(
            tensor_parallel_size=options.tensor_parallel_size,
            host=sync_host,
            bucket_bytes=sync_bucket_bytes,
            timeout_s=options.sync_timeout_s,
            backend=sync_backend,  # type: ignore[arg-type]
        )
        self._version = 0
        # Host copies of the current version's buckets (serving dtype): what a replaced
        # replica loads, never the policy's newer weights.
        self._restart_weights: list[dict[str, torch.Tensor]] = []
        self.num_restarts = 0
        self._actors = [self._start_actor() for _ in range(options.replicas)]
        self._wait_ready(range(options.replicas))
        self._sender.connect(self._actors)

    # --- protocol ---------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._version

    def sync(self, weights: Mapping[str, torch.Tensor] | WeightBuckets, version: int) -> None:
        """Broadcasts the policy's weights (fairseq2 names, full tensors) a bucket at a
        time: no full HF copy is made on this side. Then every replica's checksum must
        equal the sender's, or the sync is an error."""
        import ray

        expected = 0.0
        restart: list[dict[str, torch.Tensor]] = []
        for bucket in as_buckets(weights):
            hf_bucket = self._to_hf(bucket)
            if not hf_bucket:
                continue
            expected += weights_checksum(sorted(hf_bucket.items()))
            restart.append({k: v.detach().to("cpu", copy=True) for k, v in hf_bucket.items()})
            try:
                self._sender.send(hf_bucket, self._actors, self._opts.sync_timeout_s)
            except (GeneratorError, ray.exceptions.RayActorError):
                dead = self._dead_replicas()
                if not dead:
                    raise
                for replica in dead:  # died mid-sync: a new replica, and all get the buckets so far
                    log.warning("generator replica %d died during a sync; restarting it", replica)
                    self._restart_weights = restart
                    self._restart(replica, check=False)  # a partial version: checked at the end
        self._restart_weights = restart
        self._check_loaded(expected)
        self._version = version

    def _check_loaded(self, expected: float) -> None:
        """Every replica holds what was sent (a stale or partial load fails here), and its
        prefix cache, which holds the old weights' KV, is dropped."""
        what = "checksum after a weight sync"
        sums = wait_all(
            [a.collective_rpc.remote("model_checksum") for a in self._actors],
            self._actors,
            self._opts.sync_timeout_s,
            what,
        )
        for replica, per_worker in enumerate(sums):
            if not checksums_match(sum(per_worker), expected):
                raise GeneratorError(
                    f"generator replica {replica}: weights did not load (checksum {sum(per_worker)} != sent {expected})"
                )
        wait_all(
            [a.reset_prefix_cache.remote() for a in self._actors],
            self._actors,
            self._opts.sync_timeout_s,
            "prefix-cache reset",
        )

    def _dead_replicas(self) -> list[int]:
        import ray

        dead = []
        for replica, actor in enumerate(self._actors):
            try:
                ray.get(actor.pid.remote(), timeout=30)
            except ray.exceptions.RayActorError:
                dead.append(replica)
        return dead

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

    def wait(self, pending: RayRollouts) -> list[list[Completion]]:
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
                            chunk.replica,
                            type(err).__name__,
                            self._version,
                        )
                        self._restart(chunk.replica)
                    # else: issued to an actor already replaced (a request queued behind the
                    # failed one); the new actor has this version's weights: just re-issue.
                    self._issue(pending, chunk)
            results[chunk.start : chunk.start + len(out)] = out
        return results

    def close(self) -> None:
        import ray

        self._sender.close(self._actors)
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
        env = {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TORCH_DISABLE_ADDR2LINE": "1",
            "TORCHELASTIC_USE_AGENT_STORE": "False",
        }
        if not cuda_available():
            env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        if opts.batch_invariant:
            env["VLLM_BATCH_INVARIANT"] = "1"
        actor_options: dict[str, Any] = {"num_cpus": opts.num_cpus, "max_restarts": 0, "runtime_env": {"env_vars": env}}
        if cuda_available():
            actor_options["num_gpus"] = opts.tensor_parallel_size
        engine_args = {"tensor_parallel_size": opts.tensor_parallel_size, **opts.engine_args}
        return (
            _actor_class()
            .options(**actor_options)
            .remote(self._model_dir, self._seed, self._max_model_len, engine_args, max(1, int(opts.num_cpus)))
        )

    def _wait_ready(self, replicas: Any) -> None:
        for replica in replicas:
            self._get(self._actors[replica].pid.remote(), None, replica, what="start")

    def _restart(self, replica: int, *, check: bool = True) -> None:
        """Replaces a replica and loads the current version into it."""
        import ray

        ray.kill(self._actors[replica], no_restart=True)
        self._actors[replica] = self._start_actor()
        self._wait_ready([replica])
        self.num_restarts += 1
        self._sender.connect(self._actors)  # a process group cannot take a new member: all rejoin
        for bucket in self._restart_weights:
            self._sender.send(bucket, self._actors, self._opts.sync_timeout_s)
        if check and self._restart_weights:
            self._check_loaded(sum(weights_checksum(sorted(b.items())) for b in self._restart_weights))

    def _issue(self, request: RayRollouts, chunk: _Chunk) -> None:
        actor = chunk.actor = self._actors[chunk.replica]
        chunk.ref = actor.generate.remote(chunk.prompts, request.num_rollouts, request.sampling, chunk.seeds)

    def _get(
        self, ref: Any, timeout: float | None, replica: int, *, what: str, timeout_kls: type[Exception] = GeneratorError
    ) -> Any:
        import ray

        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError as err:
            actor_id = actor_id_hex(self._actors[replica])
            raise timeout_kls(
                f"{what} of generator replica {replica} (Ray actor {actor_id}) exceeded its timeout of {timeout} s"
            ) from err
