"""Bad prompt files: an error naming file, line and field, or a counted skip.

Errors (the file must be fixed): invalid UTF-8, a line that is not a JSON object, a
missing or mistyped required field. Counted skips (the record is unusable here): an
empty prompt, a prompt longer than the model's maximum length.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fs2_semionline.core.errors import DataFileError
from fs2_semionline.data.encoding import TextEncoder
from fs2_semionline.data.jsonl import LoadReport, load_prompts
from fs2_semionline.data.templates import verifiable_prompt


def _load(path: Path, max_prompt_len: int = 1000, report: LoadReport | None = None):
    return load_prompts(
        [path],
        task="math",
        template=verifiable_prompt,
        encoder=TextEncoder(lambda text: list(text.encode()), ()),
        max_prompt_len=max_prompt_len,
        require_answer=True,
        report=report,
    )


def _write(tmp_path: Path, lines: list[str | bytes]) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b"".join((l if isinstance(l, bytes) else l.encode()) + b"\n" for l in lines))
    return path


GOOD = json.dumps({"prompt": "What is 1 plus 1?", "answer": "2"})


def test_malformed_json_line_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD, '{"prompt": "What is 2 plus 2?", "answer": '])
    with pytest.raises(DataFileError, match=rf"{path}:2: not valid JSON") as info:
        _load(path)
    assert info.value.line_nr == 2


def test_non_object_line_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD, GOOD, '["a list"]'])
    with pytest.raises(DataFileError, match=rf"{path}:3: expected a JSON object, got list"):
        _load(path)


def test_missing_answer_names_line_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD, json.dumps({"prompt": "What is 3 plus 3?"})])
    with pytest.raises(DataFileError, match=rf"{path}:2: field 'answer': missing required field") as info:
        _load(path)
    assert info.value.field_name == "answer"


def test_mistyped_prompt_names_field(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps({"prompt": ["x"], "answer": "1"})])
    with pytest.raises(DataFileError, match=r":1: field 'prompt': expected a string, got list"):
        _load(path)


def test_numeric_answer_is_accepted_as_text(tmp_path: Path) -> None:
    path = _write(tmp_path, [json.dumps({"prompt": "Half of 3?", "answer": 1.5})])
    assert [e.answer for e in _load(path)] == ["1.5"]


def test_empty_prompt_is_a_counted_skip(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD, json.dumps({"prompt": "  ", "answer": "1"}), "", GOOD])
    report = LoadReport()
    examples = _load(path, report=report)
    assert [e.source for e in examples] == [f"{path}:1", f"{path}:4"]
    assert report.num_read == 3 and report.skipped == {"empty_prompt": 1}


def test_too_long_prompt_is_a_counted_skip(tmp_path: Path) -> None:
    long = json.dumps({"prompt": "What is 1 plus 1? " * 100, "answer": "2"})
    path = _write(tmp_path, [GOOD, long])
    report = LoadReport()
    examples = _load(path, max_prompt_len=len(verifiable_prompt("What is 1 plus 1?").encode()), report=report)
    assert len(examples) == 1
    assert report.as_dict() == {"num_read": 2, "num_skipped": 1, "skipped": {"prompt_too_long": 1}}


def test_non_utf8_bytes_name_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, [GOOD, b'{"prompt": "caf\xe9 prices", "answer": "3"}'])
    with pytest.raises(DataFileError, match=rf"{path}:2: not valid UTF-8 \(byte 16"):
        _load(path)


@pytest.mark.parametrize(
    ("answer", "reason"),
    [("NaN", "nan_answer"), ("nan", "nan_answer"), ("-Infinity", "nan_answer"), (" $ $ ", "empty_answer")],
)
def test_a_gold_that_can_never_match_is_a_counted_skip(tmp_path: Path, answer: str, reason: str) -> None:
    # A NaN gold would score every sample 0 in silence; JSON's bare NaN reads as a float.
    lines = [GOOD, json.dumps({"prompt": "Which number?", "answer": answer}), '{"prompt": "Float NaN?", "answer": NaN}']
    report = LoadReport()
    assert [e.source for e in _load(_write(tmp_path, lines), report=report)] == [f"{tmp_path / 'prompts.jsonl'}:1"]
    assert report.skipped == ({reason: 1, "nan_answer": 1} if reason != "nan_answer" else {"nan_answer": 2})
