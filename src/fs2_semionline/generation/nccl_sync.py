"""GPU weight sync: trainer rank 0 broadcasts the policy over NCCL into every replica.

The group is trainer rank 0 (rank 0) plus every vLLM worker of every replica (ranks
1 + replica·TP + tp_rank), built with vLLM's ``StatelessProcessGroup`` so it does not
touch the trainer's own ``torch.distributed`` world. Weights go in buckets
(``buckets.py``): per bucket one RPC carries names and shapes, one broadcast the data.
Every wait is bounded by ``timeout_s`` and a timeout names the replica.

Not exercised on the CPU machines the tests run on (no NCCL there); the CPU path is
Ray's object store (``vllm_ray.RayVLLMGenerator.sync``).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fs2_semionline.generation.buckets import flatten_bucket, plan_buckets


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class NcclWeightSender:
    def __init__(self, *, tensor_parallel_size: int, host: str | None = None, bucket_bytes: int = 1 << 30,
                 connect_timeout_s: float = 300.0) -> None:  # fmt: skip
        self._tp = tensor_parallel_size
        self._host = host or socket.gethostbyname(socket.gethostname())
        self._bucket_bytes = bucket_bytes
        self._connect_timeout_s = connect_timeout_s
        self._comm: Any = None

    def connect(self, actors: Sequence[Any]) -> None:
        """(Re)builds the group; after a replica restart every member joins a new one."""
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup

        self.close(actors)
        port = free_port(self._host)
        world_size = 1 + len(actors) * self._tp
        refs = [
            a.collective_rpc.remote("init_weight_sync_group", self._host, port, 1 + i * self._tp, world_size)
            for i, a in enumerate(actors)
        ]
        group = StatelessProcessGroup.create(host=self._host, port=port, rank=0, world_size=world_size)
        self._comm = PyNcclCommunicator(group, device=torch.cuda.current_device())
        _get_all(refs, actors, self._connect_timeout_s, "joining the weight-sync group")

    def send(self, hf_state: Mapping[str, torch.Tensor], actors: Sequence[Any], timeout_s: float) -> None:
        device = torch.device("cuda", torch.cuda.current_device())
        for bucket in plan_buckets(hf_state, self._bucket_bytes):
            refs = [a.collective_rpc.remote("receive_bucket", list(bucket.metas), bucket.dtype_name) for a in actors]
            buffer = flatten_bucket(hf_state, bucket, device)
            self._comm.broadcast(buffer, src=0)
            torch.cuda.current_stream().synchronize()
            _get_all(refs, actors, timeout_s, "weight sync")

    def reset_prefix_cache(self, actors: Sequence[Any], timeout_s: float) -> None:
        """After the last bucket of a sync: cached prefixes hold the old weights' states."""
        _get_all([a.reset_prefix_cache.remote() for a in actors], actors, timeout_s, "prefix-cache reset")

    def close(self, actors: Sequence[Any] = ()) -> None:
        import ray

        if self._comm is not None and actors:
            ray.get([a.collective_rpc.remote("close_weight_sync_group") for a in actors])
        self._comm = None


def _get_all(refs: Sequence[Any], actors: Sequence[Any], timeout_s: float, what: str) -> None:
    import ray

    from fs2_semionline.generation.vllm_ray import WeightSyncTimeout

    deadline_refs = list(refs)
    ready, not_ready = ray.wait(deadline_refs, num_returns=len(deadline_refs), timeout=timeout_s)
    if not_ready:
        replica = deadline_refs.index(not_ready[0])
        raise WeightSyncTimeout(
            f"{what} of generator replica {replica} (Ray actor {actors[replica]._actor_id.hex()}) "
            f"exceeded its timeout of {timeout_s} s"
        )
    ray.get(ready)
