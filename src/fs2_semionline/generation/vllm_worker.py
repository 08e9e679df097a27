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

#: Elements summed per float64 chunk: 128 MB of float64 at most, whatever the tensor.
SUM_CHUNK = 1 << 24


def sum64(tensor: torch.Tensor) -> float:
    """The sum of ``tensor`` accumulated in float64, one chunk at a time: torch's
    ``sum(dtype=float64)`` (like ``.double()``) first copies the whole tensor to float64,
    4.2 GB for Llama-3's 128,256 × 4,096 embedding, inside a worker at 0.9 memory use."""
    flat = tensor.detach().reshape(-1)
    return float(
        sum(flat[i : i + SUM_CHUNK].sum(dtype=torch.float64).item() for i in range(0, flat.numel(), SUM_CHUNK))
    )


def weights_checksum(weights: Iterable[tuple[str, torch.Tensor]]) -> float:
    """A cheap fingerprint both sides compute, to prove a load really happened. A plain
    sum (:func:`sum64`): it survives vLLM fusing q/k/v and gate/up and zero padding of the
    vocabulary; over TP ranks, :func:`tp_checksum` counts each weight once."""
    return float(sum(sum64(t) for _, t in weights))


def checksums_match(got: float, sent: float) -> bool:
    """Equal up to the rounding of summing in another order (fused/sharded tensors)."""
    return abs(got - sent) <= 1e-6 * max(1.0, abs(sent))


def tp_checksum(model: torch.nn.Module, tp_rank: int, tp_size: int) -> float:
    """This tensor-parallel worker's share of the served weights' sum: the shares of the
    ``tp_size`` workers add up to every full weight counted exactly once.

    A sharded weight counts its shard on every rank. A replicated one (RMSNorm weights,
    a layer built with ``disable_tp``, a row-parallel bias) counts on rank 0 only, and the
    K/V rows of a fused QKV weight, replicated over ``num_kv_head_replicas`` ranks when
    TP exceeds the KV heads, count on the first rank of each replica group (vLLM gives
    rank r the KV head r // num_kv_head_replicas). The layout is read from vLLM's layer
    classes (:mod:`fs2_semionline.generation.vllm_internals`)."""
    from fs2_semionline.generation.vllm_internals import parallel_layers

    layers = parallel_layers()
    total = 0.0
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:  # a tied weight is one weight
                continue
            seen.add(id(param))
            total += _share(module, name, param.detach(), tp_rank, tp_size, layers)
    return total


def _share(module: torch.nn.Module, name: str, param: torch.Tensor, tp_rank: int, tp_size: int, layers: Any) -> float:
    from fs2_semionline.generation.vllm_internals import layer_attribute

    def whole() -> float:
        return sum64(param)

    sharded = isinstance(module, layers.sharded) and layer_attribute(module, "tp_size") == tp_size
    if not sharded or (isinstance(module, layers.row) and name == "bias"):
        return whole() if tp_rank == 0 else 0.0  # the same on every rank
    if isinstance(module, layers.qkv):
        q_rows = layer_attribute(module, "num_heads") * layer_attribute(module, "head_size")
        kv_owner = tp_rank % layer_attribute(module, "num_kv_head_replicas") == 0
        return sum64(param[:q_rows]) + (sum64(param[q_rows:]) if kv_owner else 0.0)
    return whole()


class WeightSyncExtension:
    """Mixed into vLLM's worker class; ``self`` is a vLLM worker."""

    model_runner: Any
    device: Any

    def load_hf_weights(self, weights: dict[str, torch.Tensor]) -> int:
        """Loads HF-named tensors handed over in-process (the colocated engine)."""
        self.model_runner.model.load_weights(weights=iter(weights.items()))
        return len(weights)

    def model_checksum(self) -> float:
        """This worker's share of the served weights' checksum (:func:`tp_checksum`):
        the caller adds the shares of an engine's workers."""
        from vllm.distributed.parallel_state import get_tp_group

        group = get_tp_group()
        return tp_checksum(self.model_runner.model, group.rank_in_group, group.world_size)

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
