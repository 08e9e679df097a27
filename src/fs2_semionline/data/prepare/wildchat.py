"""WildChat(-1M) -> first-turn user prompts in train.jsonl (+ valid.jsonl).

Filtering follows the paper (arXiv 2506.21495): WildChat-1M first-turn user prompts,
randomly sampled (§3.2).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from fs2_semionline.core.errors import UserInputError
from fs2_semionline.data.prepare.common import (
    InputTable,
    PrepareStats,
    SourceRow,
    UniqueRecords,
    _BadRow,
    _write_outputs,
    expand_inputs,
    parsed_rows,
    unicode_text,
)


def _first_user_turn(row: SourceRow) -> str | None:
    """Content of the conversation's first user turn; None when it has none."""
    conversation = row.data.get("conversation")
    if not isinstance(conversation, list):
        got = "null" if conversation is None else type(conversation).__name__
        raise _BadRow(f"field 'conversation': expected a list of turns, got {got}")
    for i, turn in enumerate(conversation):
        if not isinstance(turn, Mapping):
            raise _BadRow(f"field 'conversation': turn {i} is not an object")
        if turn.get("role") == "user":
            content = turn.get("content")
            if not isinstance(content, str):
                raise _BadRow(f"field 'conversation': turn {i} has no string 'content'")
            return unicode_text(content, "conversation")
    return None


@dataclass(frozen=True)
class WildChatFilters:
    """The optional filters, on the dataset's conversation-level columns."""

    english_only: bool = False
    single_turn_only: bool = False
    drop_toxic: bool = False

    def required_columns(self) -> list[str]:
        return [
            c
            for c, on in (("language", self.english_only), ("turn", self.single_turn_only), ("toxic", self.drop_toxic))
            if on
        ]

    def drop_reason(self, row: SourceRow, prompt: str | None) -> str | None:
        """Why the row's prompt is not kept (None: kept, unless it is a duplicate)."""
        if prompt is None:
            return "no_user_turn"
        if self.single_turn_only and row.data.get("turn") != 1:
            return "multi_turn"
        if self.drop_toxic and row.data.get("toxic") is True:
            return "toxic"
        if self.english_only and row.data.get("language") != "English":
            return "not_english"
        if not prompt.strip():
            return "empty_prompt"
        return None


def prepare_wildchat(
    inputs: Sequence[Path | str],
    out: Path | str,
    *,
    num: int | None = None,
    valid: int = 0,
    seed: int = 0,
    english_only: bool = False,
    single_turn_only: bool = False,
    drop_toxic: bool = False,
) -> PrepareStats:
    """WildChat(-1M) files -> train.jsonl (+ valid.jsonl) of first-turn user prompts.

    §3.2 of the paper samples user prompts from first-turn interactions at random: each
    conversation gives its first user turn; later turns need the earlier answers, which
    are not the policy's own. ``single_turn_only`` keeps only conversations of one turn
    (the other reading of "first-turn interactions"); ``english_only`` and ``drop_toxic``
    use the dataset's conversation-level ``language`` and ``toxic`` columns. Prompts are
    deduplicated, shuffled with ``seed``; the first ``valid`` go to valid.jsonl, the next
    ``num`` (all when None) to train.jsonl.
    """
    paths = expand_inputs(inputs)
    filters = WildChatFilters(english_only, single_turn_only, drop_toxic)
    options = {"num": num, "valid": valid, "seed": seed, **asdict(filters)}
    stats = PrepareStats("wildchat", [str(p) for p in paths], options)
    kept = UniqueRecords(stats)
    for path in paths:
        table = InputTable(path)
        table.require("conversation", *filters.required_columns())
        id_column = next((c for c in ("conversation_hash", "conversation_id") if c in table.columns), None)
        columns = ["conversation", "language", "turn", "toxic"] + ([id_column] if id_column else [])
        for row, prompt in parsed_rows(table, columns, _first_user_turn, stats):
            if (reason := filters.drop_reason(row, prompt)) is not None:
                stats.drop(reason)
                continue
            record: dict[str, object] = {"prompt": str(prompt).strip(), "source": "wildchat"}
            if id_column and isinstance(row.data.get(id_column), str):
                record["id"] = row.data[id_column]
            kept.add(record)
    _write_outputs(Path(out), _sampled_splits(kept.records, num, valid, seed, stats), stats)
    return stats


def _sampled_splits(
    kept: list[dict[str, object]], num: int | None, valid: int, seed: int, stats: PrepareStats
) -> dict[str, list[dict[str, object]]]:
    """Seeded shuffle: the first ``valid`` prompts to valid, the next ``num`` (all: None) to train."""
    if num is not None and num + valid > len(kept):
        raise UserInputError(
            f"only {len(kept)} prompts remain after filtering: too few for --num {num} and --valid {valid}"
        )
    if num is None and valid >= len(kept):
        raise UserInputError(f"only {len(kept)} prompts remain after filtering: too few for --valid {valid}")
    shuffled = list(kept)
    random.Random(seed).shuffle(shuffled)
    train_end = len(shuffled) if num is None else valid + num
    splits = {"train": shuffled[valid:train_end]}
    if valid:
        splits["valid"] = shuffled[:valid]
    # Kept by every filter but not drawn by the sampling.
    stats.extra["num_not_sampled"] = len(shuffled) - train_end
    return splits
