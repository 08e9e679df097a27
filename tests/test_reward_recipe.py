"""``dataset.task=chat``: rollouts scored by a reward model in Ray actors, scalar rewards
paired best vs worst; a reward model that fails gives counted failures and skipped
steps, never zero rewards. Real Ray, real transformers model (the tiny one built here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fs2_semionline.errors import ConfigError
from fs2_semionline.recipes.preference_finetune import check_config
from fs2_semionline.tiny.build_reward_model import build_tiny_reward_model
from test_preference_finetune import run_recipe, tiny_config

INSTRUCTIONS = [f"Say something short about the number {n}." for n in range(16)]




@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory) -> Path:
    return build_tiny_reward_model(tmp_path_factory.mktemp("rm") / "tiny_rm", seed=0)


def chat_config(tmp_path: Path, reward_model_dir: Path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in INSTRUCTIONS))
    config = tiny_config(tmp_path)
    config.dataset.paths = [chat]
    config.dataset.task = "chat"
    config.reward.model = str(reward_model_dir)
    return config


def test_chat_needs_a_reward_model(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    config.dataset.task = "chat"
    with pytest.raises(ConfigError, match="dataset.task=chat needs reward.model"):
        check_config(config)


def test_chat_run_pairs_best_against_worst(ray_cluster, reward_model_dir: Path, tmp_path: Path) -> None:
    rows = run_recipe(chat_config(tmp_path, reward_model_dir), tmp_path / "out")
    assert [r["Step"] for r in rows] == [1, 2]
    for r in rows:
        assert "Reward (math)" not in r
        assert math.isfinite(r["Reward (chat)"]) and r["Reward (chat)"] != 0.0
        assert r["Failed Rewards"] == 0
        # Scalar rewards of 4 distinct rollouts are never all equal: every prompt pairs.
        assert r["Pairs"] == 4 and r["Skipped Prompts"] == 0 and r["Skipped Steps"] == 0
        assert r["Chosen Log-prob"] != r["Rejected Log-prob"]


def test_failed_reward_model_skips_steps_not_zero_rewards(ray_cluster, reward_model_dir: Path, tmp_path: Path) -> None:
    config = chat_config(tmp_path, reward_model_dir)
    config.reward.model_max_length = 8  # every prompt+response is longer: no reward can be computed
    rows = run_recipe(config, tmp_path / "out")
    assert [r["Step"] for r in rows] == [1, 2]  # the run goes on
    for r in rows:
        assert math.isnan(r["Reward (chat)"])  # no reward could be computed: NaN, not a 0
        assert r["Failed Rewards"] == 16 and r["Skipped Prompts"] == 4 and r["Skipped Steps"] == 1
