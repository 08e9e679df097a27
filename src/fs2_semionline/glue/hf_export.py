"""Export a fairseq2 llama model to a Hugging Face folder (vLLM and transformers load it).

The conversion is fairseq2's own (``get_hugging_face_converter``). A reward model
trained as a causal LM whose reward is one output logit (``tiny/train_reward_model.py``)
is exported as ``LlamaForSequenceClassification``: its ``score`` head is that row of
the output projection. Three things are patched afterwards: fairseq2 writes Llama-3's BOS/EOS ids (128000/128001) for any vocab
and no PAD id, so ``config.json`` gets the ids of *our* tokenizer; the tokenizer
files are copied beside the weights so the folder is self-contained; and
``generation_config.json`` lists every end-of-turn id, so generation stops at
``<|eot_id|>`` as the chat template means.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from fairseq2.data.tokenizers import VocabularyInfo
from fairseq2.models.hg import get_hugging_face_converter, save_hugging_face_model
from fairseq2.models.llama import LLaMAConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def to_hf_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: LLaMAConfig, family: str = "llama"
) -> dict[str, torch.Tensor]:
    """fairseq2 names → HF names (the converter mutates its input, so it gets a copy)."""
    converter = get_hugging_face_converter(family)
    return converter.to_hg_state_dict(dict(state_dict), config)  # type: ignore[return-value]


class StreamingHFConverter:
    """fairseq2's converter applied to one bucket of a state dict at a time.

    The converters want every key at once (the llama one permutes each layer's q/k and
    drops ``lm_head`` when embeddings are tied). Each bucket is completed with empty
    ``meta`` tensors of the missing keys' shapes, converted whole, and the placeholders'
    outputs dropped: the result equals converting the full state dict (tested), while
    only one bucket of real tensors exists.
    """

    def __init__(
        self, shapes: Mapping[str, tuple[tuple[int, ...], torch.dtype]], config: LLaMAConfig, family: str = "llama"
    ) -> None:
        self._shapes = dict(shapes)
        self._config = config
        self._converter = get_hugging_face_converter(family)

    @staticmethod
    def of(
        state_dict: Mapping[str, torch.Tensor], config: LLaMAConfig, family: str = "llama"
    ) -> "StreamingHFConverter":
        return StreamingHFConverter({k: (tuple(v.shape), v.dtype) for k, v in state_dict.items()}, config, family)

    def __call__(self, bucket: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        unknown = set(bucket) - set(self._shapes)
        if unknown:
            raise KeyError(f"not in the model's state dict: {sorted(unknown)[:5]}")
        full: dict[str, object] = {
            k: bucket[k] if k in bucket else torch.empty(shape, dtype=dtype, device="meta")
            for k, (shape, dtype) in self._shapes.items()
        }
        converted = self._converter.to_hg_state_dict(full, self._config)
        return {k: v for k, v in converted.items() if isinstance(v, torch.Tensor) and not v.is_meta}


def export_hf_model(
    state_dict: dict[str, torch.Tensor],
    config: LLaMAConfig,
    vocab_info: VocabularyInfo,
    out_dir: Path,
    *,
    tokenizer_dir: Path | None = None,
    family: str = "llama",
    reward_token: int | None = None,
) -> Path:
    """``reward_token``: export a sequence classifier (one label) whose score is the
    logit of this token, read by transformers at the last non-pad position."""
    converter = get_hugging_face_converter(family)
    hf_state = to_hf_state_dict({k: v.detach().contiguous() for k, v in state_dict.items()}, config, family)
    hf_config = converter.to_hg_config(config)
    if reward_token is not None:
        lm_head = hf_state.pop("lm_head.weight")
        hf_state["score.weight"] = lm_head[reward_token : reward_token + 1].clone()
        arch = str(hf_config.arch if isinstance(hf_config.arch, str) else hf_config.arch[0])
        hf_config = dataclasses.replace(
            hf_config,
            arch=arch.replace("ForCausalLM", "ForSequenceClassification"),
            data={**hf_config.data, "num_labels": 1},
        )
    tensors: dict[str, object] = dict(hf_state)
    save_hugging_face_model(out_dir, tensors, hf_config)
    config_file = out_dir / "config.json"
    written = json.loads(config_file.read_text())
    written["bos_token_id"] = vocab_info.bos_idx
    written["eos_token_id"] = vocab_info.eos_idx
    written["pad_token_id"] = vocab_info.pad_idx
    # Without a dtype vLLM goes looking for safetensors metadata on the hub (and waits).
    dtypes = {str(v.dtype).removeprefix("torch.") for v in hf_state.values() if v.is_floating_point()}
    written.setdefault("torch_dtype", dtypes.pop() if len(dtypes) == 1 else "float32")
    config_file.write_text(json.dumps(written, indent=2) + "\n")
    if tokenizer_dir is not None:
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).exists():
                shutil.copy2(tokenizer_dir / name, out_dir / name)
    generation = {
        "bos_token_id": vocab_info.bos_idx,
        "eos_token_id": end_of_turn_ids(out_dir, vocab_info),
        "pad_token_id": vocab_info.pad_idx,
    }
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return out_dir


#: Tokens that end a turn or a text in Llama-3 chat templates: generation stops at any.
END_OF_TURN_TOKENS = ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>")


def end_of_turn_ids(folder: Path, vocab_info: VocabularyInfo) -> list[int]:
    """The tokenizer's EOS and the id of every end-of-turn token its ``tokenizer.json``
    defines (Llama-3.1-Instruct ends turns with ``<|eot_id|>``, texts with
    ``<|end_of_text|>``): a single EOS id would let generation run past a turn."""
    ids = [] if vocab_info.eos_idx is None else [int(vocab_info.eos_idx)]
    tokenizer_file = folder / "tokenizer.json"
    if tokenizer_file.exists():
        added = json.loads(tokenizer_file.read_text()).get("added_tokens", [])
        by_text = {t["content"]: int(t["id"]) for t in added}
        ids += [by_text[t] for t in END_OF_TURN_TOKENS if t in by_text and by_text[t] not in ids]
    return ids
