"""Builds the tiny reward model: a randomly initialised ``LlamaForSequenceClassification``.

It stands in for a real chat reward model (Athene-RM-8B) in tests and CPU demos of
reward-model scoring: same Hugging Face layout (config, safetensors, tokenizer files),
so :class:`fs2_semionline.rewards.reward_model.RewardModel` loads it exactly like a
real one, with ``local_files_only=True``. The weights are random (a trained one comes
later) but fixed by the seed, so scores are reproducible across machines and runs.

    python -m fs2_semionline.tiny.build_reward_model OUT_DIR [--seed 0]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from fs2_semionline.core.paths import TINY_MATH_DIR

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

#: Token ids of the tiny tokenizer (see ``fs2_semionline.data.templates.SPECIAL_TOKENS``).
BOS_ID, EOT_ID, PAD_ID = 0, 4, 5


def tiny_reward_model_config() -> LlamaConfig:
    """~0.2M parameters: enough to exercise batching/padding, fast on one CPU core."""
    return LlamaConfig(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        num_labels=1,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOT_ID,
        tie_word_embeddings=False,
    )


def copy_tiny_tokenizer(out_dir: Path) -> None:
    """Copies the shipped tokenizer so the folder is self-contained."""
    for name in TOKENIZER_FILES:
        shutil.copy2(TINY_MATH_DIR / "tokenizer" / name, out_dir / name)


def build_tiny_reward_model(out_dir: Path, *, seed: int = 0) -> Path:
    """Writes config.json, model.safetensors and the tokenizer files into ``out_dir``.

    The global RNG is forked so that building a model does not change the caller's
    random state; the same seed gives bit-identical weights.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForSequenceClassification(tiny_reward_model_config())
    model.save_pretrained(out_dir, safe_serialization=True)
    copy_tiny_tokenizer(out_dir)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = build_tiny_reward_model(args.out_dir, seed=args.seed)
    print(f"wrote tiny reward model to {out}")


if __name__ == "__main__":
    main()
