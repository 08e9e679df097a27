"""The final answer of a math text (a response or a gold): pure Python, no Math-Verify.

The final answer is the last ``\\boxed{...}`` (or ``\\fbox{...}``) together with the
boxes just before it that belong to it, by Math-Verify's own rule (its LaTeX
normaliser, ``extract_boxed_content`` in "last" mode, walks the boxes from the right):
an earlier box joins when fewer than 10 characters stand between the two, or fewer
than 70 that hold a separator (``and``, ``or``, ``,``, ``;``) and the two contents
differ; equal neighbours count once. The joined contents are one answer, read as a
set or tuple (``\\boxed{1}, \\boxed{-2}`` is the answer ``1,-2``), so

- boxes that together form the final answer are scored together (a partial answer
  is not the whole one);
- a hedge between different answers (``\\boxed{2} or \\boxed{1}``) is the set of
  both, which is not the single gold;
- an earlier box that the response moved away from (further than the rule joins)
  does not score.

Only that answer is ever given to Math-Verify, so the length of the response costs a
linear scan here. The math reward (:mod:`~fs2_semionline.rewards.boxed`) and dataset
preparation (NuminaMath's several-box answers) read answers with these functions.

Where this differs from Math-Verify on purpose: a backslash escapes the next character
(``\\{`` and ``\\}`` are no braces); ``\\boxed 5`` and ``\\boxedfoo`` are no boxes; a
last box that never closes is no answer (Math-Verify reads the rest of the text).
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_ANSWER_CHARS",
    "extract_final_answer",
    "final_boxes",
    "join_boxes",
]

#: Final answers longer than this (all their boxes together) are "incorrect" ("answer
#: too long") without being parsed: no real answer is that long, parse time grows
#: super-linearly with length, and treating them as "failed" would let a policy
#: escape a 0 reward by rambling inside the box.
MAX_ANSWER_CHARS = 1_000

# Math-Verify's joining rule (latex2sympy2_extended 1.11, extract_boxed_content).
_JOIN_ALWAYS_BELOW = 10
_JOIN_SEPARATED_BELOW = 70
_SEPARATOR = re.compile(r"\b(?:and|or)\b|,|;")


def _marker_before(text: str, end: int) -> tuple[int, int]:
    """(start of the marker, index of its ``{``) of the last ``\\boxed{`` /
    ``\\fbox{`` that starts before ``end`` (spaces allowed before the brace), or
    (-1, -1). Linear: each marker is searched backwards once over disjoint
    stretches of ``text``."""
    n = len(text)
    boxed = text.rfind("\\boxed", 0, end)
    fbox = text.rfind("\\fbox", 0, end)
    while boxed >= 0 or fbox >= 0:
        if boxed > fbox:
            pos, i = boxed, boxed + 6
        else:
            pos, i = fbox, fbox + 5
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i < n and text[i] == "{":
            return pos, i
        # "\\boxedfoo", "\\fboxsep", "\\boxed 5": not a boxed{...} answer; look
        # further left.
        if boxed > fbox:
            boxed = text.rfind("\\boxed", 0, pos)
        else:
            fbox = text.rfind("\\fbox", 0, pos)
    return -1, -1


def _closing_brace(text: str, brace: int, limit: int) -> int:
    """Index of the ``}`` that closes the ``{`` at ``brace``, searched below
    ``limit``, or -1. ``\\{`` / ``\\}`` (any backslash escape) are no braces."""
    depth = 1
    i = brace + 1
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
                return i
        i += 1
    return -1


def _joins(text: str, earlier: str, later: str, close: int, later_start: int) -> bool:
    """Whether the box closing at ``close`` belongs to the answer whose next box
    starts at ``later_start`` (Math-Verify's rule, see the module doc)."""
    between = text[close + 1 : later_start]
    if len(between) < _JOIN_ALWAYS_BELOW:
        return True
    return earlier != later and len(between) < _JOIN_SEPARATED_BELOW and _SEPARATOR.search(between) is not None


def scan_final_boxes(text: str, max_chars: int | None) -> tuple[list[str] | None, str]:
    """The contents of the final answer's boxes, left to right, and "ok"; or (None,
    reason). With ``max_chars`` every scan stops as soon as the answer is known to be
    longer, so a huge unbalanced answer costs O(max_chars), not O(len(text))."""
    marker, brace = _marker_before(text, len(text))
    if marker < 0:
        return None, "no boxed answer"
    limit = len(text) if max_chars is None else min(len(text), brace + 2 + max_chars)
    close = _closing_brace(text, brace, limit)
    if close < 0:
        return None, "answer too long" if limit < len(text) else "unbalanced boxed answer"
    last = text[brace + 1 : close]
    contents = [last.strip()]  # right to left, neighbours distinct
    length = len(last)
    while True:
        # An earlier box is scanned up to the later one only: the stretches scanned
        # are disjoint, so the whole walk stays linear.
        later_start = marker
        marker, brace = _marker_before(text, later_start)
        if marker < 0:
            break
        close = _closing_brace(text, brace, later_start)
        if close < 0:
            break  # open up to the later box: Math-Verify stops joining here too
        content = text[brace + 1 : close].strip()
        if not _joins(text, content, contents[-1], close, later_start):
            break
        if content != contents[-1]:
            contents.append(content)
            length += len(content) + 1
            if max_chars is not None and length > max_chars:
                return None, "answer too long"
    if len(contents) == 1:
        return [last], "ok"  # one box: its content as written
    return contents[::-1], "ok"


def join_boxes(contents: list[str]) -> str:
    """One answer from the final boxes, as Math-Verify joins them (``,``: a set)."""
    return ",".join(contents)


def final_boxes(text: str) -> list[str] | None:
    """The contents of the boxes that form the final answer of ``text``, left to
    right (one for a single box); ``None`` when there is no box or the last one is
    unbalanced (e.g. a response truncated inside its answer). Linear time, no regex
    over the text (the separator search looks at fewer than 70 characters)."""
    contents, _ = scan_final_boxes(text, max_chars=None)
    return contents


def extract_final_answer(text: str) -> str | None:
    """The final answer of ``text``: its final boxes joined (see :func:`final_boxes`)."""
    contents = final_boxes(text)
    return None if contents is None else join_boxes(contents)


def balanced(s: str) -> bool:
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


def unwrap_gold(gold: str) -> str:
    """Strip math delimiters / boxes so that golds such as "55", "$\\frac{1}{2}$"
    or "\\boxed{7}" all end up as a bare expression, and a gold of several boxes
    (``\\(\\boxed{1}\\) and \\(\\boxed{-2}\\)``) as their join, by the same rule as
    a response's final answer (Math-Verify reads both sides alike)."""
    g = gold.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(g) >= len(left) + len(right) and g.startswith(left) and g.endswith(right):
            g = g[len(left) : len(g) - len(right)].strip()
            break
    if "\\boxed" in g or "\\fbox" in g:
        contents, _ = scan_final_boxes(g, max_chars=None)
        if contents is not None:
            g = join_boxes(contents).strip()
    return g
