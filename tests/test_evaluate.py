"""``fs2-semionline lm evaluate`` end to end: real model, sampler, Math-Verify pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fs2_semionline.core.paths import TINY_MATH_DATA_DIR

from helpers import build_datasets_cache, run_cli, run_main


@pytest.fixture(scope="module")
def subset(tmp_path_factory) -> Path:
    lines = (TINY_MATH_DATA_DIR / "test.jsonl").read_text().splitlines()[:60]
    path = tmp_path_factory.mktemp("data") / "subset.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_presets_lists_each_preset_with_its_recipe(capfd: pytest.CaptureFixture[str]) -> None:
    out = run_main(["presets"], capfd)
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert "lm evaluate" in rows["eval_tiny_math"] and "lm evaluate" in rows["eval_math"]


def test_unknown_preset_is_a_clear_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = run_main(["lm", "evaluate", str(tmp_path), "--preset", "nope"], capfd)
    assert out.returncode == 2 and "error: --preset nope: no such preset. Known presets:" in out.stderr


def test_evaluate_preset_plus_config_file_plus_overrides(
    tmp_path: Path, subset: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    user = tmp_path / "user.yaml"
    user.write_text("sampling:\n  max_gen_len: 40\n")
    out_dir = tmp_path / "eval"
    args = [
        "lm",
        "evaluate",
        str(out_dir),
        "--preset",
        "eval_tiny_math",
        "--config-file",
        str(user),
        "--no-rich",
        "--config",
        "sampling.num_samples=4",
        f"dataset.paths=[{subset}]",
        "common.seed=5",
    ]
    out = run_main(args, capfd)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((out_dir / "results.json").read_text())
    assert result["num_problems"] == 60 and result["num_samples"] == 4
    assert len(result["accuracy_per_sample_set"]) == 4
    # The shipped model solves some but not all problems (it is meant for RL signal).
    assert 0.2 < result["accuracy"] < 0.75
    assert 0 < result["accuracy_stderr"] < 0.2
    assert result["num_failed_rewards"] == 0
    assert 5 < result["mean_response_len"] <= 40
    assert (result["temperature"], result["top_p"]) == (0.6, 0.9)  # from the preset
    config = (out_dir / "config.yaml").read_text()
    assert "max_gen_len: 40" in config  # from the user's file, on top of the preset (48)
    generations = (out_dir / "generations.jsonl").read_text().splitlines()
    assert len(generations) == 240
    statuses = {json.loads(g)["status"] for g in generations}
    assert statuses <= {"correct", "incorrect"} and "correct" in statuses
    # fairseq2's metric recorder wrote the same numbers.
    metrics = [json.loads(l) for l in (out_dir / "metrics" / "eval" / "math.jsonl").read_text().splitlines()]
    assert metrics[-1]["Accuracy"] == pytest.approx(result["accuracy"])  # fairseq2 display name

    # Same seed, same samples, same numbers.
    again = tmp_path / "again"
    args[2] = str(again)
    assert run_main(args, capfd).returncode == 0
    assert (
        json.loads((again / "results.json").read_text())["accuracy_per_sample_set"] == result["accuracy_per_sample_set"]
    )


def test_evaluate_bad_file_exits_with_one_clear_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "What is 1 plus 1?", "answer": "2"}\n{"prompt": "What is 2 plus 2?"}\n')
    out = run_main(
        [
            "lm",
            "evaluate",
            str(tmp_path / "out"),
            "--preset",
            "eval_tiny_math",
            "--no-rich",
            "--config",
            f"dataset.paths=[{bad}]",
        ],
        capfd,
    )
    assert out.returncode == 2
    text = out.stdout + out.stderr
    assert f"{bad}:2: field 'answer': missing required field" in text
    assert "Traceback" not in text


def test_evaluate_empty_paths_names_the_key(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = run_main(["lm", "evaluate", str(tmp_path / "out"), "--preset", "eval_math", "--no-rich"], capfd)
    assert out.returncode == 2
    assert "dataset.paths is empty" in out.stdout + out.stderr


def test_evaluate_reads_sets_by_hub_name_and_by_folder(tmp_path: Path, subset: Path) -> None:
    """``dataset.paths`` names a set as the Hub does (read from a datasets cache the test
    builds: nothing can be downloaded here) and gives another as a save_to_disk folder;
    both are written as JSONL and evaluated like files."""
    import datasets

    tiny = [json.loads(line) for line in subset.read_text().splitlines()]
    hub_rows = [{"problem": r["prompt"], "answer": r["answer"]} for r in tiny[:8]]
    env = build_datasets_cache(tmp_path / "hf", "HuggingFaceH4/MATH-500", {"test": hub_rows})
    saved = tmp_path / "aime_like"
    datasets.Dataset.from_list([{"Problem": r["prompt"], "Answer": r["answer"]} for r in tiny[8:12]]).save_to_disk(
        str(saved)
    )
    out_dir = tmp_path / "eval"
    args = ["lm", "evaluate", str(out_dir), "--preset", "eval_tiny_math", "--no-rich", "--config"]
    args += ["sampling.num_samples=1", "sampling.max_gen_len=16", f"dataset.paths=[HuggingFaceH4/MATH-500,{saved}]"]
    out = run_cli(args, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((out_dir / "results.json").read_text())
    assert [(s["name"], s["num_problems"]) for s in result["sets"]] == [("MATH-500", 8), ("aime_like", 4)]
    prepared = out_dir / "eval_sets" / "MATH-500" / "MATH-500.jsonl"
    assert [json.loads(line)["prompt"] for line in prepared.read_text().splitlines()] == [r["prompt"] for r in tiny[:8]]
    assert result["data"] == ["HuggingFaceH4/MATH-500", str(saved)]
