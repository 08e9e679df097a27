"""Builds the tiny task's offline tokenizer: a byte-level BPE ``tokenizer.json``.

Digits are split one per token (arithmetic is learnable digit by digit) and the
Llama-3 header tokens are special tokens, so the fixed instruction of Figure 4 shrinks
to a few tokens. The folder it writes loads in fairseq2 (``hg`` tokenizer family),
transformers and vLLM alike; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from fs2_semionline.data.math_task import generate_splits
from fs2_semionline.data.templates import (
    BEGIN_OF_TEXT,
    EOT,
    PAD,
    SPECIAL_TOKENS,
    non_verifiable_prompt,
    verifiable_prompt,
)

# A little general text, so that chat prompts do not fall apart into single bytes.
_GENERAL_TEXT = (
    "Write a short poem about the sea. Explain why the sky is blue in two sentences. "
    "Give me three tips for learning a new language. What is the capital of France? "
    "Summarize the following paragraph. Translate this sentence into French. "
    "Please answer in one word. The answer should be polite, short and helpful. "
    "Thank you! Could you help me write an email to my teacher about the homework?"
)


def training_corpus(seed: int = 0) -> list[str]:
    splits = generate_splits(seed, num_train=5000, num_valid=0, num_test=0)
    texts = [verifiable_prompt(p.prompt) + p.solution + EOT for p in splits["train"]]
    texts += [non_verifiable_prompt(s) for s in _GENERAL_TEXT.split(". ")] * 20
    return texts


def build_tokenizer(vocab_size: int = 1024, seed: int = 0) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_corpus(seed), trainer=trainer)
    return tokenizer


def write_tokenizer_dir(out_dir: Path, vocab_size: int = 1024, seed: int = 0) -> Path:
    """Writes tokenizer.json plus the HF side files naming BOS/EOS/PAD."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab_size, seed)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BEGIN_OF_TEXT,
        "eos_token": EOT,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"bos_token": BEGIN_OF_TEXT, "eos_token": EOT, "pad_token": PAD}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_tokenizer_dir(args.out_dir, args.vocab_size, args.seed)
    print(f"wrote {args.out_dir / 'tokenizer.json'}")


if __name__ == "__main__":
    main()
