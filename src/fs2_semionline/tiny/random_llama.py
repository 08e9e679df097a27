"""Random HF llamas of a chosen shape, with the tiny tokenizer: the models of the tests
and benchmarks that need another size or head layout than the shipped tiny one (a TP
layout with one KV head, a ~1B model for sync timings). Made here, never downloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from fs2_semionline.core.paths import TINY_MATH_DIR


def random_hf_llama(
    out: Path,
    *,
    hidden_size: int,
    intermediate_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    vocab_size: int = 1024,
    max_positions: int = 256,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Writes the model (safetensors) and the tiny tokenizer's files to ``out``; returns
    its HF state dict."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=4,
        pad_token_id=5,
        torch_dtype=str(dtype).removeprefix("torch."),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(dtype)  # type: ignore[arg-type]  # transformers types .to by device
    model.save_pretrained(out, safe_serialization=True)
    for f in (TINY_MATH_DIR / "tokenizer").iterdir():
        shutil.copy(f, out / f.name)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
