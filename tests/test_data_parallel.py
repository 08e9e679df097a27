"""``lm preference_finetune`` on two data-parallel ranks (torchrun, a real Gloo gang on CPU).

Each rank reads its own shard of the prompts; rank 0's generator answers both; metrics are
summed over ranks; validation spreads an odd number of prompts over the two ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fs2_semionline.core.paths import TINY_MATH_DATA_DIR


@pytest.mark.slow
def test_two_ranks_train_and_validate(tmp_path: Path) -> None:
    from fs2_semionline.generation.pg_sync import free_port

    train = tmp_path / "train.jsonl"
    train.write_text("\n".join((TINY_MATH_DATA_DIR / "train.jsonl").read_text().splitlines()[:64]) + "\n")
    valid = tmp_path / "valid.jsonl"
    valid.write_text("\n".join((TINY_MATH_DATA_DIR / "valid.jsonl").read_text().splitlines()[:5]) + "\n")
    out = tmp_path / "dp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        "-m",
        "fs2_semionline.recipes.preference_finetune",
        str(out),
        "--no-rich",
        "--config",
        f"dataset.math_paths=[{train}]",
        "dataset.batch_size=8",
        "generator.backend=local",
        "generator.num_rollouts=4",
        "generator.max_gen_len=32",
        "optimizer.config.lr=1e-4",
        "regime.num_steps=2",
        "regime.checkpoint_every_n_steps=2",
        "regime.validate_every_n_steps=2",
        f"validation.math_paths=[{valid}]",
        "validation.max_batch_size=2",
        "reward.math.num_workers=1",
        "common.metric_recorders.tensorboard.enabled=false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "Running on 2 process(es)" in run.stdout + run.stderr
    rows = [json.loads(l) for l in (out / "metrics" / "train.jsonl").read_text().splitlines()]
    assert [r["Step"] for r in rows] == [1, 2]
    for r in rows:  # one DPO pair per usable prompt: a global batch of 8 = 2 ranks x 4 prompts
        assert r["Pairs"] + r["Skipped Prompts"] == 8
    (v,) = [json.loads(l) for l in (out / "metrics" / "valid.jsonl").read_text().splitlines()]
    assert v["Step"] == 2 and 0.0 <= v["Accuracy (math)"] <= 1.0 and v["Failed Rewards"] == 0
    assert (out / "checkpoints" / "step_2").is_dir()
