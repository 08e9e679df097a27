"""A seeded tiny *non-verifiable* task: instructions with stated constraints.

The chat counterpart of :mod:`fs2_semionline.data.math_task`, in the same little world
(the same names and things), so the tiny model and tokenizer cover both. Every prompt
asks for sentences about a person and a thing, and states two constraints:

* about numbers: "Use numbers." (at least one number) or "Use no numbers." (no digit);
* about length: "Use 2 sentences." (exactly that many, 1 to 3).

:func:`quality` is the synthetic preference, the hidden truth a rater would apply: one
point per constraint met (0 to 2). It is never the training reward: a reward model is
*trained* on pairs ranked by it (``tiny/build_chat_assets.py``) and RL optimises that
model's score, as it would optimise Athene-RM's. Measuring :func:`quality` of a policy's
answers then tells whether optimising the learned reward improved what the preference
stands for.

The constraints are ones a 3.7M-parameter reward model learns from a thousand steps of
pairs. Two properties that need a *specific* word or number copied from the prompt
(naming the thing asked about; using a given number) it did not learn at that budget:
held-out accuracy on pairs differing only in them stayed at chance (0.49 to 0.57), so the
preference does not count them.

:func:`sample_response` writes answers of mixed quality (each property holds with some
probability), used as SFT targets, so the fine-tuned model meets the constraints only
part of the time and RL has room to improve.
"""

from __future__ import annotations

import argparse
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fs2_semionline.data.math_task import NAMES, THINGS
from fs2_semionline.data.synthetic import unique_splits, write_jsonl

_ASKS = ("Tell me about {name} and the {thing} {place}.", "Write about {name} and the {thing} {place}.")
_PLACES = (
    "at home",
    "at school",
    "in the park",
    "on the bus",
    "at the shop",
    "in the garden",
    "at the beach",
    "in the kitchen",
)
# Sentences of the answers: with a number ({n}) and without.
_WITH_NUMBER = ("{name} has {n} {thing}.", "{name} gets {n} more {thing}.", "A box holds {n} {thing} for {name}.")
_WITHOUT_NUMBER = ("{name} keeps the {thing} in a box.", "{name} likes the {thing}.", "The {thing} make {name} happy.")

_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class ChatPrompt:
    """One instruction and what :func:`quality` needs to judge an answer to it."""

    prompt: str
    name: str
    thing: str
    numbers: bool  # "Use numbers." (True) or "Use no numbers." (False)
    sentences: int  # "Use N sentences."


def make_prompt(rng: random.Random) -> ChatPrompt:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    numbers, sentences = rng.random() < 0.5, rng.randint(1, 3)
    text = (
        rng.choice(_ASKS).format(name=name, thing=thing, place=rng.choice(_PLACES))
        + (" Use numbers." if numbers else " Use no numbers.")
        + f" Use {sentences} sentence{'s' if sentences > 1 else ''}."
    )
    return ChatPrompt(text, name, thing, numbers, sentences)


def count_sentences(text: str) -> int:
    return len(_SENTENCE_END.findall(text.strip()))


def meets_numbers(prompt: ChatPrompt, response: str) -> bool:
    return bool(_DIGIT.search(response)) == prompt.numbers


def meets_sentences(prompt: ChatPrompt, response: str) -> bool:
    return count_sentences(response) == prompt.sentences


def mentions_thing(prompt: ChatPrompt, response: str) -> bool:
    return re.search(rf"\b{re.escape(prompt.thing)}\b", response) is not None


def meets_constraints(prompt: ChatPrompt, response: str) -> bool:
    """Both stated constraints met (``quality`` 2)."""
    return meets_numbers(prompt, response) and meets_sentences(prompt, response)


def quality(prompt: ChatPrompt, response: str) -> float:
    """The synthetic preference: the number of stated constraints met, 0 to 2."""
    return float(meets_numbers(prompt, response)) + float(meets_sentences(prompt, response))


def sample_response(rng: random.Random, prompt: ChatPrompt) -> str:
    """An answer of random quality: each constraint met about half of the time, the
    person and thing asked about most of the time."""
    name = prompt.name if rng.random() < 0.7 else rng.choice([n for n in NAMES if n != prompt.name])
    thing = prompt.thing if rng.random() < 0.7 else rng.choice([t for t in THINGS if t != prompt.thing])
    num_sentences = prompt.sentences if rng.random() < 0.3 else rng.randint(1, 3)
    use_numbers = rng.random() < 0.5
    sentences = []
    for i in range(num_sentences):
        if use_numbers and (i == 0 or rng.random() < 0.5):
            sentences.append(rng.choice(_WITH_NUMBER).format(name=name, thing=thing, n=rng.randint(1, 99)))
        else:
            sentences.append(rng.choice(_WITHOUT_NUMBER).format(name=name, thing=thing))
    return " ".join(sentences)


def preference_pairs(
    rng: random.Random, prompts: Callable[[], ChatPrompt], num_pairs: int, *, minimal_share: float = 0.5
) -> list[dict[str, str]]:
    """``{"prompt", "chosen", "rejected"}`` ranked by :func:`quality` (ties dropped).

    A ``minimal_share`` of the pairs differ in their number of sentences only (the same
    answer with its last sentence dropped, or repeated), which teaches a small reward model
    to count faster than random pairs, where several properties differ at once.
    """
    pairs: list[dict[str, str]] = []
    while len(pairs) < num_pairs:
        p = prompts()
        a = sample_response(rng, p)
        if rng.random() < minimal_share:
            sentences = [x for x in _SENTENCE_SPLIT.split(a) if x]
            if len(sentences) > 1 and rng.random() < 0.5:
                b = " ".join(sentences[:-1])
            else:
                b = " ".join([*sentences, sentences[-1]])
        else:
            b = sample_response(rng, p)
        qa, qb = quality(p, a), quality(p, b)
        if qa != qb:
            chosen, rejected = (a, b) if qa > qb else (b, a)
            pairs.append({"prompt": p.prompt, "chosen": chosen, "rejected": rejected})
    return pairs


def generate_prompts(seed: int, num_train: int, num_valid: int, num_test: int) -> dict[str, list[ChatPrompt]]:
    """Unique prompts cut into disjoint train/valid/test splits (held-out splits first)."""
    return unique_splits(make_prompt, seed, num_train, num_valid, num_test)


def write_prompts(path: Path, prompts: list[ChatPrompt]) -> None:
    write_jsonl(path, prompts)


def read_prompts(path: Path) -> list[ChatPrompt]:
    """The prompts of a file :func:`write_prompts` wrote (the metadata :func:`quality` needs)."""
    from fs2_semionline.data.jsonl import iter_jsonl

    out = []
    for record in iter_jsonl(Path(path)):
        d = record.data
        out.append(
            ChatPrompt(str(d["prompt"]), str(d["name"]), str(d["thing"]), bool(d["numbers"]), int(str(d["sentences"])))
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=4000)
    parser.add_argument("--num-valid", type=int, default=200)
    parser.add_argument("--num-test", type=int, default=300)
    args = parser.parse_args(argv)
    for split, prompts in generate_prompts(args.seed, args.num_train, args.num_valid, args.num_test).items():
        write_prompts(args.out_dir / f"{split}.jsonl", prompts)
        print(f"{split}: {len(prompts)} prompts -> {args.out_dir / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
