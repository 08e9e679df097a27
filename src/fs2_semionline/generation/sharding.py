"""Full weights out of a (possibly FSDP2-sharded) policy, one bucket at a time.

Under FSDP2 every parameter is a DTensor sharded along dim 0 and ``state_dict()``
returns the shards (even inside fairseq2's ``summon_full_parameters``). The generator
needs full, HF-named weights; gathering the whole state dict on rank 0 would hold a
second full fp32 copy of the model there (32 GB at 8B). Instead
:func:`full_weight_buckets` gathers one tensor at a time (``DTensor.full_tensor()``, a
collective every rank joins) and hands over buckets of about ``bucket_bytes``: the
peak on rank 0 is its shard of the model plus one bucket plus one gathered tensor.

The reference model is sharded with the policy's own FSDP2 layout
(:func:`shard_like_policy`), so ``reference ← policy`` is a copy of local shards
(:func:`copy_weights`): no communication, no full copy anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar, cast

import torch
from torch import Tensor
from torch.nn import Module

WeightBuckets = Iterable[Mapping[str, Tensor]]
"""What a generator's ``sync`` takes: fairseq2-named full tensors, a bucket at a time."""


ModuleT = TypeVar("ModuleT", bound=Module)


def _is_dtensor(t: object) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def is_sharded(module: Module) -> bool:
    """True when the module's parameters are FSDP2 DTensors."""
    return any(_is_dtensor(p) for p in module.parameters())


def as_buckets(weights: Mapping[str, Tensor] | WeightBuckets) -> Iterator[Mapping[str, Tensor]]:
    """A whole state dict is one bucket; an iterable of buckets passes through."""
    if isinstance(weights, Mapping):
        yield weights
    else:
        yield from weights


def full_weight_buckets(
    module: Module,
    *,
    bucket_bytes: int,
    dtype: torch.dtype | None = None,
    keep: bool = True,
    device: torch.device | None = None,
) -> Iterator[dict[str, Tensor]]:
    """Full tensors of ``module.state_dict()`` (fairseq2 names), in buckets.

    Every rank of a sharded module must run this generator to the end: each DTensor's
    ``full_tensor()`` is an all-gather. Ranks with ``keep=False`` (every rank but the one
    that owns the generator) drop what they gathered and get empty buckets, in step.
    ``dtype``: cast as each tensor is gathered (the generator's serving dtype), so a
    bf16 generator never sees an fp32 bucket. ``device``: where the bucket lives (default: where
    the shards are; the sync group copies it to its data plane's device).
    """
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be > 0, got {bucket_bytes}")
    bucket: dict[str, Tensor] = {}
    used = 0
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            full = tensor.full_tensor() if _is_dtensor(tensor) else tensor
            if not keep:
                del full
                continue
            full = full.detach()
            if dtype is not None and full.is_floating_point():
                full = full.to(dtype)
            if device is not None:
                full = full.to(device)
            size = full.numel() * full.element_size()
            if bucket and used + size > bucket_bytes:
                yield bucket
                bucket, used = {}, 0
            bucket[name] = full
            used += size
    if bucket or not keep:
        yield bucket


def copy_weights(dst: Module, src: Module) -> None:
    """``dst ← src`` parameter by parameter; between two modules sharded alike this copies
    local shards only (the reference sync under FSDP2)."""
    src_state = src.state_dict()
    with torch.no_grad():
        for name, value in dst.state_dict().items():
            other = src_state[name]
            if _is_dtensor(value) != _is_dtensor(other):
                raise ValueError(f"{name}: one model is sharded and the other is not")
            if _is_dtensor(value):
                if value.placements != other.placements or value.to_local().shape != other.to_local().shape:
                    raise ValueError(f"{name}: the two models are sharded differently")
                value.to_local().copy_(other.to_local())
            else:
                value.copy_(other)


def shard_like_policy(reference: ModuleT, trainer: Any, gangs: Any, family: Any) -> ModuleT:
    """Wraps the reference with fairseq2's FSDP2 exactly as fairseq2 wrapped the policy
    (same granularity and mixed precision), so its shards line up with the policy's.

    fairseq2 loads the reference on rank 0 and broadcasts it whole; sharding it frees
    the rest (8B fp32: 32 GB per rank → 1 GB on 32 ranks).
    """
    from fairseq2.nn.fsdp import to_fsdp

    granularity = trainer.fsdp.granularity

    def apply(module: Module, wrapper: Any) -> Module:
        if granularity == "model":
            return wrapper(module, reshard_after_forward=False)  # type: ignore[no-any-return]
        return family.apply_fsdp(module, granularity, wrapper)  # type: ignore[no-any-return]

    mp_dtype = trainer.mixed_precision.dtype if trainer.mixed_precision.mode == "static" else None
    sharded = to_fsdp(
        reference,
        gangs,
        apply,
        version="v2",
        mixed_precision_dtype=mp_dtype,
        fp32_reduce=trainer.fsdp.fp32_reduce,
        broadcast_state=False,
        reshard_after_forward=trainer.fsdp.reshard_after_forward,
    )
    sharded.requires_grad_(False)
    sharded.eval()
    return cast(ModuleT, sharded)  # FSDP2 shards the module in place: the same object, its class extended


def model_family(section: Any) -> Any:
    """The fairseq2 model family of a model section's card (its FSDP layout)."""
    from fairseq2.assets import AssetStore
    from fairseq2.models.family import ModelFamily, get_model_family_name
    from fairseq2.runtime.dependency import get_dependency_resolver

    resolver = get_dependency_resolver()
    if section.name is not None:
        name = get_model_family_name(resolver.resolve(AssetStore).retrieve_card(section.name))
    else:
        name = section.family
    return resolver.resolve(ModelFamily, key=name)
