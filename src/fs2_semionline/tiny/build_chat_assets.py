"""Builds the tiny non-verifiable task: its data, a policy for math *and* chat, a reward model.

1. chat prompts (``data/chat_task.py``)  → assets/tiny_chat/data/{train,valid,test}.jsonl
2. mixed SFT from ``tiny_math_sft``: the math solutions plus answers of mixed quality to
   the chat prompts, on fairseq2's Trainer  → OUT_DIR/sft/checkpoints/step_*
3. checkpoint selection on the *validation* splits at temperature 1.0: among the
   checkpoints whose chat answers reach 90% of the best mean ``quality`` seen, the one
   whose math accuracy (Math-Verify) is nearest 40% (room for RL on both)
   → assets/tiny_chat/model.pt
4. preference pairs (``chat_task.preference_pairs``): answers from ``sample_response``
   ranked by the synthetic preference ``chat_task.quality`` (ties dropped), half of
   them differing in their number of sentences only, on fresh prompts (never a
   valid/test one)
5. the reward model: the selected policy trained with the Bradley–Terry loss on those
   pairs (``tiny/train_reward_model.py``), best checkpoint by held-out pair accuracy,
   exported as a Hugging Face ``LlamaForSequenceClassification``
   → assets/tiny_chat/reward_model/
6. provenance and the reward model's held-out numbers → assets/tiny_chat/build.json

    python -m fs2_semionline.tiny.build_chat_assets OUT_DIR      (``make tiny-chat-assets``)
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import statistics
from pathlib import Path
from typing import Any

import torch

from fs2_semionline.core.paths import TINY_CHAT_DIR, TINY_MATH_DIR
from fs2_semionline.data import chat_task
from fs2_semionline.runs.checkpoints import best_scored_step, checkpoint_model_dir, checkpoint_steps
from fs2_semionline.tiny.build_assets import load_checkpoint_weights, run_sft

SFT_STEPS = 800
RM_STEPS = 1000
ROLLOUT_LEN = 48


def write_sft_data(
    path: Path, chat_prompts: list[chat_task.ChatPrompt], seed: int, answers_per_prompt: int, math_share: float
) -> None:
    """``answers_per_prompt`` chat answers per prompt and math solutions of the math
    training split (``math_share`` of the records), shuffled together. The math share is
    small: the seed model already solves math, more of it would only raise its accuracy
    past the middle of the band where RL has signal both ways."""
    rng = random.Random(seed)
    records = [
        {"prompt": p.prompt, "solution": chat_task.sample_response(rng, p), "task": "chat"}
        for p in chat_prompts
        for _ in range(answers_per_prompt)
    ]
    math = [json.loads(line) for line in (TINY_MATH_DIR / "data" / "train.jsonl").read_text().splitlines()]
    records += rng.sample(math, round(len(records) * math_share / (1 - math_share)))
    rng.shuffle(records)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def write_pairs(path: Path, pairs: list[dict[str, str]]) -> int:
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return len(pairs)


def policy_scores(weights: dict[str, torch.Tensor], seed: int, num_samples: int) -> dict[str, float]:
    """Validation math accuracy and chat constraint rate / mean quality at temperature 1.0."""
    from fairseq2.models.hg.tokenizer import HgTokenizerConfig, load_hg_tokenizer
    from fairseq2.models.llama import get_llama_model_hub

    from fs2_semionline.data.encoding import fairseq2_text_encoder
    from fs2_semionline.data.jsonl import load_prompts
    from fs2_semionline.data.templates import non_verifiable_prompt, verifiable_prompt
    from fs2_semionline.eval.math_eval import evaluate_math
    from fs2_semionline.generation.local import PolicySampler, sample_completions
    from fs2_semionline.generation.protocol import SamplingConfig
    from fs2_semionline.glue.extension import tiny_math_config
    from fs2_semionline.rewards.math_pool import MathVerifyPool

    tokenizer = load_hg_tokenizer(TINY_MATH_DIR / "tokenizer", HgTokenizerConfig())
    text_encoder = fairseq2_text_encoder(tokenizer)
    model = get_llama_model_hub().create_new_model(tiny_math_config(), device=torch.device("cpu"))
    model.load_state_dict(weights)
    sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_gen_len=ROLLOUT_LEN)
    math_examples = load_prompts(
        [TINY_MATH_DIR / "data" / "valid.jsonl"],
        task="math",
        template=verifiable_prompt,
        encoder=text_encoder,
        max_prompt_len=200,
        require_answer=True,
    )
    with MathVerifyPool() as pool:
        math = evaluate_math(
            PolicySampler(model, tokenizer, batch_size=100),
            math_examples,
            pool,
            num_samples=num_samples,
            sampling=sampling,
            seed=seed,
        )
    chat_prompts = chat_task.read_prompts(TINY_CHAT_DIR / "data" / "valid.jsonl")
    torch.manual_seed(seed)
    completions = sample_completions(
        model,
        tokenizer,
        [text_encoder.prompt(non_verifiable_prompt, p.prompt) for p in chat_prompts],
        num_samples,
        sampling,
        batch_size=100,
    )
    answers = [(p, c.text) for p, cs in zip(chat_prompts, completions) for c in cs]
    return {
        "math_valid_accuracy": math.accuracy.mean,
        "chat_valid_both_met": statistics.mean(chat_task.meets_constraints(p, a) for p, a in answers),
        "chat_valid_quality": statistics.mean(chat_task.quality(p, a) for p, a in answers),
    }


def wall_seconds(run_dir: Path) -> float:
    """fairseq2's wall time at the last logged training step of a run."""
    last = (run_dir / "metrics" / "train.jsonl").read_text().splitlines()[-1]
    return float(json.loads(last)["Wall Time"])


def run_reward_model_training(
    out_dir: Path, init_model_path: Path, train: Path, valid: Path, num_steps: int, seed: int
) -> None:
    from fairseq2.recipe.config import ModelSection
    from fairseq2.recipe.run import run

    from fs2_semionline.glue.extension import TINY_MATH_ARCH
    from fs2_semionline.tiny.train_reward_model import RewardModelTrainConfig, RewardModelTrainRecipe

    config = RewardModelTrainConfig()
    config.model = ModelSection(path=init_model_path, family="llama", arch=TINY_MATH_ARCH)
    config.dataset.train_path, config.dataset.valid_path = train, valid
    config.regime.num_steps = num_steps
    config.common.seed = seed
    run(RewardModelTrainRecipe(), config, out_dir, no_rich=True)


def reward_model_report(
    rm_dir: Path, pairs_file: Path, prompts: list[chat_task.ChatPrompt], seed: int
) -> dict[str, object]:
    """Held-out numbers of the exported model, read through the scoring path the training
    runs use (:class:`RewardModel`): pair accuracy, the correlation of its score with the
    synthetic preference on fresh answers, and the accuracy on pairs that differ in one
    constraint only (numbers; sentences)."""
    from fs2_semionline.rewards.reward_model import RewardModel, RewardModelSpec

    model = RewardModel(RewardModelSpec(path=str(rm_dir), batch_size=64))

    def accuracy(triples: list[tuple[str, str, str]]) -> float:
        texts = [p for p, _, _ in triples]
        chosen = model.score(texts, [c for _, c, _ in triples])
        rejected = model.score(texts, [r for _, _, r in triples])
        return statistics.mean(float(c > r) for c, r in zip(chosen, rejected))  # type: ignore[operator]

    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    rng = random.Random(seed)
    answers = [(p, chat_task.sample_response(rng, p)) for p in prompts for _ in range(4)]
    scored = model.score([p.prompt for p, _ in answers], [a for _, a in answers])
    scores = [s for s in scored if s is not None]
    if len(scores) != len(scored):
        raise RuntimeError(f"the tiny reward model failed on {len(scored) - len(scores)} of {len(scored)} answers")
    qualities = [chat_task.quality(p, a) for p, a in answers]
    by_quality = {
        str(q): statistics.mean(s for s, qq in zip(scores, qualities) if qq == q) for q in sorted(set(qualities))
    }
    minimal: dict[str, list[tuple[str, str, str]]] = {"numbers": [], "sentences": []}
    for p in prompts:
        good = " ".join([f"{p.name} has 3 {p.thing}." if p.numbers else f"{p.name} likes the {p.thing}."] * p.sentences)
        flipped = f"{p.name} likes the {p.thing}." if p.numbers else f"{p.name} has 3 {p.thing}."
        minimal["numbers"].append((p.prompt, good, " ".join([flipped] * p.sentences)))
        unit = good.split(". ")[0].rstrip(".") + "."
        minimal["sentences"].append((p.prompt, good, " ".join([unit] * (p.sentences % 3 + 1))))
    return {
        "valid_pair_accuracy": accuracy([(p["prompt"], p["chosen"], p["rejected"]) for p in pairs]),
        "valid_num_pairs": len(pairs),
        "valid_minimal_pair_accuracy": {k: accuracy(v) for k, v in minimal.items()},
        "pearson_score_vs_quality": statistics.correlation(scores, qualities),  # type: ignore[arg-type]
        "mean_score_by_quality": by_quality,
    }


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("out/tiny_chat_assets"))
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--train-seed", type=int, default=2)
    parser.add_argument("--sft-steps", type=int, default=SFT_STEPS)
    parser.add_argument("--sft-lr", type=float, default=5e-4)
    parser.add_argument("--rm-steps", type=int, default=RM_STEPS)
    parser.add_argument("--select-samples", type=int, default=4)
    parser.add_argument("--assets-dir", type=Path, default=TINY_CHAT_DIR)
    parser.add_argument("--keep-sft", action="store_true", help="reuse OUT_DIR/sft if it has checkpoints")
    return parser.parse_args(argv)


def build_policy(args: argparse.Namespace, splits: dict[str, list[chat_task.ChatPrompt]], out: Path) -> dict[str, Any]:
    """The mixed SFT run, and the checkpoint that learned chat with math accuracy nearest
    40% (saved as the shipped ``model.pt``); its build record."""
    sft_file = out / "data" / "sft_mixed.jsonl"
    write_sft_data(sft_file, splits["train"], args.seed, answers_per_prompt=4, math_share=0.25)
    sft_dir = out / "sft"
    if not (args.keep_sft and checkpoint_steps(sft_dir)):
        run_sft(
            sft_dir,
            sft_file,
            args.sft_steps,
            args.train_seed,
            init_model="tiny_math_sft",
            lr=args.sft_lr,
            checkpoint_after_n_steps=0,
        )
    table = []
    for step in checkpoint_steps(sft_dir):
        row = {
            "step": step,
            **policy_scores(load_checkpoint_weights(sft_dir, step), args.train_seed, args.select_samples),
        }
        print(f"step {step}: {row}", flush=True)
        table.append(row)
    # Chat learned (within 90% of the best quality seen), then math nearest 40%.
    learned = [r for r in table if r["chat_valid_quality"] >= 0.9 * max(r["chat_valid_quality"] for r in table)]
    best = min(learned, key=lambda r: (abs(r["math_valid_accuracy"] - 0.4), -r["step"]))
    step = int(best["step"])
    torch.save(load_checkpoint_weights(sft_dir, step), args.assets_dir / "model.pt")
    return {
        "selected_step": step,
        "init": "tiny_math_sft",
        "sft_steps": args.sft_steps,
        "sft_lr": args.sft_lr,
        "sft_seconds": round(wall_seconds(sft_dir), 1),
        "selection": table,
    }


def build_reward_model(
    args: argparse.Namespace, splits: dict[str, list[chat_task.ChatPrompt]], out: Path, policy_step: int
) -> dict[str, Any]:
    """The reward model, initialised from the selected policy checkpoint and trained on
    fresh preference pairs, exported as the shipped HF folder; its build record."""
    # Reward-model pairs: fresh prompts of the whole task (not only the policy's training
    # split, so the model sees many prompts once rather than few many times), never a
    # validation or test prompt; held-out pairs on the validation prompts.
    held_out = {p.prompt for p in splits["valid"] + splits["test"]}
    rng = random.Random(args.seed + 1)

    def fresh_prompt() -> chat_task.ChatPrompt:
        while (p := chat_task.make_prompt(rng)).prompt in held_out:
            pass
        return p

    valid_cycle = itertools.cycle(splits["valid"])
    train_pairs, valid_pairs = out / "data" / "rm_train.jsonl", out / "data" / "rm_valid.jsonl"
    num_train_pairs = write_pairs(train_pairs, chat_task.preference_pairs(rng, fresh_prompt, args.rm_steps * 32))
    num_valid_pairs = write_pairs(valid_pairs, chat_task.preference_pairs(rng, lambda: next(valid_cycle), 400))
    rm_run = out / "reward_model"
    if rm_run.exists():
        shutil.rmtree(rm_run)
    sft_model = checkpoint_model_dir(out / "sft", policy_step)
    run_reward_model_training(rm_run, sft_model, train_pairs, valid_pairs, args.rm_steps, args.train_seed)
    rm_step = best_scored_step(rm_run)
    assert rm_step is not None, "the reward-model run validates and scores every checkpoint"
    rm_dir = args.assets_dir / "reward_model"
    export_reward_model(load_checkpoint_weights(rm_run, rm_step), rm_dir)
    return {
        "selected_step": rm_step,
        "steps": args.rm_steps,
        "seconds": round(wall_seconds(rm_run), 1),
        "num_train_pairs": num_train_pairs,
        "num_valid_pairs": num_valid_pairs,
        "init": f"policy step {policy_step}",
        **reward_model_report(rm_dir, valid_pairs, splits["valid"], args.seed + 3),
    }


def export_reward_model(weights: dict[str, torch.Tensor], rm_dir: Path) -> None:
    """The reward model as an HF folder with the tiny tokenizer and its reward token."""
    from fairseq2.models.hg.tokenizer import HgTokenizerConfig, load_hg_tokenizer

    from fs2_semionline.glue.extension import tiny_math_config
    from fs2_semionline.glue.hf_export import export_hf_model
    from fs2_semionline.tiny.train_reward_model import REWARD_TOKEN

    if rm_dir.exists():
        shutil.rmtree(rm_dir)
    vocab = load_hg_tokenizer(TINY_MATH_DIR / "tokenizer", HgTokenizerConfig()).vocab_info
    tokenizer_dir = TINY_MATH_DIR / "tokenizer"
    export_hf_model(weights, tiny_math_config(), vocab, rm_dir, tokenizer_dir=tokenizer_dir, reward_token=REWARD_TOKEN)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    splits = chat_task.generate_prompts(args.seed, num_train=4000, num_valid=200, num_test=300)
    for split, prompts in splits.items():
        chat_task.write_prompts(args.assets_dir / "data" / f"{split}.jsonl", prompts)
    out: Path = args.out_dir
    if out.exists() and not args.keep_sft:
        shutil.rmtree(out)
    policy = build_policy(args, splits, out)
    build = {
        "policy": policy,
        "reward_model": build_reward_model(args, splits, out, policy["selected_step"]),
        "data_seed": args.seed,
        "train_seed": args.train_seed,
    }
    (args.assets_dir / "build.json").write_text(json.dumps(build, indent=2) + "\n")
    print(json.dumps(build, indent=2))


if __name__ == "__main__":
    main()
