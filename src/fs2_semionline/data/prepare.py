"""Prepares the paper's datasets from files the user already has (nothing is downloaded).

    python -m fs2_semionline.data.prepare numinamath IN... --out DIR [--seed 0]
    python -m fs2_semionline.data.prepare wildchat IN... --out DIR [--num N] [--valid N] [--english-only]
    python -m fs2_semionline.data.prepare math500 IN... --out DIR
    python -m fs2_semionline.data.prepare amc23 IN... --out DIR [--url-contains 2023]

Inputs are the datasets' own files: parquet (as shipped on the Hugging Face Hub) or JSON
Lines (``.jsonl``/``.json``/``.ndjson``, e.g. ``datasets``' ``to_json``); a folder stands for
every such file below it. The outputs are the project's JSONL files (math:
``{"prompt", "answer", "source", ...}``, chat: ``{"prompt", ...}``) plus ``stats.json``.

Filtering follows the paper (arXiv 2506.21495): NuminaMath without proof problems,
multiple-choice problems and the synthetic subsets (Orca math, synthetic AMC, synthetic
math), 1,980 problems each held out for validation and test (§3.1); WildChat-1M
first-turn user prompts, randomly sampled (§3.2).

Error policy (as in :mod:`fs2_semionline.data.jsonl`): a file whose layout is wrong (a
required column is missing, a line is not a JSON object) is an error naming the file
and the column / line; a row that is well-formed but unusable (a null problem, a
conversation that is not a list, ...) is a counted drop (``bad_row``), and the first
:data:`MAX_BAD_ROWS_LISTED` of them are named in ``stats.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from fs2_semionline.data.jsonl import LoadReport, iter_jsonl
from fs2_semionline.errors import ConfigError, UserInputError
from fs2_semionline.rewards.boxed import extract_last_boxed

if TYPE_CHECKING:
    import pyarrow.parquet as pq
    from fairseq2.assets import AssetStore

__all__ = [
    "DEFAULT_HELD_OUT_SIZE",
    "MissingColumnError",
    "NUMINA_SYNTHETIC_SOURCES",
    "PrepareStats",
    "main",
    "prepare_amc23",
    "prepare_math500",
    "prepare_numinamath",
    "prepare_wildchat",
    "resolve_dataset_dir",
]

#: Validation and test sizes of the paper's NuminaMath split (§3.1).
DEFAULT_HELD_OUT_SIZE = 1_980

#: NuminaMath subsets the paper drops as synthetic (§3.1: "Orca math, synthetic AMC,
#: and synthetic math"), spelled as in the datasets' ``source`` column.
NUMINA_SYNTHETIC_SOURCES = frozenset({"orca_math", "synthetic_amc", "synthetic_math"})

#: NuminaMath-1.5 ``answer`` values that are no reference answer.
NUMINA_NO_ANSWER = frozenset({"", "proof", "notfound"})

#: How many bad rows ``stats.json`` names (all of them are counted).
MAX_BAD_ROWS_LISTED = 100

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
#: What a folder given as input stands for: not ``.json``, which in a Hub snapshot or a
#: ``save_to_disk`` folder is metadata (dataset_info.json, state.json), not rows.
FOLDER_SUFFIXES = (".parquet", ".jsonl", ".ndjson")

NuminaLayout = Literal["auto", "1.5", "cot"]


class MissingColumnError(UserInputError):
    """An input file lacks a column its dataset layout requires."""

    def __init__(self, path: Path, column: str, columns: Iterable[str]) -> None:
        present = ", ".join(sorted(columns)) or "none"
        super().__init__(f"{path}: missing column '{column}' (columns present: {present})")
        self.path = path
        self.column = column


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class SourceRow:
    """One input row and where it came from ("file:LINE" or "file:row N")."""

    data: Mapping[str, object]
    where: str


class _BadRow(Exception):
    """Raised inside a row handler; the caller counts the row as ``bad_row``."""


class InputTable:
    """A parquet or JSON Lines file: its column names and its rows as dicts.

    Parquet is read with pyarrow, in batches and only the columns asked for (WildChat's
    moderation columns are large); JSON Lines with the project's reader, whose columns
    are the keys of the first record.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        suffix = path.suffix.lower()
        if suffix in PARQUET_SUFFIXES:
            self.kind = "parquet"
            self.columns = frozenset(self._parquet_file().schema_arrow.names)
        elif suffix in JSONL_SUFFIXES:
            self.kind = "jsonl"
            records = iter_jsonl(path)
            first = next(records, None)
            records.close()
            self.columns = frozenset(first.data) if first is not None else frozenset()
        else:
            raise UserInputError(
                f"{path}: unsupported file type (expected {', '.join(PARQUET_SUFFIXES + JSONL_SUFFIXES)})"
            )

    def _parquet_file(self) -> pq.ParquetFile:
        # Imported here: JSONL-only use and `import fs2_semionline.data.prepare` stay light.
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as ex:
            raise UserInputError(f"{self.path}: not a readable parquet file ({ex})") from None

    def require(self, *names: str) -> None:
        for name in names:
            if name not in self.columns:
                raise MissingColumnError(self.path, name, self.columns)

    def rows(self, columns: Sequence[str]) -> Iterator[SourceRow]:
        """Rows restricted to ``columns`` (those the file has)."""
        wanted = [c for c in columns if c in self.columns]
        if self.kind == "jsonl":
            for record in iter_jsonl(self.path):
                data = {c: record.data[c] for c in wanted if c in record.data}
                yield SourceRow(data, f"{self.path}:{record.line_nr}")
            return
        row_nr = 0
        for batch in self._parquet_file().iter_batches(batch_size=8192, columns=wanted):
            for data in batch.to_pylist():
                row_nr += 1
                yield SourceRow(data, f"{self.path}:row {row_nr}")


def expand_inputs(inputs: Sequence[Path | str]) -> list[Path]:
    """Files in the order given; a folder stands for its parquet/JSONL files, sorted
    (hidden ones, such as a Hub snapshot's .cache, left out)."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in FOLDER_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise UserInputError(f"{path}: folder holds no parquet or JSONL file")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise UserInputError(f"{path}: no such file or folder")
    if not paths:
        raise UserInputError("no input files given")
    return paths


def _text(row: SourceRow, name: str, *, allow_number: bool = False) -> str:
    """The string in column ``name``; anything else makes the row a bad row."""
    if name not in row.data:
        raise _BadRow(f"field '{name}': missing")
    value = row.data[name]
    if isinstance(value, str):
        return value
    if allow_number and isinstance(value, (int, float)) and not isinstance(value, bool):
        return number_text(value)
    got = "null" if value is None else type(value).__name__
    raise _BadRow(f"field '{name}': expected a string, got {got}")


def _optional_text(row: SourceRow, name: str) -> str:
    value = row.data.get(name)
    return value if isinstance(value, str) else ""


def number_text(value: int | float | str) -> str:
    """An answer as text, integral floats without ".0" (AMC answers ship as ``27.0``)."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    text = value.strip()
    match = re.fullmatch(r"([+-]?\d+)\.0*", text)
    return match.group(1) if match else text


def _dedup_key(text: str) -> str:
    """Problems that differ only in whitespace are the same problem."""
    return " ".join(text.split())


# --------------------------------------------------------------------------- stats / output


@dataclass
class PrepareStats:
    """What ``stats.json`` records: counts read, kept and dropped per reason."""

    dataset: str
    inputs: list[str]
    options: dict[str, object] = field(default_factory=dict)
    report: LoadReport = field(default_factory=LoadReport)
    bad_rows: list[str] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def dropped(self) -> Counter[str]:
        return self.report.skipped

    @property
    def num_kept(self) -> int:
        return self.report.num_read - self.report.num_skipped

    def drop(self, reason: str) -> None:
        self.report.skipped[reason] += 1

    def bad_row(self, row: SourceRow, message: str) -> None:
        self.drop("bad_row")
        if len(self.bad_rows) < MAX_BAD_ROWS_LISTED:
            self.bad_rows.append(f"{row.where}: {message}")

    def as_dict(self) -> dict[str, object]:
        return {
            "dataset": self.dataset,
            "inputs": self.inputs,
            "options": self.options,
            "num_read": self.report.num_read,
            "num_kept": self.num_kept,
            "num_dropped": self.report.num_skipped,
            "dropped": dict(sorted(self.dropped.items())),
            "bad_rows": self.bad_rows,
            "splits": self.splits,
            **self.extra,
        }

    def summary(self) -> str:
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(self.dropped.items())) or "none"
        splits = ", ".join(f"{k} {v}" for k, v in self.splits.items())
        return f"{self.dataset}: read {self.report.num_read}, kept {self.num_kept} ({splits}); dropped: {dropped}"


def _write_jsonl(path: Path, records: Iterable[Mapping[str, object]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def _write_outputs(out: Path, splits: Mapping[str, Sequence[Mapping[str, object]]], stats: PrepareStats) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for split, records in splits.items():
        stats.splits[split] = _write_jsonl(out / f"{split}.jsonl", records)
    (out / "stats.json").write_text(json.dumps(stats.as_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _held_out_split(
    records: list[dict[str, object]], sizes: Mapping[str, int], seed: int, rest: str = "train"
) -> dict[str, list[dict[str, object]]]:
    """Seeded shuffle, then the first ``sizes[s]`` records go to split ``s`` in order."""
    need = sum(sizes.values())
    if need >= len(records):
        wanted = " + ".join(f"{n} {s}" for s, n in sizes.items())
        raise UserInputError(
            f"only {len(records)} records remain after filtering: too few for {wanted} and a non-empty {rest} split"
        )
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    out: dict[str, list[dict[str, object]]] = {}
    start = 0
    for split, n in sizes.items():
        out[split] = shuffled[start : start + n]
        start += n
    out[rest] = shuffled[start:]
    return out


# --------------------------------------------------------------------------- NuminaMath

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


def _numina_row(row: SourceRow, layout: Literal["1.5", "cot"], stats: PrepareStats) -> dict[str, object] | None:
    """The output record of one row, or None (the drop reason counted in ``stats``)."""
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
    else:
        boxed = extract_last_boxed(_text(row, "solution"))
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
    problem = problem.strip()
    if not problem:
        stats.drop("empty_problem")
        return None
    record: dict[str, object] = {"prompt": problem, "answer": answer, "source": f"numinamath/{source}"}
    if layout == "1.5" and row.data.get("problem_type"):
        record["problem_type"] = row.data["problem_type"]
    return record


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
    its reference answer is the last ``\\boxed{}`` of the solution. Rows without a usable
    answer are dropped; problems are deduplicated (first copy kept) before the seeded split,
    so that no problem is in two splits.
    """
    paths = expand_inputs(inputs)
    stats = PrepareStats(
        "numinamath",
        [str(p) for p in paths],
        {"seed": seed, "valid_size": valid_size, "test_size": test_size, "layout": layout},
    )
    kept: list[dict[str, object]] = []
    seen: set[str] = set()
    for path in paths:
        table = InputTable(path)
        file_layout = _numina_layout(table, layout)
        if file_layout == "1.5":
            columns = ("problem", "answer", "question_type", "source")
            table.require(*columns)
            columns += ("synthetic", "problem_type")
        else:
            columns = ("problem", "solution", "source")
            table.require(*columns)
        for row in table.rows(columns):
            stats.report.num_read += 1
            try:
                record = _numina_row(row, file_layout, stats)
            except _BadRow as ex:
                stats.bad_row(row, str(ex))
                continue
            if record is None:
                continue
            key = _dedup_key(str(record["prompt"]))
            if key in seen:
                stats.drop("duplicate")
                continue
            seen.add(key)
            kept.append(record)
    splits = _held_out_split(kept, {"valid": valid_size, "test": test_size}, seed)
    _write_outputs(Path(out), {"train": splits["train"], "valid": splits["valid"], "test": splits["test"]}, stats)
    return stats


# --------------------------------------------------------------------------- WildChat


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
            return content
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
    stats = PrepareStats(
        "wildchat",
        [str(p) for p in paths],
        {
            "num": num,
            "valid": valid,
            "seed": seed,
            "english_only": english_only,
            "single_turn_only": single_turn_only,
            "drop_toxic": drop_toxic,
        },
    )
    kept: list[dict[str, object]] = []
    seen: set[str] = set()
    for path in paths:
        table = InputTable(path)
        table.require("conversation")
        if english_only:
            table.require("language")
        if single_turn_only:
            table.require("turn")
        if drop_toxic:
            table.require("toxic")
        id_column = next((c for c in ("conversation_hash", "conversation_id") if c in table.columns), None)
        columns = ["conversation", "language", "turn", "toxic"] + ([id_column] if id_column else [])
        for row in table.rows(columns):
            stats.report.num_read += 1
            try:
                prompt = _first_user_turn(row)
            except _BadRow as ex:
                stats.bad_row(row, str(ex))
                continue
            if prompt is None:
                stats.drop("no_user_turn")
            elif single_turn_only and row.data.get("turn") != 1:
                stats.drop("multi_turn")
            elif drop_toxic and row.data.get("toxic") is True:
                stats.drop("toxic")
            elif english_only and row.data.get("language") != "English":
                stats.drop("not_english")
            elif not prompt.strip():
                stats.drop("empty_prompt")
            elif (key := _dedup_key(prompt)) in seen:
                stats.drop("duplicate")
            else:
                seen.add(key)
                record: dict[str, object] = {"prompt": prompt.strip(), "source": "wildchat"}
                if id_column and isinstance(row.data.get(id_column), str):
                    record["id"] = row.data[id_column]
                kept.append(record)
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
    _write_outputs(Path(out), splits, stats)
    return stats


# --------------------------------------------------------------------------- Math500 / AMC23


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


# --------------------------------------------------------------------------- asset cards


def resolve_dataset_dir(name: str, *, store: AssetStore | None = None) -> Path:
    """The prepared folder of dataset card ``name`` (``data_path``, set by a user override).

    ``store`` defaults to fairseq2's asset store (which initialises fairseq2).
    """
    if store is None:
        from fairseq2.assets import get_asset_store

        store = get_asset_store()
    card = store.maybe_retrieve_card(name)
    if card is None:
        raise ConfigError(
            f"no fairseq2 asset card named {name!r} (dataset cards: numinamath, wildchat, math500, amc23)"
        )
    data_path = card.maybe_get_field("data_path")
    if data_path is None or data_path.value is None:
        command = card.maybe_get_field("prepare_command")
        how = f" Prepare it with `{command.as_(str)}`, then set" if command is not None and command.value else " Set"
        raise ConfigError(
            f"asset card {card.name!r}: field 'data_path' is not set.{how} the prepared folder with a user card "
            "override: a YAML file in ~/.config/fairseq2/assets (or in $FAIRSEQ2_USER_ASSET_DIR) with "
            f"'name: {card.name}@user' and 'data_path: /path/to/prepared/folder'"
        )
    path = Path(data_path.as_(str)).expanduser()
    base_path = card.metadata.get("__base_path__")
    if not path.is_absolute() and isinstance(base_path, Path):
        path = base_path / path
    if not path.is_dir():
        raise ConfigError(f"asset card {card.name!r}: field 'data_path': {path} is not a folder")
    return path


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fs2-semionline data",
        description="Prepare the paper's datasets from local parquet/JSONL files (nothing is downloaded).",
    )
    sub = parser.add_subparsers(dest="dataset", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="parquet/JSONL files or folders")
        p.add_argument("--out", type=Path, required=True, help="output folder")
        return p

    p = add("numinamath", "NuminaMath-1.5 / NuminaMath-CoT -> train/valid/test.jsonl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--valid-size", type=int, default=DEFAULT_HELD_OUT_SIZE)
    p.add_argument("--test-size", type=int, default=DEFAULT_HELD_OUT_SIZE)
    p.add_argument("--layout", choices=("auto", "1.5", "cot"), default="auto")

    p = add("wildchat", "WildChat(-1M) -> first-turn user prompts in train.jsonl (+ valid.jsonl)")
    p.add_argument("--num", type=int, default=None, help="training prompts to sample (default: all)")
    p.add_argument("--valid", type=int, default=0, help="validation prompts to split off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--english-only", action="store_true", help="keep conversations with language == English")
    p.add_argument("--single-turn-only", action="store_true", help="keep conversations of one turn only")
    p.add_argument("--drop-toxic", action="store_true", help="drop conversations flagged toxic")

    add("math500", "MATH-500 -> test.jsonl")
    p = add("amc23", "AMC23 -> test.jsonl")
    p.add_argument("--url-contains", default=None, help="keep rows whose url contains this (e.g. 2023)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.dataset == "numinamath":
            stats = prepare_numinamath(
                args.inputs,
                args.out,
                seed=args.seed,
                valid_size=args.valid_size,
                test_size=args.test_size,
                layout=args.layout,
            )
        elif args.dataset == "wildchat":
            stats = prepare_wildchat(
                args.inputs,
                args.out,
                num=args.num,
                valid=args.valid,
                seed=args.seed,
                english_only=args.english_only,
                single_turn_only=args.single_turn_only,
                drop_toxic=args.drop_toxic,
            )
        elif args.dataset == "math500":
            stats = prepare_math500(args.inputs, args.out)
        else:
            stats = prepare_amc23(args.inputs, args.out, url_contains=args.url_contains)
    except UserInputError as ex:
        print(f"error: {ex}", file=sys.stderr)
        raise SystemExit(2) from None
    print(stats.summary())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
