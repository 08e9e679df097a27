"""Weight-sync buckets: the NCCL path sends one flat buffer per bucket (the NCCL
broadcast itself needs GPUs and is not run here); packing and unpacking are plain torch."""

from __future__ import annotations

import pytest
import torch

from fs2_semionline.generation.buckets import flatten_bucket, plan_buckets, unflatten_bucket


def state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "embed": torch.randn(10, 4, generator=g),  # 160 bytes
        "a.weight": torch.randn(4, 4, generator=g),  # 64 bytes
        "a.norm": torch.randn(4, generator=g).to(torch.bfloat16),  # 8 bytes
        "b.weight": torch.randn(4, 4, generator=g),  # 64 bytes
        "big": torch.randn(100, generator=g),  # 400 bytes: larger than a bucket
        "c.weight": torch.randn(2, 3, generator=g),  # 24 bytes
    }


def test_buckets_hold_one_dtype_at_most_the_size_and_every_tensor_once() -> None:
    sd = state()
    buckets = plan_buckets(sd, bucket_bytes=200)
    names = [m.name for b in buckets for m in b.metas]
    assert sorted(names) == sorted(sd)
    for b in buckets:
        assert {sd[m.name].dtype for m in b.metas} == {b.dtype}
        size = sum(sd[m.name].numel() * sd[m.name].element_size() for m in b.metas)
        assert size <= 200 or len(b.metas) == 1  # only a lone oversized tensor may exceed
    # float32 in state-dict order: [embed] (160; +64 would be 224), [a.weight, b.weight] (128; +400 no),
    # [big] alone, [c.weight]; then the bfloat16 bucket.
    assert [[m.name for m in b.metas] for b in buckets] == [
        ["embed"],
        ["a.weight", "b.weight"],
        ["big"],
        ["c.weight"],
        ["a.norm"],
    ]


def test_flatten_then_unflatten_gives_back_every_tensor_exactly() -> None:
    sd = state()
    out: dict[str, torch.Tensor] = {}
    for bucket in plan_buckets(sd, bucket_bytes=256):
        buffer = flatten_bucket(sd, bucket, torch.device("cpu"))
        assert buffer.dtype == bucket.dtype and buffer.dim() == 1
        out.update({name: t.clone() for name, t in unflatten_bucket(buffer, bucket.metas)})
    assert sorted(out) == sorted(sd)
    for name, tensor in sd.items():
        assert torch.equal(out[name], tensor), name


def test_a_buffer_of_the_wrong_size_is_refused() -> None:
    sd = state()
    bucket = plan_buckets(sd, bucket_bytes=1 << 20)[0]
    buffer = flatten_bucket(sd, bucket, torch.device("cpu"))
    with pytest.raises(ValueError, match="bucket buffer holds"):
        list(unflatten_bucket(torch.cat([buffer, buffer[:1]]), bucket.metas))
    with pytest.raises(ValueError, match="bucket_bytes must be > 0"):
        plan_buckets(sd, 0)
