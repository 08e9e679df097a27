"""``dataset.chat_paths``: rollouts scored by a reward model in Ray actors, scalar rewards
paired best vs worst; a reward model that fails gives counted failures and skipped
steps, never zero rewards. Real Ray, real transformers model (the tiny one built here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fs2_semionline.core.errors import ConfigError
from fs2_semionline.recipes.checks import check_config
from fs2_semionline.tiny.build_reward_model import build_tiny_reward_model

from helpers import run_recipe, tiny_config

INSTRUCTIONS = [f"Say something short about the number {n}." for n in range(16)]


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory) -> Path:
    return build_tiny_reward_model(tmp_path_factory.mktemp("rm") / "tiny_rm", seed=0)


def chat_config(tmp_path: Path, reward_model_dir: Path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in INSTRUCTIONS))
    config = tiny_config(tmp_path)
    config.dataset.math_paths = []
    config.dataset.chat_paths = [chat]
    config.reward.model.name = str(reward_model_dir)
    return config


def test_chat_needs_a_reward_model(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    config.dataset.chat_paths = config.dataset.math_paths
    with pytest.raises(ConfigError, match=r"dataset.chat_paths are scored by the reward model: set reward.model.name"):
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
    config.reward.model.max_length = 8  # every prompt+response is longer: no reward can be computed
    rows = run_recipe(config, tmp_path / "out")
    assert [r["Step"] for r in rows] == [1, 2]  # the run goes on
    for r in rows:
        assert math.isnan(r["Reward (chat)"])  # no reward could be computed: NaN, not a 0
        assert r["Failed Rewards"] == 16 and r["Skipped Prompts"] == 4 and r["Skipped Steps"] == 1


def test_mixed_batches_route_each_prompt_to_its_reward(ray_cluster, reward_model_dir: Path, tmp_path: Path) -> None:
    """§3.3: math and chat prompts in the same batches; math → Math-Verify (0/1), chat → the
    reward model (scalar); metrics per task."""
    config = chat_config(tmp_path, reward_model_dir)
    config.dataset.math_paths = [tmp_path / "train.jsonl"]  # the 64 math prompts tiny_config wrote
    config.dataset.chat_fraction = 0.2  # 16 chat prompts beside 64 math ones
    config.dataset.batch_size = 8
    config.regime.num_steps = 3
    config.regime.checkpoint_every_n_steps = None
    rows = run_recipe(config, tmp_path / "out")
    assert [r["Step"] for r in rows] == [1, 2, 3]
    seen_chat = [r for r in rows if not math.isnan(r["Reward (chat)"])]
    assert seen_chat, "no chat prompt in 3 batches of 8 drawn from 64 math + 16 chat"
    for r in rows:
        assert 0.0 <= r["Reward (math)"] <= 1.0 and r["Failed Rewards"] == 0
    for r in seen_chat:
        assert r["Reward (chat)"] not in (0.0, 1.0)  # a scalar reward-model score, not Math-Verify's


def test_mix_keeps_the_requested_share_of_chat_prompts() -> None:
    from fs2_semionline.data.jsonl import PromptExample
    from fs2_semionline.data.train_data import mix_tasks

    def ex(task: str, i: int) -> PromptExample:
        return PromptExample(f"{task}{i}", f"{task}{i}", [i], "1" if task == "math" else None, task, f"f:{i}")

    math_ex = [ex("math", i) for i in range(100)]
    chat_ex = [ex("chat", i) for i in range(100)]
    mixed = mix_tasks(math_ex, chat_ex, 1 / 3, seed=0)  # the paper's 100k + 50k
    assert sum(e.task == "chat" for e in mixed) == 50 and sum(e.task == "math" for e in mixed) == 100
    mixed = mix_tasks(math_ex, chat_ex[:10], 0.5, seed=0)  # too few chat prompts: math is subsampled
    assert sum(e.task == "chat" for e in mixed) == 10 and sum(e.task == "math" for e in mixed) == 10
    assert mix_tasks(math_ex, chat_ex, 1 / 3, seed=0) == mix_tasks(math_ex, chat_ex, 1 / 3, seed=0)
    assert len(mix_tasks(math_ex, chat_ex, None, seed=0)) == 200
