"""The math reward's cheap part: everything that needs no Math-Verify (the final answer,
by :mod:`~fs2_semionline.data.answers`; unwrapping and checking the gold; length limits)
is resolved here, in the parent, before any job reaches the judge
(:mod:`~fs2_semionline.rewards.math_judge`) or a worker process
(:mod:`~fs2_semionline.rewards.math_pool`)."""

from __future__ import annotations

from dataclasses import dataclass

from fs2_semionline.data.answers import (
    MAX_ANSWER_CHARS,
    balanced,
    extract_final_answer,
    final_boxes,
    join_boxes,
    scan_final_boxes,
    unwrap_gold,
)
from fs2_semionline.rewards.verdicts import Verdict

__all__ = [
    "MAX_ANSWER_CHARS",
    "MAX_GOLD_CHARS",
    "extract_final_answer",
    "final_boxes",
]

#: Gold answers longer than this are "failed" ("gold too long"). This also
#: bounds one job message to well below a pipe buffer, so sending a job to a
#: stuck worker can never block the parent.
MAX_GOLD_CHARS = 10_000


@dataclass(frozen=True)
class _Job:
    """What a worker needs to judge one item: the final answer (its boxes joined) and
    the gold.

    ``answer`` None (no usable boxed answer): only the gold is checked; the item is
    ``incorrect`` for ``why`` if the gold is usable, else the gold's failure."""

    answer: str | None
    gold: str
    why: str = ""
    extracted: str | None = None


def _prepare(response: str, gold: str, max_answer_chars: int) -> Verdict | _Job:
    """Resolve everything that needs no Math-Verify (cheap, runs in the parent).

    Gold problems come first: without a usable gold nothing can be scored, and
    that is our failure whatever the response looks like.
    """
    contents, why = scan_final_boxes(response, max_chars=max_answer_chars)
    content = None if contents is None else join_boxes(contents)
    g = unwrap_gold(gold)
    if not g:
        return Verdict("failed", "empty gold", content)
    if len(g) > MAX_GOLD_CHARS:
        return Verdict("failed", "gold too long", content)
    if not balanced(g):
        return Verdict("failed", "gold unparseable", content)
    if content is None:
        return _Job(answer=None, gold=g, why=why)
    if not content.strip():
        return _Job(answer=None, gold=g, why="empty answer", extracted=content)
    return _Job(answer=content, gold=g)
