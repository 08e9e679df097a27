"""User and model text is encoded as text; only a template's own structure is special.

fairseq2's raw encoders (Hugging Face and tiktoken alike) and transformers' tokenizers
parse special-token spellings anywhere in their input, so a prompt or a response that
contains ``<|eot_id|>`` would close the user's turn and open a new one of its own. Here
a template is rendered around markers, so the positions of the user's text are known;
a special-token spelling counts as that token only outside them. Inside, a spelling is
split after its first character and both parts are encoded as ordinary text (the ids
decode to the same characters; they are not the ids the tokenizer would give a text
without the spelling, as no such canonical text form exists). Text without any special
spelling gets exactly the ids it got before: the tokenizer splits at special tokens
first, and this splits at the same places.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from fs2_semionline.data.templates import EOT, SPECIAL_TOKENS, chat_prompt

Encode = Callable[[str], list[int]]
#: Stands for the user's text while a template is rendered (only the template is split at it).
MARKER = "\x00"


#: A user turn and the assistant's answer in our Llama-3 header format (Figure 5), the
#: reward model's input when its tokenizer has no chat template: fill it with (prompt, response).
CONVERSATION = chat_prompt(MARKER) + MARKER + EOT


class TextEncoder:
    """Encodes templated prompts and plain texts of one tokenizer, special-token safe."""

    def __init__(self, encode: Encode, specials: Sequence[str]) -> None:
        """``encode``: the tokenizer's own encoding (it parses special spellings);
        ``specials``: every special token's spelling."""
        self._encode = encode
        ordered = sorted({s for s in specials if s}, key=len, reverse=True)
        self.specials: tuple[str, ...] = tuple(ordered)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def text(self, text: str) -> list[int]:
        """``text`` as text: a special spelling in it is not that token."""
        if self._pattern is None:
            return self._encode(text)
        ids: list[int] = []
        start = 0
        for match in self._pattern.finditer(text):
            if match.start() > start:
                ids += self._encode(text[start : match.start()])
            spelling = match.group()
            ids += self._encode(spelling[:1]) + self.text(spelling[1:])
            start = match.end()
        if start < len(text) or not ids:
            ids += self._encode(text[start:])
        return ids

    def structured(self, full: str, user_spans: Sequence[tuple[int, int]]) -> list[int]:
        """``full`` with its special spellings outside ``user_spans`` as special tokens and
        every run between them (user text included) as text."""
        ids: list[int] = []
        start = 0
        for match in self._pattern.finditer(full) if self._pattern is not None else ():
            if any(a < match.end() and match.start() < b for a, b in user_spans):
                continue  # a spelling inside (or across) the user's text is text
            if match.start() > start:
                ids += self.text(full[start : match.start()])
            ids += self._encode(match.group())
            start = match.end()
        if start < len(full):
            ids += self.text(full[start:])
        return ids

    def prompt(self, template: Callable[[str], str], user_text: str) -> list[int]:
        """``template(user_text)``, the template's structure special, ``user_text`` text."""
        full, spans = fill(template(MARKER), [user_text])
        return self.structured(full, spans)


def fill(skeleton: str, texts: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    """``skeleton`` with its i-th :data:`MARKER` replaced by ``texts[i]``, and where each went."""
    parts = skeleton.split(MARKER)
    if len(parts) != len(texts) + 1:
        raise ValueError(f"template has {len(parts) - 1} places for text, {len(texts)} texts given")
    out, spans, pos = [parts[0]], [], len(parts[0])
    for text, part in zip(texts, parts[1:]):
        spans.append((pos, pos + len(text)))
        out += [text, part]
        pos += len(text) + len(part)
    return "".join(out), spans


def fairseq2_text_encoder(tokenizer: Any) -> TextEncoder:
    """The :class:`TextEncoder` of a fairseq2 tokenizer, with every special token of it."""
    encoder = tokenizer.create_raw_encoder()
    return TextEncoder(lambda text: encoder(text).tolist(), fairseq2_special_tokens(encoder))


def fairseq2_special_tokens(encoder: Any) -> tuple[str, ...]:
    """Every special token's spelling, read from the library under fairseq2's raw encoder
    (transformers or tiktoken); the templates' own tokens for any other family."""
    from fs2_semionline.glue.fairseq2_internals import hf_tokenizer_of, tiktoken_encoding_of

    hf = hf_tokenizer_of(encoder)
    if hf is not None:
        return hf_special_tokens(hf)
    tiktoken = tiktoken_encoding_of(encoder)
    if tiktoken is not None:
        return tuple(sorted(tiktoken.special_tokens_set))
    return SPECIAL_TOKENS


def hf_special_tokens(tokenizer: Any) -> tuple[str, ...]:
    """A transformers tokenizer's special spellings (added special tokens and the named ones)."""
    added = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    return tuple(sorted(added | set(tokenizer.all_special_tokens)))
