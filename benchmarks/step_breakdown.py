"""Seconds per training step on the tiny preset, split into generate / reward / loss / sync,
for s = 1, s = 10 and offline, and our step's overhead against a bare-torch loop doing
the same generation, scoring, pairing and DPO update on the same model.

    python benchmarks/step_breakdown.py [--steps 20] [--out benchmarks/results/step_breakdown.json]

Every number comes from one run on this machine; ratios are only meaningful within it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fs2_semionline.core.paths import TINY_MATH_DATA_DIR
from fs2_semionline.recipes.preference_finetune import PreferenceFinetuneConfig, PreferenceFinetuneRecipe

PHASES = ("Generate Time (s)", "Reward Time (s)", "Forward + Loss Time (s)", "Sync Time (s)")


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def tiny_config(steps: int, sync: int | None) -> PreferenceFinetuneConfig:
    config = PreferenceFinetuneConfig()
    config.dataset.batch_size = 16
    config.generator.num_rollouts = 8
    config.generator.max_gen_len = 48
    config.generator.sync_every_n_steps = sync
    config.reference_sync.mode = "frozen" if sync is None else "with_generator"
    config.optimizer.config.lr = 1e-4  # type: ignore[attr-defined]
    config.regime.num_steps = steps
    config.regime.checkpoint_every_n_steps = None
    config.common.metric_recorders.tensorboard.enabled = False
    return config


def run_ours(steps: int, sync: int | None, out_dir: Path) -> dict[str, float]:
    from fairseq2.recipe.run import run

    run(PreferenceFinetuneRecipe(), tiny_config(steps, sync), out_dir, no_rich=True)
    rows = [json.loads(l) for l in (out_dir / "metrics" / "train.jsonl").read_text().splitlines()][1:]  # skip warm-up
    result = {p: statistics.median(r.get(p, 0.0) for r in rows) for p in PHASES}
    result["step (s)"] = statistics.median(r["Lapse Time"] for r in rows)
    return result


def run_bare(steps: int) -> float:
    """The same online DPO step (s = 1) without fairseq2's Trainer: median seconds per step."""
    from fairseq2.models.hg.tokenizer import HgTokenizerConfig, load_hg_tokenizer
    from fairseq2.models.llama import get_llama_model_hub

    from fs2_semionline.core.paths import TINY_MATH_DIR
    from fs2_semionline.core.seeding import step_rng
    from fs2_semionline.data.encoding import fairseq2_text_encoder
    from fs2_semionline.data.jsonl import load_prompts
    from fs2_semionline.data.templates import verifiable_prompt
    from fs2_semionline.generation.local import sample_completions
    from fs2_semionline.generation.protocol import SamplingConfig
    from fs2_semionline.losses import dpo_loss, sequence_logprobs
    from fs2_semionline.objectives.selection import select_dpo_pairs
    from fs2_semionline.rewards import MathVerifyPool
    from fs2_semionline.units.sequences import ResponseBatch, response_logits_and_logps

    cpu = torch.device("cpu")
    tokenizer = load_hg_tokenizer(TINY_MATH_DIR / "tokenizer", HgTokenizerConfig())
    encoder = fairseq2_text_encoder(tokenizer)
    hub = get_llama_model_hub()
    policy = hub.load_model("tiny_math_sft", device=cpu)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    generator = copy.deepcopy(policy).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4, eps=1e-4, weight_decay=0.0)
    examples = load_prompts(
        [TINY_MATH_DATA_DIR / "train.jsonl"],
        task="math",
        template=verifiable_prompt,
        encoder=encoder,
        max_prompt_len=200,
        require_answer=True,
    )[: 16 * steps]
    sampling = SamplingConfig(1.0, 1.0, 48)
    eos, pad = tokenizer.vocab_info.eos_idx, tokenizer.vocab_info.pad_idx
    times: list[float] = []
    with MathVerifyPool() as pool:
        for step in range(steps):
            start = time.perf_counter()
            generator.load_state_dict(policy.state_dict())
            reference.load_state_dict(policy.state_dict())
            batch = examples[16 * step : 16 * (step + 1)]
            torch.manual_seed(step)
            rollouts = sample_completions(
                generator, tokenizer, [e.token_ids for e in batch], 8, sampling, batch_size=64
            )
            flat = pool.score(
                [c.text for cs in rollouts for c in cs], [str(e.answer) for e in batch for _ in range(8)]
            ).rewards
            rewards = [flat[i * 8 : (i + 1) * 8] for i in range(len(batch))]
            pairs, _ = select_dpo_pairs(rewards, "binary", step_rng(0, step))
            if pairs:
                ids = lambda c: [*c.token_ids, eos] if c.finished else list(c.token_ids)  # noqa: E731
                prompts = [batch[p.prompt_idx].token_ids for p in pairs] * 2
                responses = [ids(rollouts[p.prompt_idx][p.chosen_idx]) for p in pairs] + [
                    ids(rollouts[p.prompt_idx][p.rejected_idx]) for p in pairs
                ]
                rb = ResponseBatch.build(prompts, responses, pad, cpu)
                _, tl = response_logits_and_logps(policy, rb)
                with torch.no_grad():
                    _, rtl = response_logits_and_logps(reference, rb)
                lp, rlp = sequence_logprobs(tl, rb.mask), sequence_logprobs(rtl, rb.mask)
                n = len(pairs)
                loss = dpo_loss(lp[:n], lp[n:], rlp[:n], rlp[n:], beta=0.1).loss.sum() / n
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/step_breakdown.json"))
    args = parser.parse_args()
    results: dict[str, object] = {
        "machine": machine(),
        "steps": args.steps,
        "preset": "tiny (16 prompts x 8 rollouts, 48 tokens)",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for label, sync in (("s=1", 1), ("s=10", 10), ("offline", None)):
            results[label] = run_ours(args.steps, sync, Path(tmp) / label)
    results["bare torch loop, s=1: step (s)"] = bare = run_bare(args.steps)
    ours = results["s=1"]["step (s)"]  # type: ignore[index]
    results["overhead ours/bare (s=1)"] = ours / bare
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
