"""``lm evaluate`` with ``dataset.task=chat``: answers exported for AlpacaEval 2.0 and
Arena-Hard, with the input's ids carried through; bad lines are FILE:LINE errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fs2_semionline.core.errors import DataFileError
from fs2_semionline.data.encoding import TextEncoder
from fs2_semionline.eval.chat_eval import read_chat_ids
from fs2_semionline.eval.sets import load_eval_sets

from helpers import run_main

ALPACA_KEYS = {"instruction", "output", "generator", "dataset"}
ARENA_KEYS = {"question_id", "answer_id", "model_id", "choices", "tstamp"}


def _write(path: Path, records: list[dict[str, object] | str]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_cli_exports_both_judges_formats(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    alpaca = _write(
        tmp_path / "alpaca.jsonl",
        [
            {"prompt": "What is 2 plus 3?", "dataset": "helpful_base", "extra": [1]},
            {"prompt": "Name a prime number."},
        ],
    )
    arena = _write(
        tmp_path / "arena.jsonl",
        [
            {"prompt": "What is 4 plus 4?", "question_id": "328c149ed45a41c0"},
            {"prompt": "What is 7 plus 1?", "id": 17},
        ],
    )
    out_dir = tmp_path / "chat"
    cmd = [
        "lm",
        "evaluate",
        str(out_dir),
        "--no-rich",
        "--config",
        "dataset.task=chat",
        f"dataset.paths=[{alpaca},{arena}]",
        "sampling.max_gen_len=12",
        "export.model_name=tiny-chat",
    ]
    out = run_main(cmd, capfd)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    result = json.loads((out_dir / "results.json").read_text())
    # Chat defaults: one sample per prompt at the paper's evaluation sampling.
    assert (result["task"], result["num_samples"], result["temperature"], result["top_p"]) == ("chat", 1, 0.6, 0.9)
    assert result["num_prompts"] == 4 and [s["num_prompts"] for s in result["sets"]] == [2, 2]
    generations = [json.loads(l) for l in (out_dir / "generations.jsonl").read_text().splitlines()]
    assert len(generations) == 4

    outputs = json.loads((out_dir / "alpaca_eval.json").read_text())
    assert isinstance(outputs, list) and all(set(o) == ALPACA_KEYS for o in outputs)
    assert [o["instruction"] for o in outputs] == [g["prompt"] for g in generations]
    assert [o["output"] for o in outputs] == [g["response"] for g in generations]
    assert {o["generator"] for o in outputs} == {"tiny-chat"}
    assert [o["dataset"] for o in outputs] == ["helpful_base", "alpaca", "arena", "arena"]  # default: file stem

    answers = [json.loads(l) for l in (out_dir / "arena_hard.jsonl").read_text().splitlines()]
    assert all(set(a) == ARENA_KEYS for a in answers)
    assert [a["question_id"] for a in answers] == ["alpaca:1", "alpaca:2", "328c149ed45a41c0", 17]
    assert {a["model_id"] for a in answers} == {"tiny-chat"} and len({a["answer_id"] for a in answers}) == 4
    for answer, gen in zip(answers, generations):
        assert answer["choices"] == [
            {"index": 0, "turns": [{"content": gen["response"], "token_len": gen["num_tokens"]}]}
        ]
        assert isinstance(answer["tstamp"], float)

    # Several sets: each also gets its own pair of files, as if run alone.
    arena_only = [json.loads(l) for l in (out_dir / "sets" / "arena" / "arena_hard.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in arena_only] == ["328c149ed45a41c0", 17]
    assert len(json.loads((out_dir / "sets" / "alpaca" / "alpaca_eval.json").read_text())) == 2


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"question_id": "q2"}, "field 'prompt': missing required field"),
        ({"prompt": "Hi", "question_id": ["q2"]}, "field 'question_id': expected a string or an integer, got list"),
        ({"prompt": "Hi", "id": True}, "field 'id': expected a string or an integer, got bool"),
        ({"prompt": "Hi", "dataset": 3}, "field 'dataset': expected a string, got int"),
        ({"prompt": "Hi", "question_id": "q1"}, "field 'question_id': duplicate id 'q1' \\(first on line 1\\)"),
        ('{"prompt": "Hi", ', "not valid JSON"),
    ],
)
def test_bad_chat_line_names_file_and_line(tmp_path: Path, bad: dict[str, object] | str, message: str) -> None:
    """What the recipe reads before the model loads; the CLI prints the same line (exit 2)."""
    path = _write(tmp_path / "chat.jsonl", [{"prompt": "Hello", "question_id": "q1"}, bad])

    def read_all() -> None:
        (s,) = load_eval_sets([path], task="chat", encoder=TextEncoder(lambda t: list(t.encode()), ()))
        read_chat_ids(s.path)

    with pytest.raises(DataFileError, match=rf"{path}:2: {message}"):
        read_all()


def test_chat_prompts_need_no_answer(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.jsonl", [{"prompt": "Hello"}, {"prompt": " "}])
    (s,) = load_eval_sets([path], task="chat", encoder=TextEncoder(lambda t: list(t.encode()), ()))
    assert [e.answer for e in s.examples] == [None] and s.report.skipped == {"empty_prompt": 1}
    assert s.examples[0].text.endswith("Hello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "Given the following problem" not in s.examples[0].text  # Figure 5, not Figure 4


def test_cli_scores_chat_answers_with_a_reward_model(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """``reward.model`` set: every answer gets the reward model's score; the summary is the
    mean ± s.e. over prompts and mean reward / mean length, as validation computes it."""
    from fs2_semionline.rewards.reward_model import RewardModel, RewardModelSpec
    from fs2_semionline.tiny.build_reward_model import build_tiny_reward_model

    rm_dir = build_tiny_reward_model(tmp_path / "rm", seed=0)
    chat = _write(
        tmp_path / "chat.jsonl", [{"prompt": f"Tell me about Ana and the coins. Use {k} sentences."} for k in (1, 2, 3)]
    )
    out_dir = tmp_path / "scored"
    cmd = [
        "lm",
        "evaluate",
        str(out_dir),
        "--no-rich",
        "--config",
        "dataset.task=chat",
        f"dataset.paths=[{chat}]",
        "sampling.max_gen_len=12",
        "sampling.num_samples=2",
        f"reward.model.name={rm_dir}",
    ]
    out = run_main(cmd, capfd)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((out_dir / "results.json").read_text())
    generations = [json.loads(l) for l in (out_dir / "generations.jsonl").read_text().splitlines()]
    expected = RewardModel(RewardModelSpec(path=str(rm_dir))).score(
        [g["prompt"] for g in generations], [g["response"] for g in generations]
    )
    assert [g["reward"] for g in generations] == pytest.approx(expected, abs=1e-6)
    assert result["mean_reward"] == pytest.approx(sum(expected) / 6, abs=1e-6)
    per_prompt = [(expected[2 * i] + expected[2 * i + 1]) / 2 for i in range(3)]
    m = sum(per_prompt) / 3
    assert result["reward_stderr"] == pytest.approx((sum((p - m) ** 2 for p in per_prompt) / 2 / 3) ** 0.5, abs=1e-6)
    mean_len = sum(g["num_tokens"] for g in generations) / 6
    assert result["reward_len_norm"] == pytest.approx(result["mean_reward"] / mean_len, rel=1e-9)
    assert result["num_failed_rewards"] == 0


def test_cli_refuses_an_unknown_reward_model_before_sampling(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    chat = _write(tmp_path / "chat.jsonl", [{"prompt": "Hello"}])
    cmd = [
        "lm",
        "evaluate",
        str(tmp_path / "out"),
        "--no-rich",
        "--config",
        "dataset.task=chat",
        f"dataset.paths=[{chat}]",
        f"reward.model.name={tmp_path / 'no_such_rm'}",
    ]
    out = run_main(cmd, capfd)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert (
        "reward.model.name: " in out.stdout + out.stderr
        and "neither a local reward model folder nor a fairseq2 asset card" in out.stdout + out.stderr
    )
    assert not (tmp_path / "out" / "generations.jsonl").exists()
