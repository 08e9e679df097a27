"""Packing a state dict into a few flat buffers ("buckets") for NCCL weight sync.

One broadcast per parameter costs one RPC and one collective launch each (hundreds for
an 8B model); one per bucket of ~``bucket_bytes`` costs a handful. Tensors of one dtype
share a bucket; a tensor larger than the bucket size gets a bucket of its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TensorMeta:
    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class Bucket:
    dtype: torch.dtype
    metas: tuple[TensorMeta, ...]

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def plan_buckets(state_dict: Mapping[str, torch.Tensor], bucket_bytes: int) -> list[Bucket]:
    """Groups tensors, in state-dict order, into buckets of at most ``bucket_bytes``."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be > 0, got {bucket_bytes}")
    buckets: list[Bucket] = []
    open_: dict[torch.dtype, tuple[list[TensorMeta], int]] = {}
    for name, tensor in state_dict.items():
        size = tensor.numel() * tensor.element_size()
        metas, used = open_.get(tensor.dtype, ([], 0))
        if metas and used + size > bucket_bytes:
            buckets.append(Bucket(tensor.dtype, tuple(metas)))
            metas, used = [], 0
        metas.append(TensorMeta(name, tuple(tensor.shape)))
        open_[tensor.dtype] = (metas, used + size)
    buckets += [Bucket(dtype, tuple(metas)) for dtype, (metas, _) in open_.items() if metas]
    return buckets


def flatten_bucket(state_dict: Mapping[str, torch.Tensor], bucket: Bucket, device: torch.device) -> torch.Tensor:
    return torch.cat([state_dict[m.name].detach().reshape(-1).to(device, bucket.dtype) for m in bucket.metas])


def unflatten_bucket(
    buffer: torch.Tensor, metas: tuple[TensorMeta, ...] | list[TensorMeta]
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, view) pairs over ``buffer``, as vLLM's ``load_weights`` takes them."""
    offset = 0
    for m in metas:
        yield m.name, buffer[offset : offset + m.numel].view(m.shape)
        offset += m.numel
    if offset != buffer.numel():
        raise ValueError(f"bucket buffer holds {buffer.numel()} elements, its tensors {offset}")
