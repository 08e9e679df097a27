"""Boxed-answer text handling of the math reward: pure Python, no Math-Verify.

Only the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) is ever given
to Math-Verify, so the length of the response only costs a linear scan in the
parent, and an earlier (abandoned) boxed answer can never score. Everything
that needs no Math-Verify (finding that answer, unwrapping and checking the
gold, length limits) is resolved here, cheaply, before any job reaches the
judge (:mod:`~fs2_semionline.rewards.math_judge`) or a worker process
(:mod:`~fs2_semionline.rewards.math_pool`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fs2_semionline.rewards.verdicts import Verdict

__all__ = [
    "MAX_ANSWER_CHARS",
    "MAX_GOLD_CHARS",
    "extract_last_boxed",
]

#: Boxed answers longer than this are "incorrect" ("answer too long") without
#: being parsed: no real answer is that long, parse time grows super-linearly
#: with length, and treating them as "failed" would let a policy escape a 0
#: reward by rambling inside the box.
MAX_ANSWER_CHARS = 1_000

#: Gold answers longer than this are "failed" ("gold too long"). This also
#: bounds one job message to well below a pipe buffer, so sending a job to a
#: stuck worker can never block the parent.
MAX_GOLD_CHARS = 10_000


def _last_marker(text: str) -> int:
    """Index of the ``{`` that opens the last ``\\boxed{`` / ``\\fbox{`` (spaces
    allowed before the brace), or -1. Linear: each marker is searched
    backwards once over disjoint stretches of ``text``."""
    n = len(text)
    boxed = text.rfind("\\boxed")
    fbox = text.rfind("\\fbox")
    while boxed >= 0 or fbox >= 0:
        if boxed > fbox:
            pos, i = boxed, boxed + 6
        else:
            pos, i = fbox, fbox + 5
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i < n and text[i] == "{":
            return i
        # "\\boxedfoo", "\\fboxsep", "\\boxed 5": not a boxed{...} answer; look
        # further left.
        if boxed > fbox:
            boxed = text.rfind("\\boxed", 0, pos)
        else:
            fbox = text.rfind("\\fbox", 0, pos)
    return -1


def _scan_last_boxed(text: str, max_chars: int | None) -> tuple[str | None, str]:
    """Find the last boxed answer; returns (content, "ok") or (None, reason).

    Brace matching is a hand-written linear scan: ``\\{`` / ``\\}`` (and any
    other backslash escape) do not count as braces. With ``max_chars`` the scan
    stops as soon as the content is known to be longer, so a huge unbalanced
    answer costs O(max_chars), not O(len(text)).
    """
    brace = _last_marker(text)
    if brace < 0:
        return None, "no boxed answer"
    start = brace + 1
    limit = len(text) if max_chars is None else min(len(text), start + max_chars + 1)
    depth = 1
    i = start
    while i < limit:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start:i], "ok"
        i += 1
    if limit < len(text):
        return None, "answer too long"
    return None, "unbalanced boxed answer"


def extract_last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``.

    Only the last one counts, so a model cannot hedge with several answers.
    Returns ``None`` when there is none or when the last one is unbalanced
    (e.g. a response truncated inside its answer). Linear time, no regex.
    """
    content, _ = _scan_last_boxed(text, max_chars=None)
    return content


def _balanced(s: str) -> bool:
    """Whether the unescaped braces of ``s`` balance (so ``\\boxed{s}`` is one box)."""
    depth = 0
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    # i > len(s): a trailing lone backslash, which would escape the box's "}".
    return depth == 0 and i == len(s)


def _unwrap_gold(gold: str) -> str:
    """Strip math delimiters / a boxed wrapper so that golds such as "55",
    "$\\frac{1}{2}$" or "\\boxed{7}" all end up as a bare expression."""
    g = gold.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(g) >= len(left) + len(right) and g.startswith(left) and g.endswith(right):
            g = g[len(left) : len(g) - len(right)].strip()
            break
    if "\\boxed" in g or "\\fbox" in g:
        inner, _ = _scan_last_boxed(g, max_chars=None)
        if inner is not None:
            g = inner.strip()
    return g


@dataclass(frozen=True)
class _Job:
    """What a worker needs to judge one item: the boxed content and the gold.

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
    content, why = _scan_last_boxed(response, max_chars=max_answer_chars)
    g = _unwrap_gold(gold)
    if not g:
        return Verdict("failed", "empty gold", content)
    if len(g) > MAX_GOLD_CHARS:
        return Verdict("failed", "gold too long", content)
    if not _balanced(g):
        return Verdict("failed", "gold unparseable", content)
    if content is None:
        return _Job(answer=None, gold=g, why=why)
    if not content.strip():
        return _Job(answer=None, gold=g, why="empty answer", extracted=content)
    return _Job(answer=content, gold=g)
