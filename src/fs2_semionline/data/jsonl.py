"""Reading prompt JSONL files with errors that name the file, the line and the field.

Policy (documented in the README):
  * errors — the file is wrong and the user must fix it: a line that is not valid
    UTF-8, a line that is not a JSON object, a missing or non-string required field;
  * counted skips — a record that is well-formed but unusable for this run: an empty
    prompt, a prompt longer than the model's maximum length. Skips are counted per
    reason in :class:`LoadReport` and reported in the run's metrics/results.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fs2_semionline.core.errors import DataFileError
from fs2_semionline.data.encoding import TextEncoder


@dataclass(frozen=True)
class JsonlRecord:
    """One JSON object and where it came from."""

    data: dict[str, object]
    path: Path
    line_nr: int

    def require_str(self, name: str, *, allow_number: bool = False) -> str:
        if name not in self.data:
            raise DataFileError(self.path, self.line_nr, "missing required field", name)
        value = self.data[name]
        if allow_number and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise DataFileError(self.path, self.line_nr, f"expected a string, got {type(value).__name__}", name)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:  # JSON's "\ud800" escapes decode to a lone surrogate
            raise DataFileError(
                self.path,
                self.line_nr,
                f"not valid Unicode text: a lone surrogate {value[err.start]!r} at character {err.start}",
                name,
            ) from None
        return value


_NOT_A_NUMBER = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


def unusable_answer(answer: str) -> str | None:
    """Why a gold answer can never be matched (a counted skip, never a silent 0 for every
    sample): ``empty_answer`` (nothing left after stripping spaces and ``$``), or
    ``nan_answer`` (NaN or infinity: what JSON's ``NaN``/``Infinity`` and a float column's
    missing value read as). None when the answer is usable."""
    bare = answer.strip().strip("$").strip()
    if not bare:
        return "empty_answer"
    if bare.lower() in _NOT_A_NUMBER:
        return "nan_answer"
    return None


@dataclass
class LoadReport:
    """How many records were read and how many were skipped, per reason."""

    num_read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, object]:
        return {"num_read": self.num_read, "num_skipped": self.num_skipped, "skipped": dict(self.skipped)}


def iter_jsonl(path: Path) -> Iterator[JsonlRecord]:
    """Yields every non-blank line of ``path`` as a JSON object, or raises DataFileError."""
    with path.open("rb") as f:
        for line_nr, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as ex:
                raise DataFileError(
                    path,
                    line_nr,
                    f"not valid UTF-8 (byte {ex.start + 1} of the line: {raw[ex.start : ex.start + 1]!r})",
                ) from None
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as ex:
                raise DataFileError(path, line_nr, f"not valid JSON ({ex.msg} at column {ex.colno})") from None
            if not isinstance(data, dict):
                raise DataFileError(path, line_nr, f"expected a JSON object, got {type(data).__name__}")
            yield JsonlRecord(data, path, line_nr)


@dataclass(frozen=True)
class PromptExample:
    """A prompt ready for the model: the templated text, its token ids and its gold answer."""

    prompt: str  # the raw problem / instruction, as in the file
    text: str  # after the chat template
    token_ids: list[int]
    answer: str | None
    task: str
    source: str  # "file:line", for messages and result files


def load_prompts(
    paths: Sequence[Path],
    *,
    task: str,
    template: Callable[[str], str],
    encoder: TextEncoder,
    max_prompt_len: int,
    require_answer: bool,
    report: LoadReport | None = None,
) -> list[PromptExample]:
    """Reads prompt files; malformed records raise, unusable ones are counted skips."""
    report = report if report is not None else LoadReport()
    examples: list[PromptExample] = []
    for path in paths:
        for record in iter_jsonl(Path(path)):
            report.num_read += 1
            prompt = record.require_str("prompt")
            answer = record.require_str("answer", allow_number=True) if require_answer else None
            if not prompt.strip():
                report.skipped["empty_prompt"] += 1
                continue
            reason = unusable_answer(answer) if answer is not None else None
            if reason is not None:
                report.skipped[reason] += 1
                continue
            text = template(prompt)
            token_ids = encoder.prompt(template, prompt)
            if len(token_ids) > max_prompt_len:
                report.skipped["prompt_too_long"] += 1
                continue
            examples.append(PromptExample(prompt, text, token_ids, answer, task, f"{record.path}:{record.line_nr}"))
    return examples


@dataclass(frozen=True)
class PairExample:
    """Offline DPO form (b): a prompt with a fixed chosen and rejected response."""

    prompt_ids: list[int]
    chosen_ids: list[int]  # response tokens, EOS included
    rejected_ids: list[int]
    source: str


def load_pairs(
    path: Path,
    *,
    template: Callable[[str], str],
    encoder: TextEncoder,
    eos_idx: int,
    max_seq_len: int,
    report: LoadReport | None = None,
) -> list[PairExample]:
    """Reads ``{"prompt", "chosen", "rejected"}`` lines; same error/skip policy as prompts."""
    report = report if report is not None else LoadReport()
    pairs: list[PairExample] = []
    for record in iter_jsonl(Path(path)):
        report.num_read += 1
        prompt, chosen, rejected = (record.require_str(k) for k in ("prompt", "chosen", "rejected"))
        if not prompt.strip():
            report.skipped["empty_prompt"] += 1
            continue
        prompt_ids = encoder.prompt(template, prompt)
        chosen_ids, rejected_ids = encoder.text(chosen) + [eos_idx], encoder.text(rejected) + [eos_idx]
        if len(prompt_ids) + max(len(chosen_ids), len(rejected_ids)) > max_seq_len:
            report.skipped["pair_too_long"] += 1
            continue
        pairs.append(PairExample(prompt_ids, chosen_ids, rejected_ids, f"{record.path}:{record.line_nr}"))
    return pairs
