"""NuminaMath-1.5 / NuminaMath-CoT -> train/valid/test.jsonl.

Filtering follows the paper (arXiv 2506.21495): NuminaMath without proof problems,
multiple-choice problems and the synthetic subsets (Orca math, synthetic AMC, synthetic
math), 1,980 problems each held out for validation and test (§3.1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from fs2_semionline.data.answers import final_boxes, join_boxes
from fs2_semionline.data.jsonl import unusable_answer
from fs2_semionline.data.prepare.common import (
    InputTable,
    PrepareStats,
    SourceRow,
    UniqueRecords,
    _held_out_split,
    _optional_text,
    _text,
    _write_outputs,
    expand_inputs,
    parsed_rows,
)

#: Validation and test sizes of the paper's NuminaMath split (§3.1).
DEFAULT_HELD_OUT_SIZE = 1_980

#: NuminaMath subsets the paper drops as synthetic (§3.1: "Orca math, synthetic AMC,
#: and synthetic math"), spelled as in the datasets' ``source`` column.
NUMINA_SYNTHETIC_SOURCES = frozenset({"orca_math", "synthetic_amc", "synthetic_math"})

#: NuminaMath-1.5 ``answer`` values that are no reference answer.
NUMINA_NO_ANSWER = frozenset({"", "proof", "notfound"})

NuminaLayout = Literal["auto", "1.5", "cot"]


# Multiple-choice markers in NuminaMath-CoT problems, which have no question_type:
# "(A)", "\textbf{(A)}", and "A: " / "A. " at a line start or after spaces (cn_k12).
_CHOICE_MARKER = re.compile(r"\(\s*([A-E])\s*\)|(?:^|(?<=\s))([A-E])\s*[:：.．]\s", re.MULTILINE)
_PROOF_WORDS = re.compile(r"\b(prove|show that|demonstrate that)\b", re.IGNORECASE)
_LETTER_ANSWER = re.compile(r"[A-E]")


def _looks_multiple_choice(problem: str, answer: str | None) -> bool:
    """Heuristic for NuminaMath-CoT: options A, B and C listed, or a letter as the answer."""
    letters = {a or b for a, b in _CHOICE_MARKER.findall(problem)}
    if {"A", "B", "C"} <= letters:
        return True
    if answer is None:
        return False
    bare = re.sub(r"\\(?:text|textbf|mathrm|mathbf)\b|[{}()$\s]", "", answer)
    return _LETTER_ANSWER.fullmatch(bare) is not None


def _numina_layout(table: InputTable, layout: NuminaLayout) -> Literal["1.5", "cot"]:
    if layout != "auto":
        return layout
    # NuminaMath-1.5 has answer/question_type columns; NuminaMath-CoT has neither.
    return "1.5" if {"answer", "question_type"} & table.columns else "cot"


def _numina_row(
    row: SourceRow, layout: Literal["1.5", "cot"], stats: PrepareStats
) -> tuple[dict[str, object], int] | None:
    """The output record of one row and how many boxes its answer joins (0: none), or
    None (the drop reason counted in ``stats``)."""
    problem = _text(row, "problem")
    source = _optional_text(row, "source")
    if source in NUMINA_SYNTHETIC_SOURCES:
        stats.drop("synthetic_subset")
        return None
    if layout == "1.5":
        synthetic = row.data.get("synthetic")
        if synthetic is True or (isinstance(synthetic, str) and synthetic.lower() == "true"):
            stats.drop("synthetic_flag")
            return None
        question_type = _optional_text(row, "question_type").strip()
        answer = _text(row, "answer", allow_number=True).strip()
        if question_type == "proof" or answer == "proof":
            stats.drop("proof")
            return None
        if question_type == "MCQ":
            stats.drop("multiple_choice")
            return None
        if answer in NUMINA_NO_ANSWER:
            stats.drop("no_answer")
            return None
        boxes = final_boxes(answer) or []
    else:
        # The whole final answer: a multi-part answer boxed part by part keeps every part.
        boxes = final_boxes(_text(row, "solution")) or []
        boxed = join_boxes(boxes) if boxes else None
        answer = boxed.strip() if boxed is not None else ""
        if _PROOF_WORDS.search(problem):
            stats.drop("proof")
            return None
        if _looks_multiple_choice(problem, boxed):
            stats.drop("multiple_choice")
            return None
        if not answer:
            stats.drop("no_answer")
            return None
    if (reason := unusable_answer(answer)) is not None:  # e.g. a NaN read from a float column
        stats.drop(reason)
        return None
    problem = problem.strip()
    if not problem:
        stats.drop("empty_problem")
        return None
    record: dict[str, object] = {"prompt": problem, "answer": answer, "source": f"numinamath/{source}"}
    if layout == "1.5" and row.data.get("problem_type"):
        record["problem_type"] = row.data["problem_type"]
    return record, len(boxes)


def _numina_columns(table: InputTable, layout: Literal["1.5", "cot"]) -> tuple[str, ...]:
    """The columns read in a file of ``layout`` (the required ones must be there)."""
    if layout == "1.5":
        table.require("problem", "answer", "question_type", "source")
        return ("problem", "answer", "question_type", "source", "synthetic", "problem_type")
    table.require("problem", "solution", "source")
    return ("problem", "solution", "source")


def prepare_numinamath(
    inputs: Sequence[Path | str],
    out: Path | str,
    *,
    seed: int = 0,
    valid_size: int = DEFAULT_HELD_OUT_SIZE,
    test_size: int = DEFAULT_HELD_OUT_SIZE,
    layout: NuminaLayout = "auto",
) -> PrepareStats:
    """NuminaMath-1.5 or NuminaMath-CoT files -> train/valid/test.jsonl and stats.json.

    Drops (§3.1 of the paper) the synthetic subsets, proof and multiple-choice problems:
    proof problems cannot be checked by answer matching, multiple-choice ones reward
    guessing a letter, synthetic ones may have wrong answers. NuminaMath-1.5 says which
    rows are which (``question_type``, ``answer``, ``synthetic``); NuminaMath-CoT does not,
    so its proof/multiple-choice rows are found by the problem's wording and options, and
    its reference answer is the solution's final answer: its last ``\\boxed{}`` with the boxes
    that belong to it, joined (Math-Verify's rule, :mod:`~fs2_semionline.data.answers`);
    ``stats.json`` counts the answers made of several boxes. Rows without a usable
    answer are dropped; problems are deduplicated (first copy kept) before the seeded split,
    so that no problem is in two splits.
    """
    paths = expand_inputs(inputs)
    stats = PrepareStats(
        "numinamath",
        [str(p) for p in paths],
        {"seed": seed, "valid_size": valid_size, "test_size": test_size, "layout": layout},
    )
    kept = UniqueRecords(stats)
    num_multi_box = 0
    for path in paths:
        table = InputTable(path)
        file_layout = _numina_layout(table, layout)
        columns = _numina_columns(table, file_layout)
        for _, result in parsed_rows(table, columns, lambda row: _numina_row(row, file_layout, stats), stats):
            if result is not None and kept.add(result[0]):
                num_multi_box += result[1] > 1
    stats.extra["answers_of_several_boxes"] = num_multi_box
    splits = _held_out_split(kept.records, {"valid": valid_size, "test": test_size}, seed)
    _write_outputs(Path(out), {"train": splits["train"], "valid": splits["valid"], "test": splits["test"]}, stats)
    return stats
