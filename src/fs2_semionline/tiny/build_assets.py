"""Rebuilds everything the tiny default ships: tokenizer, math data and the SFT model.

1. the byte-level BPE tokenizer  → assets/tiny_math/tokenizer/
2. the synthetic math splits     → assets/tiny_math/data/{train,valid,test}.jsonl
3. SFT on fairseq2's Trainer     → OUT_DIR/sft/checkpoints/step_*
4. checkpoint selection: each checkpoint's sampled accuracy on the *validation* split at
   temperature 1.0 (the rollout temperature); the one closest to ``--target-accuracy``
   (default 0.4, the middle of the 20–60% band where RL has signal both ways) wins
5. its weights                   → assets/tiny_math/model.pt, provenance in build.json

    python -m fs2_semionline.tiny.build_assets OUT_DIR      (``make tiny-assets``)
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from fs2_semionline.core.paths import TINY_MATH_DIR
from fs2_semionline.data.math_task import generate_splits
from fs2_semionline.data.synthetic import write_jsonl
from fs2_semionline.runs.checkpoints import checkpoint_steps
from fs2_semionline.tiny.build_tokenizer import write_tokenizer_dir

SFT_STEPS = 1200


def run_sft(
    out_dir: Path,
    train_file: Path,
    num_steps: int,
    seed: int,
    *,
    init_model: str | None = None,
    lr: float | None = None,
    checkpoint_after_n_steps: int | None = None,
) -> float:
    """SFT on fairseq2's Trainer from random weights, or from the ``init_model`` card."""
    from fairseq2.recipe.config import ModelSection
    from fairseq2.recipe.run import run

    from fs2_semionline.tiny.sft import TinySFTConfig, TinySFTRecipe

    config = TinySFTConfig()
    config.dataset.path = train_file
    config.regime.num_steps = num_steps
    config.common.seed = seed
    if init_model is not None:
        config.model = ModelSection(name=init_model)
    if lr is not None:
        config.optimizer.config.lr = lr  # type: ignore[attr-defined]
    if checkpoint_after_n_steps is not None:
        config.regime.checkpoint_after_n_steps = checkpoint_after_n_steps
    start = time.perf_counter()
    run(TinySFTRecipe(), config, out_dir, no_rich=True)
    return time.perf_counter() - start


def load_checkpoint_weights(sft_dir: Path, step: int) -> dict[str, torch.Tensor]:
    path = sft_dir / "checkpoints" / f"step_{step}" / "model" / "pp_00" / "tp_00" / "sdp_00.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    return dict(state.get("model", state))


def select_checkpoint(
    sft_dir: Path, valid_file: Path, target: float, num_samples: int, seed: int
) -> tuple[int, list[dict[str, float]]]:
    """Validation accuracy at T=1.0 for every checkpoint; the one nearest ``target`` wins."""
    from fairseq2.models.hg.tokenizer import HgTokenizerConfig, load_hg_tokenizer
    from fairseq2.models.llama import get_llama_model_hub

    from fs2_semionline.data.encoding import fairseq2_text_encoder
    from fs2_semionline.data.jsonl import load_prompts
    from fs2_semionline.data.templates import verifiable_prompt
    from fs2_semionline.eval.math_eval import evaluate_math
    from fs2_semionline.generation.local import PolicySampler
    from fs2_semionline.generation.protocol import SamplingConfig
    from fs2_semionline.glue.extension import tiny_math_config
    from fs2_semionline.rewards.math_pool import MathVerifyPool

    tokenizer = load_hg_tokenizer(TINY_MATH_DIR / "tokenizer", HgTokenizerConfig())
    encoder = fairseq2_text_encoder(tokenizer)
    examples = load_prompts(
        [valid_file],
        task="math",
        template=verifiable_prompt,
        encoder=encoder,
        max_prompt_len=200,
        require_answer=True,
    )
    model = get_llama_model_hub().create_new_model(tiny_math_config(), device=torch.device("cpu"))
    table: list[dict[str, float]] = []
    with MathVerifyPool() as pool:
        for step in checkpoint_steps(sft_dir):
            model.load_state_dict(load_checkpoint_weights(sft_dir, step))
            result = evaluate_math(
                PolicySampler(model, tokenizer, batch_size=100),
                examples,
                pool,
                num_samples=num_samples,
                sampling=SamplingConfig(temperature=1.0, top_p=1.0, max_gen_len=48),
                seed=seed,
            )
            row = {"step": step, "valid_accuracy": result.accuracy.mean, "stderr": result.accuracy.stderr}
            print(f"step {step}: valid accuracy at T=1.0 {result.accuracy}")
            table.append(row)
    best = min(table, key=lambda r: (abs(r["valid_accuracy"] - target), -r["step"]))
    return int(best["step"]), table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("out/tiny_assets"))
    parser.add_argument("--seed", type=int, default=0, help="data seed")
    parser.add_argument("--train-seed", type=int, default=2)
    parser.add_argument("--num-steps", type=int, default=SFT_STEPS)
    parser.add_argument("--target-accuracy", type=float, default=0.4)
    parser.add_argument("--select-samples", type=int, default=4)
    parser.add_argument("--assets-dir", type=Path, default=TINY_MATH_DIR)
    args = parser.parse_args(argv)

    assets: Path = args.assets_dir
    write_tokenizer_dir(assets / "tokenizer", seed=args.seed)
    splits = generate_splits(args.seed, num_train=20000, num_valid=200, num_test=300)
    for split, problems in splits.items():
        write_jsonl(assets / "data" / f"{split}.jsonl", problems)

    sft_dir = args.out_dir / "sft"
    if sft_dir.exists():
        shutil.rmtree(sft_dir)
    sft_seconds = run_sft(sft_dir, assets / "data" / "train.jsonl", args.num_steps, args.train_seed)
    step, table = select_checkpoint(
        sft_dir, assets / "data" / "valid.jsonl", args.target_accuracy, args.select_samples, args.train_seed
    )
    weights = load_checkpoint_weights(sft_dir, step)
    torch.save(weights, assets / "model.pt")
    build = {
        "selected_step": step,
        "sft_steps": args.num_steps,
        "sft_seconds": round(sft_seconds, 1),
        "num_parameters": sum(t.numel() for t in weights.values()),
        "data_seed": args.seed,
        "train_seed": args.train_seed,
        "selection": table,
    }
    (assets / "build.json").write_text(json.dumps(build, indent=2) + "\n")
    print(f"selected step {step}; wrote {assets / 'model.pt'} and {assets / 'build.json'}")


if __name__ == "__main__":
    main()
