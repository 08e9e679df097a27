"""Scalar rewards for non-verifiable (chat) prompts from a Hugging Face reward model.

Two heads are supported:

``sequence_classification``
    Any ``AutoModelForSequenceClassification`` checkpoint with ``num_labels == 1``
    (the tiny RM of :mod:`fs2_semionline.tiny.build_reward_model`, Skywork-style RMs,
    ...). The scored text is the conversation ending with ``<|eot_id|>``; the reward
    is transformers' own pooled logit, i.e. the score head read at the last non-pad
    token of each row (``config.pad_token_id``), so right padding does not change it.

``athene``
    Nexusflow's Athene-RM-8B (https://huggingface.co/Nexusflow/Athene-RM-8B), loaded with
    the head its model card defines (:mod:`fs2_semionline.rewards.athene`). The card's
    pipeline builds the text with
    ``tokenizer.apply_chat_template(messages, tokenize=False)`` for
    ``[{"role": "user", ...}, {"role": "assistant", ...}]``, then
    ``formatted = formatted + self.tokenizer.cls_token``, and tokenizes it with the
    tokenizer's defaults (``max_length=4096, truncation=True``).

    We follow that: the reward is ``v_head`` read at the CLS token appended after the
    chat-templated conversation, never at the last pad position. Deliberate
    differences: the CLS id is the tokenizer's ``cls_token_id`` (the card hard-codes
    128003; we warn when a Llama-3-sized tokenizer disagrees), and we never truncate (a truncated text would lose its CLS token and the card's
    code would crash): a text longer than ``max_length`` (default 4096 as in the card)
    gets ``None``. Like the card, the text is tokenized with the tokenizer's default
    special tokens; a Llama-3 tokenizer that adds BOS thus puts a second
    ``<|begin_of_text|>`` before the template's own, which is what the card's pipeline
    (and RewardBench) feed the model.

Prompts are the user's own text (``PromptExample.prompt``), never a templated string:
the conversation is built with the tokenizer's chat template, or with our Llama-3 header
format (:func:`fs2_semionline.data.templates.chat_prompt`) when the tokenizer has none,
and encoded special-token safe (:mod:`fs2_semionline.data.encoding`): a special token's
spelling in the prompt or the response is text, not that token, so neither can close a
turn or open a new one. A chat template that changes the texts it is given (other than
stripping them) is refused for that item (an input error, counted).

Failures are ``None``, never 0: a reward that cannot be computed (forward exception,
non-finite score, text over ``max_length``, empty prompt) must be masked out by the
caller, not read as a bad answer. An *empty response* is scored: it is a real (bad)
answer that the reward model has to be able to penalise.

This module imports torch and transformers; ``fs2_semionline.rewards`` does not import
it, so the rule-based reward workers stay light.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from fs2_semionline.data.encoding import CONVERSATION, MARKER, TextEncoder, fill, hf_special_tokens
from fs2_semionline.data.templates import EOT
from fs2_semionline.rewards.athene import ATHENE_CLS_ID, AtheneForSequenceClassification

if TYPE_CHECKING:
    from fairseq2.assets import AssetCard, AssetStore

    from fs2_semionline.config.shared import RewardModelSection

__all__ = [
    "ATHENE_MAX_LENGTH",
    "RewardHead",
    "RewardModel",
    "RewardModelSpec",
    "resolve_reward_model",
    "reward_model_spec",
]

log = logging.getLogger(__name__)

RewardHead = Literal["sequence_classification", "athene"]

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

#: ``max_length`` of the Athene-RM model card's pipeline.
ATHENE_MAX_LENGTH = 4096


@dataclass(frozen=True)
class RewardModelSpec:
    """What to load; picklable, so it travels to Ray actors as it is."""

    path: str
    """Local Hugging Face folder (config, weights, tokenizer). Nothing is downloaded."""

    head: RewardHead = "sequence_classification"

    dtype: str = "float32"
    """``float32``, ``bfloat16`` or ``float16``."""

    batch_size: int = 8

    max_length: int | None = None
    """Longer texts score ``None`` (never truncated). ``None``: 4096 for Athene (as its
    card), else the model's ``max_position_embeddings``."""

    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.head not in get_args(RewardHead):
            raise ValueError(f"reward model head must be in {get_args(RewardHead)}: {self.head!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"reward model dtype must be one of {sorted(_DTYPES)}: {self.dtype!r}")
        if self.batch_size < 1:
            raise ValueError(f"reward model batch_size must be >= 1: {self.batch_size}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"reward model max_length must be >= 1 or None: {self.max_length}")


class RewardModel:
    """A reward model loaded from a local folder; :meth:`score` gives one float per item."""

    def __init__(self, spec: RewardModelSpec) -> None:
        path = Path(spec.path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"reward model folder not found: {path} "
                "(nothing is downloaded: RewardModelSpec.path must be a local Hugging Face folder)"
            )
        self.spec = spec
        self.device = torch.device(spec.device)
        self.model = self._load_model(path, spec)
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.max_length = spec.max_length or self._default_max_length()
        self.batch_size = spec.batch_size
        self.cls_token: str | None = None
        self._pad_id: int | None = self.tokenizer.pad_token_id
        if spec.head == "athene":
            self._setup_athene(path)
        else:
            self._setup_pad_token()
        tokenizer = self.tokenizer
        self._text_encoder = TextEncoder(
            lambda text: list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]),
            hf_special_tokens(tokenizer),
        )
        # The chat template rendered around markers once: where each item's texts go.
        self._chat_skeleton = self._render_chat(MARKER, MARKER) if tokenizer.chat_template is not None else None
        # What the tokenizer's defaults add around a text (Athene's card tokenizes with them).
        self._added_ids: list[int] = (
            list(tokenizer("", add_special_tokens=True)["input_ids"]) if spec.head == "athene" else []
        )

    # ------------------------------------------------------------------ loading

    @staticmethod
    def _load_model(path: Path, spec: RewardModelSpec) -> PreTrainedModel:
        """Loads weights and refuses a checkpoint whose reward head would be random."""
        kls: Any = AtheneForSequenceClassification if spec.head == "athene" else AutoModelForSequenceClassification
        model, info = kls.from_pretrained(
            path, dtype=_DTYPES[spec.dtype], local_files_only=True, output_loading_info=True
        )
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])
            raise ValueError(
                f"reward model at {path} (head={spec.head!r}) has no weights for {missing[:5]}: "
                "the reward head would be randomly initialised; wrong folder or wrong head?"
            )
        if spec.head == "sequence_classification" and model.config.num_labels != 1:
            raise ValueError(
                f"reward model at {path} has num_labels={model.config.num_labels}, a scalar reward model has 1"
            )
        return cast(PreTrainedModel, model.to(spec.device).eval())

    def _default_max_length(self) -> int:
        limit = int(getattr(self.model.config, "max_position_embeddings", ATHENE_MAX_LENGTH))
        return min(limit, ATHENE_MAX_LENGTH) if self.spec.head == "athene" else limit

    def _setup_athene(self, path: Path) -> None:
        cls_token = self.tokenizer.cls_token
        if cls_token is None:
            raise ValueError(f"tokenizer at {path} has no cls_token: Athene reads its reward at the CLS token")
        cls_id = self.tokenizer.convert_tokens_to_ids(cls_token)
        if len(self.tokenizer) > ATHENE_CLS_ID and cls_id != ATHENE_CLS_ID:
            log.warning(
                "Athene tokenizer at %s maps cls_token %r to %d, the model card says %d",
                path,
                cls_token,
                cls_id,
                ATHENE_CLS_ID,
            )
        self.cls_token = cls_token
        cast(AtheneForSequenceClassification, self.model).CLS_ID = cls_id
        if self._pad_id is None:  # any id: pads are masked and the reward is read at CLS
            self._pad_id = self.tokenizer.eos_token_id or 0

    def _setup_pad_token(self) -> None:
        """Pads with the id transformers skips when it looks for the last token."""
        config = self.model.config
        if config.pad_token_id is None:
            config.pad_token_id = self._pad_id
        if config.pad_token_id is None:
            log.warning("reward model at %s has no pad token: batch size 1", self.spec.path)
            self.batch_size = 1
        self._pad_id = config.pad_token_id

    # ------------------------------------------------------------------ scoring

    def conversation(self, prompt: str, response: str) -> tuple[str, list[tuple[int, int]]]:
        """The exact text the reward model reads for one (prompt, response), and where in
        it the two texts are (they are encoded as text, the rest with its special tokens)."""
        response = response.removesuffix(EOT)
        if self._chat_skeleton is not None:
            real = self._render_chat(prompt, response)
            full, spans = fill(self._chat_skeleton, [prompt, response])
            if full != real:  # a template that strips the contents (Llama-3's does)
                full, spans = fill(self._chat_skeleton, [prompt.strip(), response.strip()])
            if full != real:
                raise ValueError("the chat template changes the message texts: their place in it is unknown")
        else:
            full, spans = fill(CONVERSATION, [prompt, response])
        if self.cls_token is not None:
            full += self.cls_token
        return full, spans

    def _render_chat(self, prompt: str, response: str) -> str:
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return cast(str, self.tokenizer.apply_chat_template(messages, tokenize=False))

    def conversation_text(self, prompt: str, response: str) -> str:
        return self.conversation(prompt, response)[0]

    def _encode(self, prompt: str, response: str) -> list[int] | str:
        """Token ids, or why the item cannot be scored."""
        if not prompt.strip():
            return "empty prompt"
        try:
            ids = self._text_encoder.structured(*self.conversation(prompt, response))
            # Athene: the card tokenizes with the tokenizer's default special tokens.
            ids = self._added_ids + ids
        except Exception as ex:  # a chat template or tokenizer error concerns this item only
            log.debug("reward model: cannot build an input: %r", ex)
            return f"input error ({type(ex).__name__})"
        if not ids:
            return "empty input"
        if len(ids) > self.max_length:
            return f"longer than max_length {self.max_length}"
        return list(ids)

    @torch.inference_mode()
    def _forward(self, batch: list[list[int]]) -> list[float | None]:
        rows = [torch.tensor(ids, dtype=torch.long) for ids in batch]
        pad_id = self._pad_id or 0  # None only with batch_size 1: nothing to pad
        input_ids = pad_sequence(rows, batch_first=True, padding_value=pad_id).to(self.device)
        mask = pad_sequence([torch.ones_like(r) for r in rows], batch_first=True, padding_value=0)
        attention_mask = mask.to(self.device)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        scores = out["scores"] if self.spec.head == "athene" else out.logits[:, 0]
        return [s if math.isfinite(s) else None for s in scores.float().cpu().tolist()]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float | None]:
        """One reward per (prompt, response); ``None`` where it cannot be computed.

        Items are batched by length (less padding); padding never changes a score. A
        batch whose forward raises gives ``None`` for each of its items.
        """
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        rewards: list[float | None] = [None] * len(prompts)
        failures: Counter[str] = Counter()
        todo: list[tuple[int, list[int]]] = []
        for i, (prompt, response) in enumerate(zip(prompts, responses)):
            ids = self._encode(prompt, response)
            if isinstance(ids, str):
                failures[ids] += 1
            else:
                todo.append((i, ids))
        todo.sort(key=lambda item: len(item[1]))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            try:
                scores = self._forward([ids for _, ids in chunk])
            except Exception as ex:
                log.debug("reward model: forward failed: %r", ex)
                failures[f"forward error ({type(ex).__name__})"] += len(chunk)
                continue
            for (i, _), score in zip(chunk, scores):
                rewards[i] = score
                if score is None:
                    failures["non-finite score"] += 1
        if failures:
            log.warning(
                "reward model: %d of %d rewards are None: %s",
                sum(failures.values()),
                len(rewards),
                dict(failures),
            )
        return rewards


# ---------------------------------------------------------------------- resolution


def resolve_reward_model(name_or_path: str, *, store: AssetStore | None = None) -> RewardModelSpec:
    """A local folder (default head), or a fairseq2 asset card name such as ``athene_rm_8b``.

    Cards give ``reward_model_path`` (a local folder; set by the user through a card
    override, see ``assets/cards/reward_models.yaml``) and ``reward_model_head``.
    ``store`` defaults to fairseq2's asset store (which initialises fairseq2).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return RewardModelSpec(path=str(path.resolve()))

    from fairseq2.assets import get_asset_store

    card = (store or get_asset_store()).maybe_retrieve_card(name_or_path)
    if card is None:
        raise ValueError(
            f"{name_or_path!r} is neither a local reward model folder nor a fairseq2 asset "
            "card (reward models are never downloaded)"
        )
    field = card.maybe_get_field("reward_model_path")
    if field is None or field.value is None:
        raise ValueError(
            f"asset card {card.name!r}: field 'reward_model_path' is not set. Download "
            f"{_card_str(card, 'reward_model_hf_repo') or 'the model'} yourself and set its "
            "folder with a user card override: a YAML file in ~/.config/fairseq2/assets (or "
            f"in $FAIRSEQ2_USER_ASSET_DIR) with 'name: {card.name}@user' and "
            "'reward_model_path: /path/to/folder'"
        )
    model_path = Path(field.as_(str)).expanduser()
    base_path = card.metadata.get("__base_path__")
    if not model_path.is_absolute() and isinstance(base_path, Path):
        model_path = base_path / model_path
    head = _card_str(card, "reward_model_head") or "sequence_classification"
    if head not in get_args(RewardHead):
        raise ValueError(
            f"asset card {card.name!r}: field 'reward_model_head' must be one of {get_args(RewardHead)}: {head!r}"
        )
    return RewardModelSpec(path=str(model_path.resolve()), head=cast(RewardHead, head))


def reward_model_spec(section: RewardModelSection) -> RewardModelSpec:
    """The spec of ``reward.model.name`` with the section's batch size, device and length
    limit; a name that is neither a folder nor a card is a :class:`ConfigError` naming the key."""
    from fs2_semionline.core.errors import ConfigError

    assert section.name is not None
    try:
        spec = resolve_reward_model(section.name)
    except ValueError as err:
        raise ConfigError(f"reward.model.name: {err}") from None
    return dataclasses.replace(
        spec,
        batch_size=section.max_batch_size,
        device=section.device,
        max_length=section.max_length or spec.max_length,
    )


def _card_str(card: AssetCard, name: str) -> str | None:
    field = card.maybe_get_field(name)
    return None if field is None or field.value is None else field.as_(str)
