"""The evaluation sets, MATH-500 and AMC23 -> test.jsonl (no deduplication, no content filter)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fs2_semionline.data.jsonl import unusable_answer
from fs2_semionline.data.prepare.common import (
    InputTable,
    PrepareStats,
    _BadRow,
    _optional_text,
    _text,
    _write_outputs,
    expand_inputs,
    number_text,
)


def _prepare_test_set(
    name: str,
    inputs: Sequence[Path | str],
    out: Path | str,
    *,
    prompt_columns: Sequence[str],
    extra_columns: Sequence[str],
    url_contains: str | None = None,
) -> PrepareStats:
    """Evaluation problems -> test.jsonl, unchanged apart from the field names.

    Nothing is deduplicated or filtered by content: the benchmark is what it is.
    """
    paths = expand_inputs(inputs)
    stats = PrepareStats(name, [str(p) for p in paths], {"url_contains": url_contains} if url_contains else {})
    kept: list[dict[str, object]] = []
    for path in paths:
        table = InputTable(path)
        prompt_column = next((c for c in prompt_columns if c in table.columns), prompt_columns[0])
        table.require(prompt_column, "answer")
        if url_contains is not None:
            table.require("url")
        for row in table.rows([prompt_column, "answer", *extra_columns]):
            stats.report.num_read += 1
            try:
                problem = _text(row, prompt_column).strip()
                answer = number_text(_text(row, "answer", allow_number=True))
            except _BadRow as ex:
                stats.bad_row(row, str(ex))
                continue
            if url_contains is not None and url_contains not in _optional_text(row, "url"):
                stats.drop("url_not_matching")
            elif not problem:
                stats.drop("empty_problem")
            elif not answer:
                stats.drop("no_answer")
            elif (reason := unusable_answer(answer)) is not None:
                stats.drop(reason)
            else:
                record: dict[str, object] = {"prompt": problem, "answer": answer, "source": name}
                record.update({c: row.data[c] for c in extra_columns if row.data.get(c) is not None})
                kept.append(record)
    _write_outputs(Path(out), {"test": kept}, stats)
    return stats


def prepare_math500(inputs: Sequence[Path | str], out: Path | str) -> PrepareStats:
    """MATH-500 (``problem, solution, answer, subject, level, unique_id``) -> test.jsonl."""
    return _prepare_test_set(
        "math500", inputs, out, prompt_columns=("problem",), extra_columns=("subject", "level", "unique_id")
    )


def prepare_amc23(inputs: Sequence[Path | str], out: Path | str, *, url_contains: str | None = None) -> PrepareStats:
    """AMC23 (``id, problem`` or ``question``, ``answer`` (a float such as 27.0), ``url``) -> test.jsonl.

    ``url_contains`` (e.g. "2023") keeps the AMC 2023 problems of a file that holds more
    years, such as AI-MO/aimo-validation-amc (AMC 2022 and 2023).
    """
    return _prepare_test_set(
        "amc23",
        inputs,
        out,
        prompt_columns=("problem", "question"),
        extra_columns=("id", "url"),
        url_contains=url_contains,
    )
