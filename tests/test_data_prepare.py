"""fs2_semionline.data.prepare: the paper's filtering rules, seeded splits, layouts, errors.

The fixtures in tests/fixtures/datasets are a handful of hand-written rows in each real
dataset's column layout; every filter rule has a row (named by its prompt's prefix) that
exercises it. Parquet copies are written into tmp_path with pyarrow, as the Hub ships.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fs2_semionline.core.errors import ConfigError, DataFileError, UserInputError
from fs2_semionline.core.paths import ASSETS_DIR
from fs2_semionline.data.prepare import (
    MissingColumnError,
    main,
    number_text,
    prepare_aime,
    prepare_amc23,
    prepare_math500,
    prepare_numinamath,
    prepare_wildchat,
    resolve_dataset_dir,
)

from helpers import build_datasets_cache

FIXTURES = Path(__file__).parent / "fixtures" / "datasets"
NM15 = FIXTURES / "numinamath_1_5.jsonl"
NMCOT = FIXTURES / "numinamath_cot.jsonl"
WILDCHAT = FIXTURES / "wildchat.jsonl"
MATH500 = FIXTURES / "math500.jsonl"
AMC23 = FIXTURES / "amc23.jsonl"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _to_parquet(jsonl: Path, tmp_path: Path, drop: tuple[str, ...] = ()) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{k: v for k, v in row.items() if k not in drop} for row in _rows(jsonl)]
    out = tmp_path / f"{jsonl.stem}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out


def _tags(path: Path) -> list[str]:
    """The fixture prompts' prefixes ("KEEP-1", ...) in file order."""
    return [row["prompt"].split(":")[0] for row in _rows(path)]


def _all_splits(out: Path, splits: tuple[str, ...]) -> dict[str, list[dict]]:
    return {s: _rows(out / f"{s}.jsonl") for s in splits}


# --------------------------------------------------------------------------- NuminaMath-1.5


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_numinamath_1_5_filters_and_split(tmp_path: Path, fmt: str) -> None:
    src = NM15 if fmt == "jsonl" else _to_parquet(NM15, tmp_path)
    out = tmp_path / "out"
    stats = prepare_numinamath([src], out, seed=0, valid_size=2, test_size=2)

    splits = _all_splits(out, ("train", "valid", "test"))
    assert {s: len(r) for s, r in splits.items()} == {"train": 4, "valid": 2, "test": 2}
    survivors = sorted(row["prompt"].split(":")[0] for rows in splits.values() for row in rows)
    assert survivors == [f"KEEP-{i}" for i in range(1, 9)]  # each once: the duplicate went
    by_tag = {row["prompt"].split(":")[0]: row for rows in splits.values() for row in rows}
    assert by_tag["KEEP-1"] == {
        "prompt": "KEEP-1: Find the sum of the roots of $x^2 - 5x + 6 = 0$.",
        "answer": "5",
        "source": "numinamath/olympiads",
        "problem_type": "Algebra",
    }
    assert by_tag["KEEP-4"]["answer"] == "\\frac{3}{4}"

    stats_json = json.loads((out / "stats.json").read_text())
    assert stats_json["dropped"] == {
        "bad_row": 1,  # null problem
        "duplicate": 1,  # KEEP-1 again, with more spaces
        "multiple_choice": 1,  # question_type MCQ
        "no_answer": 2,  # answer "notfound" and ""
        "proof": 1,  # question_type proof
        "synthetic_flag": 1,  # synthetic == True outside the named subsets
        "synthetic_subset": 3,  # synthetic_math, orca_math, synthetic_amc
    }
    assert stats_json["num_read"] == 18 and stats_json["num_kept"] == 8
    where = f"{src}:11" if fmt == "jsonl" else f"{src}:row 11"
    assert stats_json["bad_rows"] == [f"{where}: field 'problem': expected a string, got null"]
    assert stats_json["splits"] == {"train": 4, "valid": 2, "test": 2}
    assert stats.dropped["proof"] == 1


def test_numinamath_split_is_seeded(tmp_path: Path) -> None:
    def split(seed: int, name: str) -> dict[str, list[str]]:
        out = tmp_path / name
        prepare_numinamath([NM15], out, seed=seed, valid_size=2, test_size=2)
        return {s: [r["prompt"] for r in rows] for s, rows in _all_splits(out, ("train", "valid", "test")).items()}

    a, again, other = split(0, "a"), split(0, "again"), split(1, "other")
    assert a == again
    assert (a["valid"], a["test"]) != (other["valid"], other["test"])
    for s in (a, other):  # disjoint and complete
        flat = s["train"] + s["valid"] + s["test"]
        assert len(flat) == len(set(flat)) == 8


def test_numinamath_too_few_problems_for_the_held_out_sets(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="only 8 records remain"):
        prepare_numinamath([NM15], tmp_path / "out")  # 1,980 + 1,980 by default


# --------------------------------------------------------------------------- NuminaMath-CoT


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_numinamath_cot_boxed_answers_and_heuristics(tmp_path: Path, fmt: str) -> None:
    src = NMCOT if fmt == "jsonl" else _to_parquet(NMCOT, tmp_path)
    out = tmp_path / "out"
    prepare_numinamath([src], out, seed=3, valid_size=1, test_size=1)

    rows = [r for rows in _all_splits(out, ("train", "valid", "test")).values() for r in rows]
    answers = {r["prompt"].split(":")[0]: r["answer"] for r in rows}
    assert answers == {
        "KEEP-HALF": "\\frac{1}{2}",
        "KEEP-LAST": "x^{2}+1",  # the last \boxed{}, not the first
        "KEEP-GSM": "18",
        "KEEP-BRACES": "\\{-2, 2\\}",  # escaped braces inside the box
        "KEEP-ROOTS": "1,-2",  # a final answer of two boxes keeps both (a set)
        "KEEP-PAIRS": "(1, 2),(2, 1)",
        "KEEP-REPEAT": "14",  # the same box twice is one answer
    }
    stats = json.loads((out / "stats.json").read_text())
    assert stats["answers_of_several_boxes"] == 2
    assert stats["dropped"] == {
        "duplicate": 1,
        "multiple_choice": 2,  # "A: ... B: ... C:" options and \textbf{(A)} options
        "no_answer": 1,  # no \boxed{} in the solution
        "proof": 1,  # "Show that ..."
        "synthetic_subset": 2,
    }


def test_layout_can_be_forced(tmp_path: Path) -> None:
    """A NuminaMath-1.5 file read as CoT takes its answers from the solutions' boxes."""
    prepare_numinamath([NM15], tmp_path, valid_size=1, test_size=1, layout="cot")
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["options"]["layout"] == "cot"
    assert stats["dropped"]["proof"] == 1 and stats["dropped"]["multiple_choice"] == 1


# --------------------------------------------------------------------------- errors


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    parquet = _to_parquet(NM15, tmp_path, drop=("answer",))
    with pytest.raises(MissingColumnError, match=rf"{parquet}: missing column 'answer'") as info:
        prepare_numinamath([parquet], tmp_path / "out")
    assert info.value.path == parquet and info.value.column == "answer"

    jsonl = tmp_path / "cot.jsonl"
    jsonl.write_text(json.dumps({"source": "math", "solution": "\\boxed{1}"}) + "\n")
    with pytest.raises(MissingColumnError, match=rf"{jsonl}: missing column 'problem'"):
        prepare_numinamath([jsonl], tmp_path / "out")

    wild = _to_parquet(WILDCHAT, tmp_path, drop=("language",))
    with pytest.raises(MissingColumnError, match=r"missing column 'language'"):
        prepare_wildchat([wild], tmp_path / "out", english_only=True)
    prepare_wildchat([wild], tmp_path / "out")  # the column is only needed for --english-only


def test_bad_inputs_are_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text(NM15.read_text().splitlines()[0] + "\n{not json\n")
    with pytest.raises(DataFileError, match=rf"{broken}:2: not valid JSON"):
        prepare_numinamath([broken], tmp_path / "out", valid_size=0, test_size=0)
    with pytest.raises(UserInputError, match="no such file"):
        prepare_math500([tmp_path / "missing.parquet"], tmp_path / "out")
    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_text("hello")
    with pytest.raises(UserInputError, match="not a readable parquet file"):
        prepare_math500([not_parquet], tmp_path / "out")

    with pytest.raises(SystemExit) as exit_info:
        main(["math500", str(_to_parquet(MATH500, tmp_path, drop=("answer",))), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    assert "missing column 'answer'" in capsys.readouterr().err


# --------------------------------------------------------------------------- WildChat


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_wildchat_first_turn_english_dedup(tmp_path: Path, fmt: str) -> None:
    src = WILDCHAT if fmt == "jsonl" else _to_parquet(WILDCHAT, tmp_path)
    prepare_wildchat([src], tmp_path / "en", english_only=True)
    rows = _rows(tmp_path / "en" / "train.jsonl")
    assert sorted(_tags(tmp_path / "en" / "train.jsonl")) == [
        "FIRST",
        "MULTI-2",
        "SINGLE-1",
        "SINGLE-2",
        "SINGLE-3",
        "TOXIC",
    ]
    first = next(r for r in rows if r["prompt"].startswith("FIRST"))
    assert first == {"prompt": "FIRST: Write a haiku about autumn.", "source": "wildchat", "id": "h01"}
    stats = json.loads((tmp_path / "en" / "stats.json").read_text())
    assert stats["dropped"] == {
        "bad_row": 1,  # conversation null
        "duplicate": 1,  # h04 repeats h01's first turn up to whitespace
        "empty_prompt": 1,
        "no_user_turn": 1,  # empty conversation
        "not_english": 1,
    }
    assert len(stats["bad_rows"]) == 1 and "field 'conversation'" in stats["bad_rows"][0]
    assert not (tmp_path / "en" / "valid.jsonl").exists()

    prepare_wildchat([src], tmp_path / "all")
    assert "FRENCH" in _tags(tmp_path / "all" / "train.jsonl")

    prepare_wildchat([src], tmp_path / "strict", english_only=True, single_turn_only=True, drop_toxic=True)
    assert sorted(_tags(tmp_path / "strict" / "train.jsonl")) == ["FIRST", "SINGLE-1", "SINGLE-2", "SINGLE-3"]
    # h01 (two turns) is filtered out first, so its single-turn copy h04 is no duplicate.
    assert [r["id"] for r in _rows(tmp_path / "strict" / "train.jsonl") if r["prompt"].startswith("FIRST")] == ["h04"]
    dropped = json.loads((tmp_path / "strict" / "stats.json").read_text())["dropped"]
    assert dropped["multi_turn"] == 2 and dropped["toxic"] == 1


def test_wildchat_sampling_is_seeded(tmp_path: Path) -> None:
    def sample(seed: int, name: str) -> tuple[list[str], list[str]]:
        stats = prepare_wildchat([WILDCHAT], tmp_path / name, num=3, valid=2, seed=seed, english_only=True)
        assert stats.splits == {"train": 3, "valid": 2} and stats.extra["num_not_sampled"] == 1
        return _tags(tmp_path / name / "train.jsonl"), _tags(tmp_path / name / "valid.jsonl")

    (train, valid), again, other = sample(0, "a"), sample(0, "b"), sample(5, "c")
    assert (train, valid) == again and (train, valid) != other
    assert not set(train) & set(valid)
    with pytest.raises(UserInputError, match="only 6 prompts remain"):
        prepare_wildchat([WILDCHAT], tmp_path / "d", num=6, valid=1, english_only=True)


# --------------------------------------------------------------------------- Math500 / AMC23


def test_a_nan_answer_is_dropped_and_counted(tmp_path: Path) -> None:
    src = tmp_path / "with_nan.jsonl"
    rows = [json.loads(line) for line in MATH500.read_text().splitlines() if line.strip()]
    rows[1]["answer"] = float("nan")  # how a float column's missing value arrives
    rows[2]["answer"] = "NaN"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = prepare_math500([src], tmp_path / "out")
    assert [r["answer"] for r in _rows(tmp_path / "out" / "test.jsonl")] == ["9"]
    assert stats.dropped["nan_answer"] == 2


def test_a_lone_surrogate_is_a_counted_bad_row(tmp_path: Path) -> None:
    src = tmp_path / "with_surrogate.jsonl"
    rows = [json.loads(line) for line in MATH500.read_text().splitlines() if line.strip()]
    rows[0]["problem"] = "What is \ud800?"  # json.dumps escapes it; reading it back gives a lone surrogate
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = prepare_math500([src], tmp_path / "out")
    assert len(_rows(tmp_path / "out" / "test.jsonl")) == len(rows) - 1
    assert stats.dropped["bad_row"] == 1 and "not valid Unicode text" in stats.bad_rows[0]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_math500_conversion(tmp_path: Path, fmt: str) -> None:
    src = MATH500 if fmt == "jsonl" else _to_parquet(MATH500, tmp_path)
    prepare_math500([src], tmp_path / "out")
    rows = _rows(tmp_path / "out" / "test.jsonl")
    assert [r["answer"] for r in rows] == ["9", "\\left( 2, \\frac{\\pi}{2} \\right)", "\\frac{5}{2}"]
    assert rows[0] == {
        "prompt": "What is the value of $\\sqrt{49} + 2$?",
        "answer": "9",
        "source": "math500",
        "subject": "Prealgebra",
        "level": 1,
        "unique_id": "test/prealgebra/0001.json",
    }


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_amc23_conversion(tmp_path: Path, fmt: str) -> None:
    src = AMC23 if fmt == "jsonl" else _to_parquet(AMC23, tmp_path)
    stats = prepare_amc23([src], tmp_path / "all")
    assert [r["answer"] for r in _rows(tmp_path / "all" / "test.jsonl")] == ["24", "27", "0.75", "6"]
    assert dict(stats.dropped) == {"bad_row": 1}  # answer null

    prepare_amc23([src], tmp_path / "y2023", url_contains="2023")
    rows = _rows(tmp_path / "y2023" / "test.jsonl")
    assert [r["answer"] for r in rows] == ["24", "27", "0.75"]
    assert rows[1]["prompt"] == "What is $3^3$?" and rows[1]["source"] == "amc23" and rows[1]["id"] == 1


def test_amc23_question_column_and_string_answers(tmp_path: Path) -> None:
    """Other AMC23 copies name the problem `question` and store answers as strings."""
    src = tmp_path / "amc.jsonl"
    src.write_text(
        "\n".join(
            json.dumps({"id": i, "question": q, "answer": a})
            for i, (q, a) in enumerate([("Q1", "27.0"), ("Q2", "3/4")])
        )
    )
    prepare_amc23([src], tmp_path / "out")
    assert [(r["prompt"], r["answer"]) for r in _rows(tmp_path / "out" / "test.jsonl")] == [("Q1", "27"), ("Q2", "3/4")]
    assert [number_text(x) for x in (27.0, 0.5, 3, "-4.00", " 12 ")] == ["27", "0.5", "3", "-4", "12"]


# --------------------------------------------------------------------------- by name, save_to_disk


def _prepare(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fs2_semionline.data.prepare", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_a_dataset_by_its_hub_name_reads_the_datasets_cache(tmp_path: Path) -> None:
    """Nothing can be downloaded here: the test builds the cache that
    ``datasets.load_dataset("HuggingFaceH4/MATH-500")`` leaves on a machine that reached
    the Hub, then reads the set by that name, offline, through the same call."""
    rows = _rows(FIXTURES / "math500.jsonl")
    env = build_datasets_cache(tmp_path / "hf", "HuggingFaceH4/MATH-500", {"test": rows})
    prepare_math500([FIXTURES / "math500.jsonl"], tmp_path / "from_file")
    for name in ("HuggingFaceH4/MATH-500", "HuggingFaceH4/MATH-500:test"):
        out = tmp_path / name.replace("/", "_").replace(":", "_")
        run = _prepare(["math500", name, "--out", str(out)], env)
        assert run.returncode == 0, run.stderr[-3000:]
        assert _rows(out / "test.jsonl") == _rows(tmp_path / "from_file" / "test.jsonl")
        stats = json.loads((out / "stats.json").read_text())
        assert stats["inputs"] == ["HuggingFaceH4/MATH-500:test"] and stats["num_kept"] == len(rows)
    # A name the cache does not hold (and no Hub to ask): one line that names it.
    run = _prepare(["aime", "nobody/no-such-set", "--out", str(tmp_path / "none")], env)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("error: nobody/no-such-set: no such file or folder here, and datasets.load_dataset(")
    assert len(run.stderr.strip().splitlines()) == 1


def test_a_save_to_disk_folder_is_read_split_by_split(tmp_path: Path) -> None:
    import datasets

    aime = [{"ID": f"2024-I-{i}", "Problem": f"Problem {i}?", "Answer": i * 7} for i in range(1, 4)]
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(aime[:2]), "test": datasets.Dataset.from_list(aime[2:])}
    ).save_to_disk(str(tmp_path / "aime_2024"))
    stats = prepare_aime([tmp_path / "aime_2024"], tmp_path / "out")
    assert stats.inputs == [str(tmp_path / "aime_2024") + ":train", str(tmp_path / "aime_2024") + ":test"]
    assert [(r["prompt"], r["answer"], r["ID"]) for r in _rows(tmp_path / "out" / "test.jsonl")] == [
        ("Problem 1?", "7", "2024-I-1"),
        ("Problem 2?", "14", "2024-I-2"),
        ("Problem 3?", "21", "2024-I-3"),
    ]
    datasets.Dataset.from_list(_rows(NMCOT)).save_to_disk(str(tmp_path / "cot"))  # one Dataset, no splits
    prepare_numinamath([tmp_path / "cot"], tmp_path / "cot_out", valid_size=1, test_size=1)
    prepare_numinamath([NMCOT], tmp_path / "cot_file", valid_size=1, test_size=1)
    for split in ("train", "valid", "test"):
        assert _rows(tmp_path / "cot_out" / f"{split}.jsonl") == _rows(tmp_path / "cot_file" / f"{split}.jsonl")


# --------------------------------------------------------------------------- CLI and cards


def test_cli_prints_counts_and_reads_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    _to_parquet(NM15, folder)
    (folder / "dataset_info.json").write_text("{}")  # metadata, not rows: skipped
    (folder / ".cache").mkdir()
    _to_parquet(NM15, folder / ".cache")  # hidden: skipped
    main(["numinamath", str(folder), "--out", str(tmp_path / "out"), "--valid-size", "2", "--test-size", "2"])
    printed = capsys.readouterr().out
    assert "kept 8 (train 4, valid 2, test 2)" in printed
    assert "proof 1" in printed and "synthetic_subset 3" in printed and "duplicate 1" in printed
    assert len(_rows(tmp_path / "out" / "train.jsonl")) == 4


def test_dataset_cards_and_resolve_dataset_dir(tmp_path: Path) -> None:
    from fairseq2.assets import StandardAssetStore, load_in_memory_asset_metadata

    cards = list(yaml.safe_load_all((ASSETS_DIR / "cards" / "datasets.yaml").read_text()))
    assert [c["name"] for c in cards] == ["numinamath", "wildchat", "math500", "amc23"]
    for card in cards:
        assert card["dataset_family"] == "fs2_semionline_jsonl" and card["data_path"] is None
        assert card["prepare_command"].startswith(f"python -m fs2_semionline.data.prepare {card['name']} ")

    package = load_in_memory_asset_metadata("package", cards)
    with pytest.raises(ConfigError, match=r"'numinamath': field 'data_path' is not set.*name: numinamath@user"):
        resolve_dataset_dir("numinamath", store=StandardAssetStore([package]))
    with pytest.raises(ConfigError, match="no fairseq2 asset card named 'nope'"):
        resolve_dataset_dir("nope", store=StandardAssetStore([package]))

    prepared = tmp_path / "prepared"
    prepared.mkdir()
    user = load_in_memory_asset_metadata(
        "user",
        [
            {"name": "numinamath@user", "data_path": str(prepared)},
            {"name": "wildchat@user", "data_path": str(tmp_path / "x")},
        ],
    )
    store = StandardAssetStore([package, user])
    assert resolve_dataset_dir("numinamath", store=store) == prepared
    with pytest.raises(ConfigError, match="'wildchat': field 'data_path'.* is not a folder"):
        resolve_dataset_dir("wildchat", store=store)
