"""Methods injected into vLLM's worker (``worker_extension_cls``) to take new weights.

vLLM runs them in its worker through ``LLM.collective_rpc(name, args)``; ``self`` is
the worker, so ``self.model_runner.model`` is the live model.

Two paths (../DESIGN.md "weight sync"):

- CPU (and any engine run in-process, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``):
  :meth:`load_hf_weights` gets the HF-named state dict itself. With the default
  multiprocess engine, tensors in ``collective_rpc`` args arrive as metadata lists and
  nothing loads (see the notes), which is why the CPU path keeps the engine in-process
  and the caller checks the returned checksum.
- GPU: :meth:`init_weight_sync_group` joins an NCCL group with trainer rank 0 (rank 0
  of that group); :meth:`receive_bucket` then receives one flat buffer per bucket by
  NCCL broadcast and loads it. Only names, shapes and dtypes travel over RPC.

This module must import without vLLM or CUDA (vLLM imports it by name in the engine).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

from fs2_semionline.generation.buckets import TensorMeta, unflatten_bucket


def weights_checksum(weights: Iterable[tuple[str, torch.Tensor]]) -> float:
    """A cheap fingerprint both sides compute, to prove a load really happened."""
    return float(sum(t.detach().double().sum().item() for _, t in weights))


class WeightSyncExtension:
    """Mixed into vLLM's worker class; ``self`` is a vLLM worker."""

    model_runner: Any
    device: Any

    def load_hf_weights(self, weights: dict[str, torch.Tensor]) -> float:
        """Loads HF-named tensors; returns the checksum of what the model now holds."""
        self.model_runner.model.load_weights(weights=iter(weights.items()))
        return self.model_checksum()

    def model_checksum(self) -> float:
        params = dict(self.model_runner.model.named_parameters())
        return weights_checksum((n, params[n]) for n in sorted(params))

    def init_weight_sync_group(self, host: str, port: int, rank_offset: int, world_size: int) -> None:
        """Joins the trainer's NCCL group; this worker's rank is ``rank_offset`` + its TP rank."""
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.parallel_state import get_world_group
        from vllm.distributed.utils import StatelessProcessGroup

        rank = rank_offset + get_world_group().rank
        group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size)
        self._fs2_sync_comm = PyNcclCommunicator(group, device=self.device)

    def receive_bucket(self, metas: Sequence[TensorMeta], dtype: str) -> int:
        """Receives one bucket (a flat buffer broadcast from the trainer) and loads it."""
        numel = sum(m.numel for m in metas)
        buffer = torch.empty(numel, dtype=getattr(torch, dtype), device=self.device)
        self._fs2_sync_comm.broadcast(buffer, src=0)
        torch.cuda.current_stream().synchronize()
        self.model_runner.model.load_weights(weights=unflatten_bucket(buffer, metas))
        return len(metas)

    def close_weight_sync_group(self) -> None:
        self.__dict__.pop("_fs2_sync_comm", None)
