"""Every reach into vLLM's internals beyond its public API, in one place, each loud.

- The tensor-parallel layout, for the weight checksum (``vllm_worker.py``): which layer
  classes shard their weights over the TP ranks (column-parallel, incl. merged and fused
  QKV; row-parallel; vocabulary-parallel embeddings and LM heads) and the attributes read
  from them; everything else is taken as replicated.
- PyNccl's state (``available`` / ``disabled``, which vLLM sets silently when NCCL does not
  load) and its library handle, for ``ncclCommAbort``, which vLLM's wrapper does not bind.

A vLLM that renames any of them fails here, naming it, not with a checksum that is
silently off or an abort that does nothing (``tests/test_vllm_tp.py`` runs the layout
against the installed vLLM).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any


@dataclass(frozen=True)
class ParallelLayers:
    sharded: tuple[type, ...]  # layers whose weights are split over the TP ranks
    row: type  # RowParallelLinear: its bias is replicated
    qkv: type  # QKVParallelLinear: its K/V rows may be replicated


@cache
def parallel_layers() -> ParallelLayers:
    from vllm.model_executor.layers.linear import ColumnParallelLinear, QKVParallelLinear, RowParallelLinear
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    return ParallelLayers(
        (ColumnParallelLinear, RowParallelLinear, VocabParallelEmbedding), RowParallelLinear, QKVParallelLinear
    )


def layer_attribute(module: Any, name: str) -> int:
    """An integer attribute of a vLLM layer (``tp_size``, ``num_heads``, ``head_size``,
    ``num_kv_head_replicas``); a vLLM without it is an error that says so."""
    value = getattr(module, name, None)
    if not isinstance(value, int):
        raise RuntimeError(
            f"vLLM's {type(module).__name__} has no integer attribute {name!r} (got {value!r}): "
            "the tensor-parallel weight checksum (generation/vllm_internals.py) needs updating for this vLLM"
        )
    return value


def pynccl_usable(comm: Any) -> bool:
    """Whether a ``PyNcclCommunicator`` really communicates (vLLM turns it off silently)."""
    for name in ("available", "disabled"):
        if not hasattr(comm, name):
            raise RuntimeError(f"vLLM's PyNcclCommunicator has no attribute {name!r}: vllm_internals.py needs updating")
    return bool(comm.available) and not bool(comm.disabled)


def abort_pynccl(comm: Any) -> None:
    """``ncclCommAbort`` on a PyNccl communicator, through the NCCL library vLLM loaded."""
    lib = getattr(getattr(comm, "nccl", None), "lib", None)
    handle = getattr(comm, "comm", None)
    if lib is None or handle is None:
        raise RuntimeError(
            "cannot abort vLLM's PyNccl communicator (no .nccl.lib / .comm): vllm_internals.py needs updating"
        )
    lib.ncclCommAbort(handle)
