"""``lm preference_finetune`` end to end on CPU: every method, config errors, faults, resume.

Real components throughout: fairseq2's Trainer, checkpoint manager and metric recorders,
the shipped tiny model, fairseq2's sampler, Math-Verify in its process pool.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fs2_semionline.core.errors import ConfigError
from fs2_semionline.core.paths import TINY_MATH_DATA_DIR
from fs2_semionline.data.batches import sync_steps
from fs2_semionline.recipes.checks import check_config

from helpers import local_tensors, run_recipe, tiny_config
from nan_forward_run import poisoned_process_batch


def test_sync_schedule() -> None:
    assert [s for s in range(1, 10) if sync_steps(s, 1)] == list(range(1, 10))
    assert [s for s in range(1, 10) if sync_steps(s, 4)] == [1, 5, 9]
    assert [s for s in range(1, 10) if sync_steps(s, None)] == [1]


def test_grpo_off_policy_is_refused(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, name="grpo")
    config.generator.sync_every_n_steps = 4
    with pytest.raises(ConfigError, match="on-policy.*sync_every_n_steps=1, got 4"):
        check_config(config)


def test_checkpoint_interval_must_fall_on_sync_boundaries(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    config.generator.sync_every_n_steps = 3
    config.regime.checkpoint_every_n_steps = 4
    with pytest.raises(ConfigError, match="multiple of generator.sync_every_n_steps=3"):
        check_config(config)


@pytest.mark.parametrize(
    ("label", "sync", "loss"),
    [
        ("offline_dpo", None, {"name": "dpo"}),
        ("semi_online_dpo", 2, {"name": "dpo"}),
        ("online_dpo_nll", 1, {"name": "dpo", "nll_scale": 1.0, "length_normalize": True}),
        ("group_dpo", 1, {"name": "group_dpo"}),
        ("grpo", 1, {"name": "grpo", "kl_beta": 0.001, "entropy_coef": 0.0001}),
        ("group_dpo_grpo", 1, {"name": "group_dpo_grpo", "alpha": 0.01}),
    ],
)
def test_every_method_trains_end_to_end(tmp_path: Path, label: str, sync: int | None, loss: dict[str, object]) -> None:
    config = tiny_config(tmp_path, **loss)
    config.generator.sync_every_n_steps = sync
    rows = run_recipe(config, tmp_path / label)
    assert [r["Step"] for r in rows] == [1, 2]
    for row in rows:
        assert 0.0 <= row["Reward"] <= 1.0
        assert row["Rollout Length"] > 0
        assert math.isfinite(row["Loss"]) or row["Skipped Steps"] == 1
    lags = [r["Generator Version Lag"] for r in rows]
    assert lags == ([0, 1] if sync in (None, 2) else [0, 0])
    if loss["name"] == "grpo":
        assert "KL (k3)" in rows[0] and "DPO Loss" not in rows[0]
    else:
        assert "Chosen Log-prob" in rows[0]
    if loss["name"] == "group_dpo_grpo":
        assert "GRPO Loss" in rows[0]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path / "model" / "pp_00" / "tp_00" / "sdp_00.pt", map_location="cpu", weights_only=True)
    return state.get("model", state)


def test_nonfinite_loss_skips_the_step_and_leaves_weights_unchanged(tmp_path: Path, tiny_model) -> None:
    # β passes validation (finite, > 0) but overflows float32: β · 0 margin = inf · 0 = NaN.
    config = tiny_config(tmp_path, name="dpo", beta=1e300)
    rows = run_recipe(config, tmp_path / "nan")
    assert [r["Skipped Steps"] for r in rows] == [1, 1]
    after = _weights(tmp_path / "nan" / "checkpoints" / "step_2")
    for name, value in tiny_model.state_dict().items():
        assert torch.equal(after[name], value), name


def test_a_non_finite_forward_leaves_weights_and_optimizer_state_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Finite weights, a NaN forward pass at step 2 (as in a bf16 overflow): its backward
    # is NaN on every parameter, and even zero gradients would move AdamW's state.
    from fs2_semionline.units.preference import PreferenceUnit

    monkeypatch.setattr(PreferenceUnit, "process_batch", poisoned_process_batch(rank=0, step=2, micro=0))
    config = tiny_config(tmp_path, name="dpo")
    config.regime.num_steps = 3
    config.regime.checkpoint_every_n_steps = 1
    config.generator.sync_every_n_steps = 1
    rows = run_recipe(config, tmp_path / "nan")
    assert [(r["Non-finite Losses"], r["Skipped Steps"]) for r in rows] == [(0, 0), (1, 1), (0, 0)]
    assert rows[2]["Pairs"] > 0 and math.isfinite(rows[2]["Loss"])  # the run goes on
    for kind in ("model", "optimizer"):
        before, voided, after = (
            local_tensors(tmp_path / "nan" / "checkpoints" / f"step_{n}" / kind / "pp_00" / "tp_00" / "sdp_00.pt")
            for n in (1, 2, 3)
        )
        assert len(before) > 0 and all(torch.equal(voided[k], v) for k, v in before.items()), kind
        assert any(not torch.equal(after[k], v) for k, v in voided.items()), kind


def test_all_degenerate_batch_is_a_counted_skip(tmp_path: Path, tiny_model) -> None:
    config = tiny_config(tmp_path, name="dpo")
    config.generator.max_gen_len = 1  # one token: no boxed answer anywhere, every prompt all-incorrect
    rows = run_recipe(config, tmp_path / "degenerate")
    assert [r["Skipped Prompts"] for r in rows] == [4, 4]
    assert [r["Skipped Steps"] for r in rows] == [1, 1]
    after = _weights(tmp_path / "degenerate" / "checkpoints" / "step_2")
    assert all(torch.equal(after[k], v) for k, v in tiny_model.state_dict().items())


RESUME_ARGS = [
    "--no-rich",
    "--config",
    "dataset.batch_size=4",
    "generator.num_rollouts=4",
    "generator.max_gen_len=32",
    "regime.checkpoint_every_n_steps=2",
    "regime.num_steps=6",
    "optimizer.config.lr=1e-4",
    "reward.math.num_workers=1",
    "common.metric_recorders.tensorboard.enabled=false",
]
_TIMING = {
    "Time",
    "Data Time",
    "Compute Time",
    "Lapse Time",
    "Total Time",
    "Wall Time",
    "Generate Time (s)",
    "Reward Time (s)",
    "Forward + Loss Time (s)",
    "Sync Time (s)",
}


def _launch(out_dir: Path, train: Path, sync: str) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "fs2_semionline.recipes.preference_finetune",
        str(out_dir),
        *RESUME_ARGS,
        f"dataset.math_paths=[{train}]",
        f"generator.sync_every_n_steps={sync}",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _per_step(out_dir: Path) -> dict[int, dict[str, object]]:
    rows = [json.loads(l) for l in (out_dir / "metrics" / "train.jsonl").read_text().splitlines()]
    steps = [int(r["Step"]) for r in rows]
    assert len(steps) == len(set(steps)), steps  # each step once, also after a resume
    return {int(r["Step"]): {k: v for k, v in r.items() if k not in _TIMING} for r in rows}


@pytest.mark.slow
@pytest.mark.parametrize("sync", ["2", "null"])  # semi-online, and offline (the seed generator)
def test_sigkilled_run_resumes_to_identical_metrics(tmp_path: Path, sync: str) -> None:
    tiny_config(tmp_path)  # writes the small train file
    train = tmp_path / "train.jsonl"
    whole = _launch(tmp_path / "whole", train, sync)  # the two runs side by side: neither reads the other's folder
    killed = _launch(tmp_path / "killed", train, sync)
    assert killed.stdout is not None
    for line in killed.stdout:
        if "Checkpoint at step 4 saved" in line:
            os.kill(killed.pid, signal.SIGKILL)
            break
    killed.wait(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "checkpoints" / "step_6").exists()
    whole_output = whole.communicate(timeout=900)[0]
    assert whole.returncode == 0, whole_output[-3000:]

    resumed = _launch(tmp_path / "killed", train, sync)
    output = resumed.communicate(timeout=900)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert "Restoring training from the last checkpoint at step 4" in output
    expected, got = _per_step(tmp_path / "whole"), _per_step(tmp_path / "killed")
    assert sorted(got) == sorted(expected) == [1, 2, 3, 4, 5, 6]
    for step in (5, 6):
        assert got[step] == expected[step], step


def _pairs_file(tmp_path: Path, n: int = 16) -> Path:
    rows = [json.loads(l) for l in (TINY_MATH_DATA_DIR / "train.jsonl").read_text().splitlines()[:n]]
    path = tmp_path / "pairs.jsonl"
    with path.open("w") as f:
        for r in rows:
            wrong = r["solution"].replace("\\boxed{", "\\boxed{1")  # a different final answer
            f.write(json.dumps({"prompt": r["prompt"], "chosen": r["solution"], "rejected": wrong}) + "\n")
    return path


def test_offline_dpo_from_a_pairs_file(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, name="dpo")
    config.generator.sync_every_n_steps = None
    config.dataset.pairs_path = _pairs_file(tmp_path)
    rows = run_recipe(config, tmp_path / "pairs")
    assert [r["Step"] for r in rows] == [1, 2]
    assert rows[0]["Pairs"] == 4 and "Reward" not in rows[0]
    assert rows[0]["Loss"] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference at step 1
    assert rows[1]["Chosen Log-prob"] > rows[1]["Rejected Log-prob"]


def test_pairs_file_with_a_missing_field_names_line_and_field(tmp_path: Path) -> None:
    from fs2_semionline.core.errors import DataFileError

    path = _pairs_file(tmp_path, n=5)
    lines = path.read_text().splitlines()
    broken = json.loads(lines[2])
    del broken["rejected"]
    lines[2] = json.dumps(broken)
    path.write_text("\n".join(lines) + "\n")
    config = tiny_config(tmp_path, name="dpo")
    config.generator.sync_every_n_steps = None
    config.dataset.pairs_path = path
    with pytest.raises(DataFileError, match=rf"{path}:3: field 'rejected': missing required field"):
        run_recipe(config, tmp_path / "broken")


def test_pairs_file_needs_offline_dpo(tmp_path: Path) -> None:
    config = tiny_config(tmp_path, name="grpo")
    config.dataset.pairs_path = tmp_path / "pairs.jsonl"
    with pytest.raises(ConfigError, match="needs loss.name=dpo"):
        check_config(config)


def pipeline(items, config, rank: int, size: int):
    from fs2_semionline.data.train_data import train_pipeline

    return train_pipeline(
        items,
        config.dataset,
        window=config.generator.sync_every_n_steps or 1,
        num_micro=config.trainer.grad_accumulation.num_batches,
        seed=config.common.seed,
        dp_rank=rank,
        dp_size=size,
    )


def test_data_parallel_ranks_read_disjoint_equal_shards(tmp_path: Path) -> None:
    from fs2_semionline.data.jsonl import PromptExample

    config = tiny_config(tmp_path)
    config.dataset.batch_size = 4  # global: 2 prompts per rank and step
    items = [PromptExample(f"p{i}", f"p{i}", [i], "1", "math", f"f:{i}") for i in range(11)]
    shards = [[e.prompt for b in pipeline(items, config, rank, 2) for e in b.examples] for rank in range(2)]
    assert len(shards[0]) == len(shards[1]) == 4  # 5 each, cut to whole batches of 2
    assert not set(shards[0]) & set(shards[1])


def test_global_batch_is_split_over_ranks_and_micro_batches(tmp_path: Path) -> None:
    from fs2_semionline.core.errors import ConfigError
    from fs2_semionline.data.jsonl import PromptExample

    config = tiny_config(tmp_path)
    config.dataset.batch_size = 8
    config.generator.sync_every_n_steps = 2
    config.trainer.grad_accumulation.num_batches = 2
    items = [PromptExample(f"p{i}", f"p{i}", [i], "1", "math", f"f:{i}") for i in range(16)]
    batches = list(pipeline(items, config, 1, 2))  # rank 1 of 2: 8 prompts, 4 per step
    assert [(b.index, b.micro, len(b.step_examples), len(b.examples)) for b in batches] == [
        (0, 0, 4, 2),
        (0, 1, 4, 2),
        (1, 0, 4, 2),
        (1, 1, 4, 2),
    ]  # one window of s = 2 steps, each step in two micro-batches of 2 prompts
    assert [e.prompt for b in batches[:2] for e in b.examples] == [e.prompt for e in batches[0].step_examples]
    assert batches[0].window == batches[3].window
    config.dataset.batch_size = 6
    with pytest.raises(
        ConfigError, match=r"dataset.batch_size=6 .* multiple of data-parallel size 2 x .*num_batches 2 = 4"
    ):
        list(pipeline(items, config, 0, 2))


def test_mismatch_is_noise_on_sync_steps_and_truncated_is_scales_the_loss(tmp_path: Path) -> None:
    """s = 2, DPO with truncated IS at cap 0.5. Step 1 trains on rollouts of the weights
    it trains (|δ| is kernel noise, every ρ ≈ 1 is cut to 0.5, and the policy equals the
    reference, so each pair's loss is 0.5 · ln 2); step 2's rollouts come from step 1's
    generator, one update behind."""
    config = tiny_config(tmp_path, importance_sampling="truncated", importance_cap=0.5)
    config.generator.sync_every_n_steps = 2
    rows = run_recipe(config, tmp_path / "out")
    first, second = rows
    assert first["Rollout |Δ log-prob| (max)"] < 1e-4
    assert abs(first["Sequence log IS Ratio (mean)"]) < 1e-4
    assert first["IS Weights Truncated"] == 1.0
    assert first["Loss"] == pytest.approx(0.5 * math.log(2), abs=1e-5)
    assert second["Rollout |Δ log-prob| (mean)"] > 1e-3
    assert second["Sequence log IS Ratio (max)"] > second["Sequence log IS Ratio (min)"]


def test_generator_options_that_cannot_apply_are_refused(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    config.generator.colocate = True  # with the local backend
    with pytest.raises(ConfigError, match="colocate=true .* needs generator.backend=vllm"):
        check_config(config)
    config = tiny_config(tmp_path, importance_sampling="truncated")
    config.generator.temperature = 0.7  # fairseq2's sampler scores the tempered distribution
    with pytest.raises(ConfigError, match="needs the generator's log-probs"):
        check_config(config)
    config = tiny_config(tmp_path)
    config.validation.sampler = "generator"  # the local backend has no vLLM to validate through
    with pytest.raises(ConfigError, match="validation.sampler=generator needs generator.backend=vllm"):
        check_config(config)
