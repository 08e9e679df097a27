"""HF export through fairseq2's converter: transformers loads it and its logits match."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from fairseq2.nn import BatchLayout

from fs2_semionline.core.paths import TINY_MATH_DIR
from fs2_semionline.data.templates import verifiable_prompt
from fs2_semionline.glue.extension import tiny_math_config
from fs2_semionline.glue.hf_export import export_hf_model


def test_export_loads_in_transformers_with_matching_logits(tmp_path: Path, tiny_model, tiny_tokenizer) -> None:
    from transformers import AutoTokenizer, LlamaForCausalLM

    out = export_hf_model(
        tiny_model.state_dict(),
        tiny_math_config(),
        tiny_tokenizer.vocab_info,
        tmp_path / "hf",
        tokenizer_dir=TINY_MATH_DIR / "tokenizer",
    )
    config = json.loads((out / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (0, 4, 5)
    assert config["vocab_size"] == 1024

    hf_model = LlamaForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    hf_tokenizer = AutoTokenizer.from_pretrained(out)
    text = verifiable_prompt("What is 12 plus 30?") + "12 + 30 = 42."
    ids = tiny_tokenizer.encode(text)
    assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == ids.tolist()

    seqs = ids.unsqueeze(0)
    with torch.inference_mode():
        ours = tiny_model(seqs, BatchLayout.of(seqs))
        theirs = hf_model(seqs).logits
    assert ours.shape == theirs.shape == (1, len(ids), 1024)
    assert torch.allclose(ours, theirs, atol=1e-4, rtol=0), (ours - theirs).abs().max()
    # Same argmax everywhere: the exported model generates what ours generates.
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_streaming_conversion_of_buckets_equals_converting_the_whole_state_dict(tiny_model) -> None:
    """The generator sync renames one bucket at a time; the result must be fairseq2's own
    conversion of the full state dict, tensor for tensor (q/k rotary permutation included)."""
    from fs2_semionline.generation.sharding import full_weight_buckets
    from fs2_semionline.glue.hf_export import StreamingHFConverter, to_hf_state_dict

    whole = to_hf_state_dict(tiny_model.state_dict(), tiny_math_config())
    convert = StreamingHFConverter.of(tiny_model.state_dict(), tiny_math_config())
    buckets = list(full_weight_buckets(tiny_model, bucket_bytes=600_000))
    assert len(buckets) > 5
    for bucket in buckets[:-1]:  # a bucket only overflows its size with a single tensor
        sizes = [t.numel() * t.element_size() for t in bucket.values()]
        assert sum(sizes) <= 600_000 or len(sizes) == 1
    streamed: dict[str, torch.Tensor] = {}
    for bucket in buckets:
        converted = convert(bucket)
        assert not set(converted) & set(streamed)
        streamed.update(converted)
    assert sorted(streamed) == sorted(whole)
    for name, value in whole.items():
        assert torch.equal(streamed[name], value), name

    cast = list(full_weight_buckets(tiny_model, bucket_bytes=1 << 30, dtype=torch.bfloat16))
    assert len(cast) == 1 and {t.dtype for t in cast[0].values()} == {torch.bfloat16}
    dropped = list(full_weight_buckets(tiny_model, bucket_bytes=1 << 30, keep=False))
    assert dropped == [{}]  # the ranks that do not own the generator walk along with nothing
