"""The in-process sampler keeps every completion within max_gen_len, as vLLM's max_tokens does."""

from __future__ import annotations

import torch

from fs2_semionline.data.templates import verifiable_prompt
from fs2_semionline.generation.local import sample_completions
from fs2_semionline.generation.protocol import SamplingConfig


def test_completions_of_short_prompts_are_cut_at_max_gen_len(tiny_model, tiny_tokenizer) -> None:
    encode = tiny_tokenizer.create_raw_encoder()
    short = encode(verifiable_prompt("What is 2 plus 3?")).tolist()
    long = encode(verifiable_prompt("What is one half of 48, then plus 17, minus 3, plus 12, minus 30?")).tolist()
    assert len(long) - len(short) >= 8  # fairseq2 would give the short prompt 8+ extra tokens
    torch.manual_seed(0)
    outs = sample_completions(tiny_model, tiny_tokenizer, [short, long], 8, SamplingConfig(1.0, 1.0, 6))
    for completions in outs:
        for c in completions:
            assert len(c.token_ids) + c.finished <= 6  # EOS counts, as in vLLM's max_tokens
            if len(c.token_ids) == 6:
                assert not c.finished


def test_rollout_text_has_no_special_tokens_whatever_was_decoded_before(tiny_tokenizer) -> None:
    """fairseq2 0.8.1 caches the first decoder regardless of skip_special_tokens."""
    from fs2_semionline.generation.local import text_decoder

    ids = tiny_tokenizer.encode(verifiable_prompt("What is 2 plus 3?"))
    assert tiny_tokenizer.decode(ids).startswith("<|begin_of_text|>")  # a plain decode first
    assert not text_decoder(tiny_tokenizer)(ids).startswith("<|begin_of_text|>")
    assert tiny_tokenizer.decode(ids).startswith("<|begin_of_text|>")  # and it did not change decode
