"""vLLM's tensor-parallel layer classes, for the weight checksum (``vllm_worker.py``).

One place that names vLLM's layout: which layers shard their weights over the TP ranks
(column-parallel, incl. merged and fused QKV; row-parallel; vocabulary-parallel
embeddings and LM heads) and the attributes read from them. Everything else is taken as
replicated. A vLLM that renames any of them fails here, loudly, not with a checksum
that is silently off (``tests/test_vllm_generator.py`` runs it against the installed vLLM).
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
            "the tensor-parallel weight checksum (generation/vllm_layers.py) needs updating for this vLLM"
        )
    return value
