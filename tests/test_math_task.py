"""The synthetic math task: seeded, disjoint splits, graded levels, verifiable answers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from fs2_semionline.core.paths import TINY_MATH_DATA_DIR
from fs2_semionline.data.math_task import LEVEL_WEIGHTS, generate_splits, main
from fs2_semionline.rewards import verify_math


def test_same_seed_same_problems_other_seed_other_problems() -> None:
    a = generate_splits(7, 300, 50, 50)
    assert a == generate_splits(7, 300, 50, 50)
    assert a["train"] != generate_splits(8, 300, 50, 50)["train"]


def test_splits_are_disjoint_and_sized() -> None:
    splits = generate_splits(0, 2000, 200, 300)
    prompts = {k: {p.prompt for p in v} for k, v in splits.items()}
    assert [len(prompts[k]) for k in ("train", "valid", "test")] == [2000, 200, 300]
    assert not prompts["train"] & prompts["valid"]
    assert not prompts["train"] & prompts["test"]
    assert not prompts["valid"] & prompts["test"]


def test_levels_and_answer_kinds() -> None:
    splits = generate_splits(0, 3000, 200, 300)
    # Held-out splits are drawn first and follow the level weights; train may hold
    # fewer level-3 problems than weighted because only ~600 distinct ones exist.
    held_out = splits["valid"] + splits["test"]
    levels = Counter(p.level for p in held_out)
    for level, weight in LEVEL_WEIGHTS.items():
        assert abs(levels[level] / len(held_out) - weight) < 0.06, (level, levels)
    assert set(Counter(p.level for p in splits["train"])) == set(LEVEL_WEIGHTS)
    answers = [p.answer for p in splits["train"]]
    assert any(a.startswith("-") and "/" not in a for a in answers)  # negative integers
    assert any("/" in a and not a.startswith("-") for a in answers)  # reduced fractions
    assert all(a.lstrip("-").replace("/", "").isdigit() for a in answers)


def test_worked_solutions_are_correct_by_math_verify() -> None:
    # The SFT targets write fractions as \frac{a}{b}; gold answers are plain a/b.
    problems = generate_splits(3, 60, 0, 0)["train"]
    for p in problems:
        assert "The final answer is $\\boxed{" in p.solution and p.solution.endswith("I hope it is correct.")
        assert verify_math(p.solution, p.answer).status == "correct", p
    fraction = next(p for p in problems if "/" in p.answer)
    assert "\\frac{" in fraction.solution


def test_shipped_data_is_what_the_generator_writes(tmp_path: Path) -> None:
    main([str(tmp_path), "--seed", "0"])
    for split in ("train", "valid", "test"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (TINY_MATH_DATA_DIR / f"{split}.jsonl").read_bytes()
    first = json.loads((tmp_path / "test.jsonl").read_text().splitlines()[0])
    assert set(first) == {"prompt", "answer", "level", "solution"}
