"""The paper's templates and the offline tokenizer (fairseq2 and transformers agree)."""

from __future__ import annotations

from pathlib import Path

from fs2_semionline.data.templates import (
    SPECIAL_TOKENS,
    non_verifiable_prompt,
    verifiable_prompt,
)
from fs2_semionline.paths import TINY_MATH_DIR
from fs2_semionline.tiny.build_tokenizer import write_tokenizer_dir

FIGURE_4 = (
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    "Given the following problem, reason and give a final answer to the problem.\n"
    "Problem: What is 2 plus 2?\n"
    "Your response should end with \u2018The final answer is $\\boxed{[answer]}$. I hope it is correct.\u2019"
    " where [answer] is the response to the problem.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def test_verifiable_template_is_figure_4() -> None:
    assert verifiable_prompt("What is 2 plus 2?") == FIGURE_4


def test_non_verifiable_template_is_figure_5() -> None:
    assert non_verifiable_prompt("Write a haiku.") == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWrite a haiku.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_special_tokens_are_single_ids_and_vocab_info(tiny_tokenizer) -> None:
    for token in SPECIAL_TOKENS:
        assert len(tiny_tokenizer.encode(token)) == 1, token
    info = tiny_tokenizer.vocab_info
    assert (info.size, info.bos_idx, info.eos_idx, info.pad_idx) == (1024, 0, 4, 5)
    assert tiny_tokenizer.encode("<|eot_id|>").tolist() == [4]


def test_digits_are_split_and_text_round_trips(tiny_tokenizer) -> None:
    text = verifiable_prompt("What is 37 plus 18?") + "37 + 18 = 55. The final answer is $\\boxed{55}$."
    ids = tiny_tokenizer.encode(text)
    assert tiny_tokenizer.decode(ids) == text
    pieces = [tiny_tokenizer.decode(ids[i : i + 1]) for i in range(len(ids))]
    assert "37" not in pieces and "3" in pieces and "7" in pieces
    assert len(tiny_tokenizer.encode(verifiable_prompt("What is 37 plus 18?"))) <= 40


def test_transformers_reads_the_same_tokenizer(tiny_tokenizer) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(TINY_MATH_DIR / "tokenizer")
    text = verifiable_prompt("What is half of 7?") + "7 / 2 = \\frac{7}{2}.<|eot_id|>"
    assert hf(text, add_special_tokens=False)["input_ids"] == tiny_tokenizer.encode(text).tolist()
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (0, 4, 5)


def test_build_script_reproduces_the_shipped_tokenizer(tmp_path: Path) -> None:
    write_tokenizer_dir(tmp_path / "tok")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "tok" / name).read_bytes() == (TINY_MATH_DIR / "tokenizer" / name).read_bytes()
