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


def test_untempered_completions_carry_the_models_log_probs(tiny_model, tiny_tokenizer) -> None:
    """The sampler's log-prob of each drawn token (EOS included) equals the trainer's
    log-prob of it, so the rollout/trainer mismatch is 0 on the same weights; tempered
    samples carry none (fairseq2 scores the tempered distribution)."""
    from fs2_semionline.units.sequences import ResponseBatch, response_stats

    encode = tiny_tokenizer.create_raw_encoder()
    prompt = encode(verifiable_prompt("What is 2 plus 3?")).tolist()
    torch.manual_seed(0)
    (outs,) = sample_completions(tiny_model, tiny_tokenizer, [prompt], 4, SamplingConfig(1.0, 1.0, 24))
    eos = tiny_tokenizer.vocab_info.eos_idx
    responses = [[*c.token_ids, eos] if c.finished else list(c.token_ids) for c in outs]
    batch = ResponseBatch.build([prompt] * 4, responses, tiny_tokenizer.vocab_info.pad_idx, torch.device("cpu"))
    with torch.inference_mode():
        logps = response_stats(tiny_model, batch).token_logps
    for i, c in enumerate(outs):
        assert c.logprobs is not None and len(c.logprobs) == len(responses[i])
        torch.testing.assert_close(
            torch.tensor(c.logprobs, dtype=torch.float64), logps[i][batch.mask[i]].double(), atol=1e-5, rtol=0
        )
    (tempered,) = sample_completions(tiny_model, tiny_tokenizer, [prompt], 2, SamplingConfig(0.6, 1.0, 8))
    assert all(c.logprobs is None for c in tempered)
