"""The tiny non-verifiable task: its synthetic preference by hand, its answer generator's
mix of good and bad answers, its preference pairs, and the shipped prompts reproduced."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fs2_semionline.core.paths import TINY_CHAT_DATA_DIR
from fs2_semionline.data.chat_task import (
    ChatPrompt,
    count_sentences,
    generate_prompts,
    make_prompt,
    meets_constraints,
    meets_numbers,
    meets_sentences,
    mentions_thing,
    preference_pairs,
    quality,
    read_prompts,
    sample_response,
    write_prompts,
)

NUMBERS_2 = ChatPrompt(
    "Tell me about Ana and the apples at home. Use numbers. Use 2 sentences.", "Ana", "apples", True, 2
)
NO_NUMBERS_1 = ChatPrompt(
    "Write about Ben and the coins on the bus. Use no numbers. Use 1 sentence.", "Ben", "coins", False, 1
)


@pytest.mark.parametrize(
    ("prompt", "response", "expected"),
    [
        (NUMBERS_2, "Ana has 3 apples. Ana likes the apples.", 2.0),  # numbers + 2 sentences
        (NUMBERS_2, "Ana likes the apples. Ana keeps the apples in a box.", 1.0),  # no number
        (NUMBERS_2, "Ana has 3 apples.", 1.0),  # one sentence
        (NUMBERS_2, "Ana has 3 coins. Ben likes the coins.", 2.0),  # the person and thing do not count
        (NUMBERS_2, "Ana has 3.5 apples.", 1.0),  # a decimal point ends no sentence
        (NO_NUMBERS_1, "Ben likes the coins.", 2.0),
        (NO_NUMBERS_1, "Ben has 12 coins.", 1.0),
        (NO_NUMBERS_1, "Ben has 12 stamps. Ben likes the stamps.", 0.0),
        (NO_NUMBERS_1, "", 1.0),  # no number is the only constraint an empty answer meets
    ],
)
def test_quality_by_hand(prompt: ChatPrompt, response: str, expected: float) -> None:
    assert quality(prompt, response) == expected
    assert quality(prompt, response) == meets_numbers(prompt, response) + meets_sentences(prompt, response)
    assert meets_constraints(prompt, response) == (expected == 2.0)


def test_sentence_count() -> None:
    assert count_sentences("One. Two! Three?") == 3
    assert count_sentences("A box holds 3.5 coins.") == 1  # a decimal point ends no sentence
    assert count_sentences("no full stop") == 0


def test_prompts_state_their_constraints() -> None:
    rng = random.Random(0)
    for _ in range(50):
        p = make_prompt(rng)
        assert p.name in p.prompt and p.thing in p.prompt
        assert ("Use numbers." in p.prompt) == p.numbers and ("Use no numbers." in p.prompt) != p.numbers
        assert f"Use {p.sentences} sentence" in p.prompt


def test_generated_answers_meet_each_constraint_about_half_of_the_time() -> None:
    """SFT targets of mixed quality: the fine-tuned policy must leave RL room to improve."""
    prompts = generate_prompts(0, 2000, 0, 0)["train"]
    rng = random.Random(0)
    answers = [(p, sample_response(rng, p)) for p in prompts]
    for check in (meets_numbers, meets_sentences):
        rate = sum(check(p, a) for p, a in answers) / len(answers)
        assert 0.4 < rate < 0.65, (check.__name__, rate)
    assert 0.6 < sum(mentions_thing(p, a) for p, a in answers) / len(answers) < 0.8  # flavour, not preference
    assert 0.15 < sum(meets_constraints(p, a) for p, a in answers) / len(answers) < 0.4


def test_preference_pairs_are_ranked_by_quality_and_some_minimal() -> None:
    rng = random.Random(0)
    prompts = {}

    def draw() -> ChatPrompt:
        p = make_prompt(rng)
        prompts[p.prompt] = p
        return p

    pairs = preference_pairs(rng, draw, 400)
    assert len(pairs) == 400
    assert all(quality(prompts[x["prompt"]], x["chosen"]) > quality(prompts[x["prompt"]], x["rejected"]) for x in pairs)
    # One answer is the other with a sentence more: only the count differs.
    minimal = [x for x in pairs if x["chosen"].startswith(x["rejected"]) or x["rejected"].startswith(x["chosen"])]
    assert len(minimal) > 80


def test_shipped_prompts_are_reproduced_and_disjoint(tmp_path: Path) -> None:
    splits = generate_prompts(0, num_train=4000, num_valid=200, num_test=300)
    for split, prompts in splits.items():
        write_prompts(tmp_path / f"{split}.jsonl", prompts)
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (TINY_CHAT_DATA_DIR / f"{split}.jsonl").read_bytes(), split
        assert read_prompts(TINY_CHAT_DATA_DIR / f"{split}.jsonl") == prompts
    texts = [{p.prompt for p in splits[s]} for s in ("train", "valid", "test")]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
