"""The tiny non-verifiable task end to end: a reward model trained on fairseq2's Trainer,
exported as a Hugging Face sequence classifier, that ranks answers as the synthetic
preference does; and a mixed math + chat run with it and with Math-Verify.

Real components: fairseq2's Trainer, its HF converter, transformers, Ray actors for the
reward model, Math-Verify, the shipped ``tiny_mixed_sft`` policy and ``tiny_chat_rm``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from fs2_semionline.core.paths import TINY_CHAT_DATA_DIR, TINY_CHAT_DIR, TINY_MATH_DATA_DIR, TINY_MATH_DIR
from fs2_semionline.data import chat_task
from fs2_semionline.data.templates import EOT, non_verifiable_prompt
from fs2_semionline.rewards.reward_model import RewardModel, RewardModelSpec, resolve_reward_model

from helpers import run_main

pytestmark = pytest.mark.slow  # process and engine start-ups: run first (conftest.py)


def test_exported_reward_model_scores_what_training_scored(tiny_model, tiny_tokenizer, tmp_path: Path) -> None:
    """The reward the Bradley–Terry unit trains (a logit at the last token, fairseq2) is the
    score transformers computes from the exported folder."""
    import copy

    from fs2_semionline.glue.extension import tiny_math_config
    from fs2_semionline.glue.hf_export import export_hf_model
    from fs2_semionline.tiny.train_reward_model import REWARD_TOKEN, collate_pairs, sequence_rewards

    model = copy.deepcopy(tiny_model)
    with torch.no_grad():  # a value head no other row shares
        torch.manual_seed(0)
        model.final_proj.weight[REWARD_TOKEN] = torch.randn(256) * 0.1
    out = export_hf_model(
        model.state_dict(),
        tiny_math_config(),
        tiny_tokenizer.vocab_info,
        tmp_path / "rm",
        tokenizer_dir=TINY_MATH_DIR / "tokenizer",
        reward_token=REWARD_TOKEN,
    )
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config["id2label"]) == 1
    prompts = ["Write about Ana and the coins. Use no numbers.", "Tell me about Ben."]
    responses = ["Ana likes the coins.", "Ben has 12 stamps. Ben likes the stamps."]
    encoder = tiny_tokenizer.create_raw_encoder()
    ids = [encoder(non_verifiable_prompt(p) + r + EOT).tolist() for p, r in zip(prompts, responses)]
    with torch.inference_mode():
        expected = sequence_rewards(model.eval(), collate_pairs([(ids[0], ids[1])], pad_idx=5)).tolist()
    got = RewardModel(RewardModelSpec(path=str(out))).score(prompts, responses)
    assert got == pytest.approx(expected, abs=1e-4)


def test_trained_reward_model_ranks_answers_as_the_preference_does() -> None:
    """On answers to *test* prompts it never saw: pairs ranked as ``quality`` ranks them,
    and a higher mean score at every higher quality level."""
    spec = resolve_reward_model("tiny_chat_rm")  # the card's relative path, resolved
    assert Path(spec.path) == (TINY_CHAT_DIR / "reward_model").resolve()
    model = RewardModel(RewardModelSpec(path=spec.path, batch_size=64))
    rng = random.Random(7)
    prompts = chat_task.read_prompts(TINY_CHAT_DATA_DIR / "test.jsonl")
    answers = [(p, chat_task.sample_response(rng, p)) for p in prompts for _ in range(4)]
    scores = model.score([p.prompt for p, _ in answers], [a for _, a in answers])
    assert all(s is not None for s in scores)
    qualities = [chat_task.quality(p, a) for p, a in answers]
    by_level = {q: [s for s, qq in zip(scores, qualities) if qq == q] for q in sorted(set(qualities))}
    means = [sum(v) / len(v) for v in by_level.values()]
    assert means == sorted(means), dict(zip(by_level, means))
    right = total = 0
    for i in range(0, len(answers), 4):  # every pair of answers to one prompt with different quality
        for j in range(i, i + 4):
            for k in range(j + 1, i + 4):
                if qualities[j] != qualities[k]:
                    total += 1
                    right += (scores[j] > scores[k]) == (qualities[j] > qualities[k])  # type: ignore[operator]
    assert total > 500 and right / total > 0.95, (right, total)  # build.json: 1.00 on 400 validation pairs


def test_mixed_run_with_math_verify_and_the_tiny_reward_model(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The ``tiny_mixed_online_dpo`` preset, shortened: math and tiny chat prompts in the
    same batches, each rewarded by its own scorer; validation on both picks a checkpoint."""
    math_valid = tmp_path / "valid_math.jsonl"
    math_valid.write_text("\n".join((TINY_MATH_DATA_DIR / "valid.jsonl").read_text().splitlines()[:8]) + "\n")
    chat_valid = tmp_path / "valid_chat.jsonl"
    chat_valid.write_text("\n".join((TINY_CHAT_DATA_DIR / "valid.jsonl").read_text().splitlines()[:8]) + "\n")
    out = tmp_path / "mixed"
    cmd = [
        "lm",
        "preference_finetune",
        str(out),
        "--preset",
        "tiny_mixed_online_dpo",
        "--no-rich",
        "--config",
        "generator.backend=local",
        "regime.num_steps=4",
        "dataset.batch_size=8",
        "generator.num_rollouts=4",
        "regime.checkpoint_every_n_steps=2",
        "regime.validate_every_n_steps=2",
        f"validation.math_paths=[{math_valid}]",
        f"validation.chat_paths=[{chat_valid}]",
        "reward.math.num_workers=1",
        "ray.num_cpus=2",
        "common.metric_recorders.tensorboard.enabled=false",
    ]
    run = run_main(cmd, capfd)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    rows = [json.loads(l) for l in (out / "metrics" / "train.jsonl").read_text().splitlines()]
    assert [r["Step"] for r in rows] == [1, 2, 3, 4]
    chat_rewards = [r["Reward (chat)"] for r in rows if r["Reward (chat)"] == r["Reward (chat)"]]  # not NaN
    assert len(chat_rewards) >= 2  # a third of the prompts are chat: 4 batches of 8 hold some
    assert all(0.0 <= r["Reward (math)"] <= 1.0 and r["Failed Rewards"] == 0 for r in rows)
    assert all(r not in (0.0, 1.0) for r in chat_rewards)  # the reward model's scalar, not Math-Verify's

    valid = [json.loads(l) for l in (out / "metrics" / "valid.jsonl").read_text().splitlines()]
    assert [r["Step"] for r in valid] == [2, 4]
    for r in valid:  # the preset's length_normalization: none
        assert r["Length-normalised Reward (chat)"] == r["Reward (chat)"]
        assert r["Validation Score"] == pytest.approx((r["Accuracy (math)"] + r["Reward (chat)"]) / 2, rel=1e-9)
    from fs2_semionline.runs.checkpoints import best_scored_step

    best = max(valid, key=lambda r: (r["Validation Score"], r["Step"]))["Step"]
    assert best_scored_step(out) == best
