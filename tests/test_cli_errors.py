"""Bad input through the real CLI, one test per kind: exit code 2, one line that names
what is wrong, and no stack trace on stderr (the run's log file keeps it).

Most cases call the CLI's ``main`` in this process (``run_main``: the same code, its exit
code from ``SystemExit``); two run it as a subprocess (``run_cli``), which holds the
contract a shell sees: the exit code of the process and its stderr."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from fs2_semionline.core.paths import TINY_MATH_DATA_DIR

from helpers import run_cli, run_main

TRAIN = ["lm", "preference_finetune"]


def _base(tmp_path: Path, n: int = 16) -> list[str]:
    train = tmp_path / "train.jsonl"
    if not train.exists():
        train.write_text("\n".join((TINY_MATH_DATA_DIR / "train.jsonl").read_text().splitlines()[:n]) + "\n")
    return [
        "--no-rich",
        "--config",
        f"dataset.math_paths=[{train}]",
        "dataset.batch_size=4",
        "generator.num_rollouts=4",
        "generator.max_gen_len=16",
        "regime.num_steps=1",
        "regime.checkpoint_every_n_steps=1",
        "reward.math.num_workers=1",
        "common.metric_recorders.tensorboard.enabled=false",
    ]


def assert_one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, no traceback, and exactly one error line, which holds every needle."""
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    lines = [l for l in out.stderr.splitlines() if " ERROR: " in l or l.startswith("error: ")]
    assert len(lines) == 1, out.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def test_out_of_range_values_are_refused_before_anything_loads(tmp_path: Path) -> None:
    bad = {
        "dataset.batch_size": "0",
        "generator.temperature": "-1",
        "generator.top_p": "2",
        "generator.max_gen_len": "0",
        "generator.replicas": "0",
        "loss.config.beta": "-0.1",
        "reward.math.num_workers": "0",
        "validation.num_samples": "0",
    }
    out = run_cli([*TRAIN, str(tmp_path / "out"), *_base(tmp_path), *(f"{k}={v}" for k, v in bad.items())])
    line = assert_one_line_error(out, *(f"`{key}` is not valid" for key in bad))
    assert "must be in (0.0, 1.0], got 2.0" in line and "must be > 0, got -0.1" in line
    assert "Loading" not in out.stderr  # no model was loaded


def test_values_of_fairseq2_sections_and_relations_between_keys(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = run_main([*TRAIN, str(tmp_path / "lr"), *_base(tmp_path), "optimizer.config.lr=-1"], capfd)
    assert_one_line_error(out, "optimizer.config.lr must be >= 0, got -1.0")
    out = run_main(
        [*TRAIN, str(tmp_path / "grpo"), *_base(tmp_path), "loss.name=grpo", "generator.sync_every_n_steps=2"], capfd
    )
    assert_one_line_error(out, "loss.name=grpo", "generator.sync_every_n_steps=1")


@pytest.mark.parametrize(
    "override, needles",
    [
        ("regime.num_steps=2.5", ["regime.num_steps", "must be an integer", "2.5"]),
        ("dataset.math_paths=x.jsonl", ["dataset.math_paths", "must be a list", "write [x.jsonl]"]),
        ("foo.bar=1", ["unknown key(s) foo"]),
        ("generator.foo=1", ["generator: unknown key(s) foo"]),
        ("generator.temperature=abc", ["generator.temperature", "could not convert string to float: 'abc'"]),
        ("generator.backend=vlm", ["generator.backend", "vlm", "Supported values are local, vllm"]),
    ],
)
def test_values_fairseq2_cannot_parse_name_the_key(
    tmp_path: Path, override: str, needles: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    out = run_main([*TRAIN, str(tmp_path / "out"), *_base(tmp_path), override], capfd)
    assert_one_line_error(out, "configuration: ", *needles)


def test_loss_config_is_the_named_objectives(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """``loss.config`` is structured by the objective registry: the name alone switches
    objective, a key of another objective is named with its owners, an old key with its
    new place."""
    out = run_main([*TRAIN, str(tmp_path / "o1"), *_base(tmp_path), "loss.name=grpo", "--dump-config"], capfd)
    assert out.returncode == 0, out.stderr[-1000:]
    assert "kl_beta: 0.001" in out.stdout and "beta: 0.1" not in out.stdout
    args = ["loss.name=group_dpo", "loss.config.importance_sampling=truncated"]
    out = run_main([*TRAIN, str(tmp_path / "o2"), *_base(tmp_path), *args], capfd)
    assert_one_line_error(
        out, "loss.config.importance_sampling: not a key of loss.name=group_dpo (a key of loss.name=dpo, grpo)"
    )
    out = run_main([*TRAIN, str(tmp_path / "o3"), *_base(tmp_path), "loss.dpo.beta=0.2"], capfd)
    assert_one_line_error(out, "loss: unknown key(s) dpo (loss.dpo is now loss.config (loss.name=dpo or group_dpo")


def test_files_and_folders(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    out = run_main([*TRAIN, str(tmp_path / "o1"), "--config-file", str(tmp_path / "missing.yaml"), "--no-rich"], capfd)
    assert_one_line_error(out, "missing.yaml does not point to a configuration file")
    out = run_main(
        [*TRAIN, str(tmp_path / "o2"), "--preset", "tiny_online_dpo", "--config-file", "missing.yaml"], capfd
    )
    assert_one_line_error(out, "--config-file missing.yaml: no such file")
    out = run_main([*TRAIN, str(a_file), *_base(tmp_path)], capfd)
    assert_one_line_error(out, f"OUTPUT_DIR {a_file} is a file, not a folder")
    out = run_main([*TRAIN, "/proc/fs2_semionline_test", *_base(tmp_path)], capfd)  # unwritable, also for root
    assert_one_line_error(out, "OUTPUT_DIR /proc/fs2_semionline_test cannot be written")
    out = run_main(["data", "math500", str(a_file), "--out", str(a_file)], capfd)
    assert_one_line_error(out, f"--out {a_file} is a file, not a folder")


def test_unreachable_ray_cluster_is_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = run_main(
        [*TRAIN, str(tmp_path / "out"), *_base(tmp_path), "generator.backend=vllm", "ray.address=127.0.0.1:1"], capfd
    )
    assert_one_line_error(out, "ray.address=127.0.0.1:1: nothing answers at 127.0.0.1:1")


def test_training_counts_skipped_prompts_in_log_and_metrics(tmp_path: Path) -> None:
    base = _base(tmp_path, n=64)
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join([*lines, json.dumps({"prompt": "  ", "answer": "1"})]) + "\n")
    out = run_cli([*TRAIN, str(tmp_path / "out"), *base, "dataset.max_prompt_len=33"])  # prompts: 28 to 39 tokens
    assert out.returncode == 0, out.stderr[-3000:]
    (row,) = [json.loads(l) for l in (tmp_path / "out" / "metrics" / "data.jsonl").read_text().splitlines()]
    assert row["Step"] == 0 and row["num_read"] == 65 and row["skipped/empty_prompt"] == 1
    too_long = row["skipped/prompt_too_long"]
    assert 0 < too_long < 64 and row["num_used"] == 64 - too_long and row["num_skipped"] == too_long + 1
    assert f"training prompts: skipped {too_long + 1} of 65" in out.stderr


def test_data_for_less_than_one_sync_window_is_an_error(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # 16 prompts make 4 steps of 4, fewer than one window of s = 5 steps: no step could be taken.
    out = run_main(
        [
            *TRAIN,
            str(tmp_path / "out"),
            *_base(tmp_path),
            "generator.sync_every_n_steps=5",
            "regime.checkpoint_every_n_steps=5",
        ],
        capfd,
    )
    assert_one_line_error(out, "16 usable items make 4 step(s)", "fewer than one sync window of 5 steps")


def test_lone_surrogate_names_file_line_and_field(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok", "answer": "1"}\n{"prompt": "a \\ud800 b", "answer": "1"}\n')
    out = run_main([*TRAIN, str(tmp_path / "out"), *_base(tmp_path), f"dataset.math_paths=[{bad}]"], capfd)
    assert_one_line_error(out, f"{bad}:2: field 'prompt': not valid Unicode text: a lone surrogate '\\ud800'")


def test_resume_refuses_another_configuration_and_logs_harmless_changes(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    first = run_main([*TRAIN, str(run_dir), *_base(tmp_path)], capfd)
    assert first.returncode == 0, first.stderr[-3000:]
    config_yaml = (run_dir / "config.yaml").read_text()

    refused = run_main(
        [*TRAIN, str(run_dir), *_base(tmp_path), "loss.name=grpo", "common.seed=5", "regime.num_steps=2"], capfd
    )
    line = assert_one_line_error(refused, "holds a checkpoint (step 1) of another configuration")
    assert "common.seed (2 → 5)" in line and "loss.name ('dpo' → 'grpo')" in line and "num_steps" not in line
    assert (run_dir / "config.yaml").read_text() == config_yaml  # the folder's own config is back
    assert not (run_dir / "checkpoints" / "step_2").exists()

    allowed = run_main(
        [*TRAIN, str(run_dir), *_base(tmp_path), "regime.num_steps=2", "regime.checkpoint_every_n_steps=2"], capfd
    )
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert (
        "Resuming from step 1 with changed keys: regime.checkpoint_every_n_steps (1 → 2), regime.num_steps (1 → 2)"
        in allowed.stderr
    )
    steps = [json.loads(l)["Step"] for l in (run_dir / "metrics" / "train.jsonl").read_text().splitlines()]
    assert steps == [1, 2]


def test_steps_run_again_after_a_resume_appear_once(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A run whose last checkpoint is older than its last metric row (as after a kill;
    the SIGKILL test in test_preference_finetune.py does it for real) writes each step once."""
    run_dir = tmp_path / "run"
    base = _base(tmp_path)
    first = run_main([*TRAIN, str(run_dir), *base, "regime.num_steps=2"], capfd)
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.rmtree(run_dir / "checkpoints" / "step_2")  # as if killed after step 2's metrics, before its checkpoint
    with (run_dir / "metrics" / "train.jsonl").open("a") as f:
        f.write('{"Step": 3, "Loss": 0.5')  # and a row cut by the kill
    again = run_main([*TRAIN, str(run_dir), *base, "regime.num_steps=2"], capfd)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Dropped 2 metric rows of steps after 1" in again.stderr
    steps = [json.loads(l)["Step"] for l in (run_dir / "metrics" / "train.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
