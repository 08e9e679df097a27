"""Methods injected into vLLM's worker (``worker_extension_cls``) to take new weights.

vLLM runs them in its worker through ``LLM.collective_rpc(name, args)``; ``self`` is
the worker, so ``self.model_runner.model`` is the live model.

- Replicas (Ray actors, default multiprocess engines, CPU and GPU alike):
  :meth:`init_weight_sync_group` joins the trainer's weight-sync group
  (``pg_sync.py``: gloo on CPU, NCCL on GPU); :meth:`receive_bucket` receives one flat
  buffer per bucket by broadcast and loads it. Only names, shapes and dtypes travel
  over RPC: with a multiprocess engine, tensors in ``collective_rpc`` args arrive as
  metadata lists and dataclasses as dicts, and the call "succeeds" loading nothing.
- Colocated engine (in the trainer's process): :meth:`load_hf_weights` gets the
  tensors themselves.

Either way the caller compares :meth:`model_checksum` with what it sent: a stale or
partial load is an error, never a silent success.

This module must import without vLLM or CUDA (vLLM imports it by name in the engine).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from fs2_semionline.generation.buckets import TensorMeta, unflatten_bucket


def weights_checksum(weights: Iterable[tuple[str, torch.Tensor]]) -> float:
    """A cheap fingerprint both sides compute, to prove a load really happened. A plain
    sum: it survives vLLM fusing q/k/v and gate/up and sharding over TP ranks (the
    workers' sums add up) and zero padding of the vocabulary."""
    return float(sum(t.detach().double().sum().item() for _, t in weights))


def checksums_match(got: float, sent: float) -> bool:
    """Equal up to the rounding of summing in another order (fused/sharded tensors)."""
    return abs(got - sent) <= 1e-6 * max(1.0, abs(sent))


class WeightSyncExtension:
    """Mixed into vLLM's worker class; ``self`` is a vLLM worker."""

    model_runner: Any
    device: Any

    def load_hf_weights(self, weights: dict[str, torch.Tensor]) -> int:
        """Loads HF-named tensors handed over in-process (the colocated engine)."""
        self.model_runner.model.load_weights(weights=iter(weights.items()))
        return len(weights)

    def model_checksum(self) -> float:
        params = dict(self.model_runner.model.named_parameters())
        return weights_checksum((n, params[n]) for n in sorted(params))

    def init_weight_sync_group(
        self, host: str, port: int, rank_offset: int, world_size: int, backend: str, timeout_s: float
    ) -> None:
        """Joins the trainer's group; this worker's rank is ``rank_offset`` + its TP rank."""
        from vllm.distributed.parallel_state import get_tp_group

        from fs2_semionline.generation.pg_sync import SyncGroup

        rank = rank_offset + get_tp_group().rank_in_group
        self._fs2_sync = SyncGroup(host, port, rank, world_size, backend, timeout_s)  # type: ignore[arg-type]

    def receive_bucket(self, names: Sequence[str], shapes: Sequence[Sequence[int]], dtype: str) -> int:
        """Receives one bucket (a flat buffer broadcast from the trainer) and loads it."""
        metas = [TensorMeta(n, tuple(s)) for n, s in zip(names, shapes)]
        group = self._fs2_sync
        buffer = torch.empty(sum(m.numel for m in metas), dtype=getattr(torch, dtype), device=group.device)
        group.broadcast(buffer)()  # wait for it: the data must be here before it loads
        self.model_runner.model.load_weights(weights=unflatten_bucket(buffer, metas))
        return len(metas)

    def close_weight_sync_group(self) -> None:
        self.__dict__.pop("_fs2_sync", None)
