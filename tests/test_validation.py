"""Validation and checkpoint selection (§3.2, §3.3): math accuracy, the length-normalised
reward-model reward, their mean as fairseq2's score metric, and the best checkpoints kept.

Real components: fairseq2's Trainer, validator and checkpoint manager, the shipped tiny
model, Math-Verify, a transformers reward model in a Ray actor. The numbers at step 0 are
recomputed independently (same seed, the sampler, Math-Verify item by item, the reward
model in this process) and must match.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fs2_semionline.core.errors import ConfigError
from fs2_semionline.core.paths import TINY_MATH_DATA_DIR
from fs2_semionline.data.templates import non_verifiable_prompt, verifiable_prompt
from fs2_semionline.eval.chat_eval import length_normalised_reward
from fs2_semionline.recipes.checks import check_config
from fs2_semionline.tiny.build_reward_model import build_tiny_reward_model
from fs2_semionline.units.validation import validation_score, validation_seed

from helpers import run_recipe, tiny_config

CHAT = [
    "Tell me about Ana and the apples. Use no numbers.",
    "Write about Ben and the coins. Use 2 sentences.",
    "Tell me about Dev and the shells. Use the number 12.",
    "Write about Emma and the books. Use 1 sentences.",
]


def test_length_normalisation_and_score_by_hand() -> None:
    assert length_normalised_reward(3.0, 12.0, "mean_ratio") == 0.25
    assert length_normalised_reward(-3.0, 12.0, "mean_ratio") == -0.25
    assert length_normalised_reward(-3.0, 12.0, "none") == -3.0
    assert math.isnan(length_normalised_reward(1.0, 0.0, "mean_ratio"))
    values = {"accuracy": 0.5, "reward_len_norm": 0.25}
    assert validation_score(values, frozenset({"math", "chat"})) == 0.375  # (0.5 + 0.25) / 2, §3.3
    assert validation_score(values, frozenset({"math"})) == 0.5
    assert validation_score(values, frozenset({"chat"})) == 0.25
    # A task with no measurable reward never wins a checkpoint selection.
    assert validation_score({"accuracy": 0.5, "reward_len_norm": math.nan}, frozenset({"math", "chat"})) == -math.inf


def test_validation_needs_a_schedule_and_score_needs_sets(tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    config.validation.math_paths = [TINY_MATH_DATA_DIR / "valid.jsonl"]
    with pytest.raises(ConfigError, match="regime.validate_every_n_steps is null"):
        check_config(config)
    config = tiny_config(tmp_path)
    config.regime.score_metric = "score"  # refused before any model loads
    with pytest.raises(ConfigError, match="regime.score_metric=score selects checkpoints on validation sets"):
        run_recipe(config, tmp_path / "no_sets")
    config = tiny_config(tmp_path)
    config.validation.chat_paths = [tmp_path / "chat.jsonl"]
    config.regime.validate_every_n_steps = 1
    with pytest.raises(ConfigError, match="validation.chat_paths are scored by the reward model"):
        check_config(config)


@pytest.fixture(scope="module")
def reward_model_dir(tmp_path_factory) -> Path:
    return build_tiny_reward_model(tmp_path_factory.mktemp("rm") / "tiny_rm", seed=0)


def _valid_files(tmp_path: Path) -> tuple[Path, Path]:
    math_file = tmp_path / "valid_math.jsonl"
    math_file.write_text("\n".join((TINY_MATH_DATA_DIR / "valid.jsonl").read_text().splitlines()[:6]) + "\n")
    chat_file = tmp_path / "valid_chat.jsonl"
    chat_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in CHAT))
    return math_file, chat_file


def _independent_step0(
    tiny_model,
    tiny_tokenizer,
    math_file: Path,
    chat_file: Path,
    rm_dir: Path,
    batch_size: int,
    num_samples: int,
    max_gen_len: int,
    seed: int,
) -> dict[str, float]:
    """What validation before training must report, computed without the unit."""
    from fs2_semionline.generation.local import sample_completions
    from fs2_semionline.generation.protocol import SamplingConfig
    from fs2_semionline.rewards import verify_math
    from fs2_semionline.rewards.reward_model import RewardModel, RewardModelSpec

    encoder = tiny_tokenizer.create_raw_encoder()
    rows = [json.loads(l) for l in math_file.read_text().splitlines()]
    items = [(verifiable_prompt(r["prompt"]), r["answer"], r["prompt"]) for r in rows] + [
        (non_verifiable_prompt(p), None, p) for p in CHAT
    ]
    sampling = SamplingConfig(0.6, 0.9, max_gen_len)
    completions = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        torch.manual_seed(validation_seed(seed, start // batch_size))
        completions += sample_completions(
            tiny_model, tiny_tokenizer, [encoder(t).tolist() for t, _, _ in chunk], num_samples, sampling
        )
    math_rewards = [
        verify_math(c.text, a).reward for (_, a, _), cs in zip(items, completions) if a is not None for c in cs
    ]
    chat = [(user, c) for (_, a, user), cs in zip(items, completions) if a is None for c in cs]  # the user's text
    rm = RewardModel(RewardModelSpec(path=str(rm_dir)))
    chat_rewards = rm.score([t for t, _ in chat], [c.text for _, c in chat])
    mean_len = sum(len(c.token_ids) for _, c in chat) / len(chat)
    return {
        "accuracy": sum(math_rewards) / len(math_rewards),
        "reward": sum(chat_rewards) / len(chat_rewards),
        "len": mean_len,
    }


def test_validation_scores_and_keeps_the_best_checkpoint(
    ray_cluster, reward_model_dir: Path, tiny_model, tiny_tokenizer, tmp_path: Path
) -> None:
    math_file, chat_file = _valid_files(tmp_path)
    config = tiny_config(tmp_path)
    config.reward.model.name = str(reward_model_dir)
    config.validation.math_paths = [math_file]
    config.validation.chat_paths = [chat_file]
    config.validation.num_samples = 2
    config.validation.max_batch_size = 4
    config.regime.num_steps = 3
    config.regime.validate_at_start = True
    config.regime.validate_every_n_steps = 1
    config.regime.checkpoint_every_n_steps = 1
    config.regime.score_metric = "score"
    config.regime.keep_best_n_checkpoints = 1
    out = tmp_path / "out"
    run_recipe(config, out)

    rows = [json.loads(l) for l in (out / "metrics" / "valid.jsonl").read_text().splitlines()]
    assert [r["Step"] for r in rows] == [0, 1, 2, 3]
    for r in rows:
        acc, reward, length = r["Accuracy (math)"], r["Reward (chat)"], r["Response Length (chat)"]
        assert r["Length-normalised Reward (chat)"] == pytest.approx(reward / length, rel=1e-9)
        assert r["Validation Score"] == pytest.approx((acc + reward / length) / 2, rel=1e-9)
        assert r["Failed Rewards"] == 0

    expected = _independent_step0(
        tiny_model,
        tiny_tokenizer,
        math_file,
        chat_file,
        reward_model_dir,
        batch_size=4,
        num_samples=2,
        max_gen_len=32,
        seed=config.common.seed,
    )
    assert rows[0]["Accuracy (math)"] == pytest.approx(expected["accuracy"], abs=1e-12)
    assert rows[0]["Reward (chat)"] == pytest.approx(expected["reward"], abs=1e-5)
    assert rows[0]["Response Length (chat)"] == pytest.approx(expected["len"], abs=1e-9)

    # fairseq2 wrote each checkpoint's score and kept only the best one (and the last).
    scores = {
        s: float((out / "checkpoints" / "scores" / f"step_{s}.txt").read_text())
        for s in (1, 2, 3)
        if (out / "checkpoints" / "scores" / f"step_{s}.txt").exists()
    }
    by_step = {int(r["Step"]): r["Validation Score"] for r in rows}
    best = max((1, 2, 3), key=lambda s: (by_step[s], s))  # fairseq2 breaks ties by the later step
    assert best in scores and scores[best] == pytest.approx(by_step[best], rel=1e-6)
    kept = sorted(int(p.name.removeprefix("step_")) for p in (out / "checkpoints").glob("step_*"))
    assert best in kept and set(kept) <= {best, 3}
