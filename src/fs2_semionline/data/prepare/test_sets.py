"""The evaluation sets, MATH-500, AMC23 and AIME -> test.jsonl (no deduplication, no
content filter); any such set by name or folder for ``lm evaluate``
(:func:`prepare_eval_set`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from fs2_semionline.data.jsonl import unusable_answer
from fs2_semionline.data.prepare.common import (
    InputTable,
    PrepareStats,
    SourceRow,
    _optional_text,
    _text,
    _write_outputs,
    dataset_name,
    expand_inputs,
    number_text,
    parsed_rows,
)

#: Where the Hub's math test sets keep the problem and the answer (MATH-500: problem /
#: answer; math-ai/amc23: question / answer; AIME 2024 copies: Problem / Answer).
PROMPT_COLUMNS = ("problem", "question", "Problem", "Question", "prompt")
ANSWER_COLUMNS = ("answer", "Answer")


def _problem_reader(prompt_column: str, answer_column: str) -> Callable[[SourceRow], tuple[str, str]]:
    """A row's problem (stripped) and its answer as text (a number as written)."""

    def read(row: SourceRow) -> tuple[str, str]:
        return _text(row, prompt_column).strip(), number_text(_text(row, answer_column, allow_number=True))

    return read


def _prepare_test_set(
    name: str,
    inputs: Sequence[Path | str],
    out: Path | str,
    *,
    prompt_columns: Sequence[str],
    extra_columns: Sequence[str],
    answer_columns: Sequence[str] = ("answer",),
    url_contains: str | None = None,
    split: str = "test",
) -> PrepareStats:
    """Evaluation problems -> ``{split}.jsonl``, unchanged apart from the field names.

    Nothing is deduplicated or filtered by content: the benchmark is what it is.
    """
    paths = expand_inputs(inputs)
    stats = PrepareStats(name, [str(p) for p in paths], {"url_contains": url_contains} if url_contains else {})
    kept: list[dict[str, object]] = []
    for path in paths:
        table = InputTable(path)
        prompt_column = next((c for c in prompt_columns if c in table.columns), prompt_columns[0])
        answer_column = next((c for c in answer_columns if c in table.columns), answer_columns[0])
        table.require(prompt_column, answer_column)
        if url_contains is not None:
            table.require("url")
        columns = [prompt_column, answer_column, *extra_columns]
        for row, (problem, answer) in parsed_rows(table, columns, _problem_reader(prompt_column, answer_column), stats):
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
    _write_outputs(Path(out), {split: kept}, stats)
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


def prepare_aime(inputs: Sequence[Path | str], out: Path | str) -> PrepareStats:
    """AIME 2024 / 2025 (``problem`` or ``Problem``/``question``, ``answer`` or ``Answer``,
    an integer 0-999) -> test.jsonl."""
    return _prepare_test_set(
        "aime",
        inputs,
        out,
        prompt_columns=PROMPT_COLUMNS,
        answer_columns=ANSWER_COLUMNS,
        extra_columns=("id", "ID", "url", "year"),
    )


def eval_set_name(entry: Path | str) -> str:
    """A set's name for its results: the dataset's name without its owner (and split),
    or the folder's name (``HuggingFaceH4/MATH-500`` -> ``MATH-500``)."""
    named = dataset_name(str(entry))
    if named is not None and not Path(entry).exists():
        return named[0].split("/")[-1]
    return Path(entry).name


def prepare_eval_set(entry: Path | str, work_dir: Path) -> Path:
    """A math eval set given by dataset name or ``save_to_disk`` folder, written as the
    project's JSONL (``work_dir/NAME/NAME.jsonl``, with its ``stats.json``), so that it
    is read, checked and reported like any eval file. Every split of the entry goes in
    (name one with ``:SPLIT``); the columns are found as in ``fs2-semionline data``."""
    name = eval_set_name(entry)
    folder = work_dir / name
    _prepare_test_set(
        name,
        [entry],
        folder,
        prompt_columns=PROMPT_COLUMNS,
        answer_columns=ANSWER_COLUMNS,
        extra_columns=("id", "ID", "unique_id", "url", "subject", "level", "year"),
        split=name,
    )
    return folder / f"{name}.jsonl"
