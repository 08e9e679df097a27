"""The vLLM-on-Ray generator on the tiny preset (16 prompts x 8 rollouts, <= 48 tokens).

1. Steps/s at s=1 and s=10, and at s=10 how much of the possible overlap of generation
   with training we get: limit = (train + generate) / max(train, generate), measured
   from the parts of a run with ``generator.work_ahead=false`` (generate and train one
   after the other); achieved = its step time / the step time with work-ahead on.
   Goal: achieved >= 0.9 x limit. (s=1 cannot overlap: each step needs the last
   step's weights.)
2. Weight sync seconds (Ray object store, CPU).
3. Rollout tokens/s of our actor (Ray call + engine + conversion) against a bare vLLM
   ``LLM.generate`` in its own process, same model, prompts, seeds and threads.
   Goal: >= 0.95.

    python benchmarks/vllm_ray.py [--steps 21] [--out benchmarks/results/vllm_ray.json]

Every number comes from one run on this machine; ratios are only meaningful within it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from fs2_semionline.core.paths import TINY_MATH_DATA_DIR, TINY_MATH_DIR  # noqa: E402
from fs2_semionline.data.templates import verifiable_prompt  # noqa: E402
from step_breakdown import machine, tiny_config  # noqa: E402

NUM_PROMPTS, NUM_ROLLOUTS, MAX_GEN_LEN = 16, 8, 48


def run_steps(steps: int, sync: int, work_ahead: bool, out_dir: Path, threads: int) -> dict[str, float]:
    from fairseq2.recipe.run import run

    from fs2_semionline.recipes.preference_finetune import PreferenceFinetuneRecipe

    config = tiny_config(steps, sync)
    config.generator.backend = "vllm"
    config.generator.work_ahead = work_ahead
    config.generator.num_cpus_per_replica = threads
    run(PreferenceFinetuneRecipe(), config, out_dir, no_rich=True)
    rows = [json.loads(l) for l in (out_dir / "metrics" / "train.jsonl").read_text().splitlines()]
    rows = rows[1:]  # step 1 includes engine warm-up
    step = statistics.mean(float(r["Lapse Time"]) for r in rows)
    gen = statistics.mean(float(r.get("Generate Time (s)", 0.0)) for r in rows)
    syncs = [float(r["Sync Time (s)"]) for r in rows if r.get("Generator Version Lag") == 0.0]
    return {
        "step_s": step,
        "steps_per_s": 1 / step,
        "generate_wait_s": gen,
        "train_s": step - gen,
        "sync_s": statistics.median(syncs) if syncs else float("nan"),
    }


def prompts() -> list[list[int]]:
    from fairseq2.models.hg.tokenizer import HgTokenizerConfig, load_hg_tokenizer

    tokenizer = load_hg_tokenizer(TINY_MATH_DIR / "tokenizer", HgTokenizerConfig())
    encode = tokenizer.create_raw_encoder()
    rows = [json.loads(l) for l in (TINY_MATH_DATA_DIR / "valid.jsonl").read_text().splitlines()[:NUM_PROMPTS]]
    return [encode(verifiable_prompt(r["prompt"])).tolist() for r in rows]


def export_tiny(out_dir: Path) -> Path:
    from fairseq2.models.hg.tokenizer import HgTokenizerConfig, load_hg_tokenizer
    from fairseq2.models.llama import get_llama_model_hub

    from fs2_semionline.glue.extension import tiny_math_config
    from fs2_semionline.glue.hf_export import export_hf_model

    model = get_llama_model_hub().load_model("tiny_math_sft", device=torch.device("cpu"))
    tokenizer = load_hg_tokenizer(TINY_MATH_DIR / "tokenizer", HgTokenizerConfig())
    return export_hf_model(
        model.state_dict(), tiny_math_config(), tokenizer.vocab_info, out_dir, tokenizer_dir=TINY_MATH_DIR / "tokenizer"
    )


def _bare_vllm(model_dir: str, batch: list[list[int]], threads: int, repeats: int, queue: mp.Queue) -> None:
    """Bare vLLM in a fresh process (the engine pins threads; keep it out of ours)."""
    import os

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
    torch.set_num_threads(threads)
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from fs2_semionline.generation.vllm_engine import prompt_seeds

    llm = LLM(
        model=model_dir, dtype="float32", enforce_eager=True, enable_chunked_prefill=False, seed=0, max_model_len=256
    )
    times, tokens = [], 0
    for rep in range(repeats + 1):
        params = [
            SamplingParams(n=NUM_ROLLOUTS, temperature=1.0, top_p=1.0, max_tokens=MAX_GEN_LEN, seed=s, logprobs=0)
            for s in prompt_seeds(rep, len(batch), NUM_ROLLOUTS)
        ]
        start = time.perf_counter()
        out = llm.generate([TokensPrompt(prompt_token_ids=p) for p in batch], params, use_tqdm=False)
        if rep:  # rep 0 warms up
            times.append(time.perf_counter() - start)
            tokens += sum(len(c.token_ids) for o in out for c in o.outputs)
    queue.put((tokens, sum(times)))


def tokens_per_s(model_dir: Path, threads: int, repeats: int) -> dict[str, float]:
    from fs2_semionline.generation.protocol import SamplingConfig, rollouts
    from fs2_semionline.generation.vllm_ray import RayVLLMGenerator, ReplicaOptions

    batch = prompts()
    queue: mp.Queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_bare_vllm, args=(str(model_dir), batch, threads, repeats, queue))
    proc.start()
    bare_tokens, bare_s = queue.get()
    proc.join()

    gen = RayVLLMGenerator(
        model_dir, to_hf=None, options=ReplicaOptions(replicas=1, num_cpus=threads), max_model_len=256, seed=0
    )
    sampling = SamplingConfig(1.0, 1.0, MAX_GEN_LEN)
    ours_s, ours_tokens = 0.0, 0
    try:
        for rep in range(repeats + 1):
            start = time.perf_counter()
            out = rollouts(gen, batch, NUM_ROLLOUTS, sampling, seed=rep)
            if rep:
                ours_s += time.perf_counter() - start
                ours_tokens += sum(len(c.token_ids) + c.finished for cs in out for c in cs)
    finally:
        gen.close()
    ours, bare = ours_tokens / ours_s, bare_tokens / bare_s
    return {
        "ours_tok_s": ours,
        "bare_vllm_tok_s": bare,
        "ours_over_bare": ours / bare,
        "ours_tokens": ours_tokens,
        "bare_tokens": bare_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the generator actor")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "vllm_ray.json")
    args = parser.parse_args()

    from fs2_semionline.glue.ray_cluster import RayCluster, RaySection

    cluster = RayCluster(RaySection())
    cluster.start()
    results: dict[str, object] = {"machine": machine(), "steps": args.steps, "actor_threads": args.threads}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            results["tokens_per_s"] = tokens_per_s(export_tiny(Path(tmp) / "hf"), args.threads, args.repeats)
            print(json.dumps(results["tokens_per_s"], indent=2), flush=True)
            runs = {}
            for label, sync, ahead in (("s=1", 1, True), ("s=10 serial", 10, False), ("s=10 work-ahead", 10, True)):
                runs[label] = run_steps(args.steps, sync, ahead, Path(tmp) / label.replace(" ", "_"), args.threads)
                print(label, json.dumps(runs[label]), flush=True)
    finally:
        cluster.stop()
    serial, ahead = runs["s=10 serial"], runs["s=10 work-ahead"]
    train, gen = serial["train_s"], serial["generate_wait_s"]
    limit = (train + gen) / max(train, gen)
    achieved = serial["step_s"] / ahead["step_s"]
    results["runs"] = runs
    results["overlap"] = {
        "train_s": train,
        "generate_s": gen,
        "limit_speedup": limit,
        "achieved_speedup": achieved,
        "achieved_over_limit": achieved / limit,
    }
    print(json.dumps(results["overlap"], indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
