"""A seeded generator of synthetic verifiable math problems (the tiny task).

Word problems of graded difficulty whose answers are integers, negative numbers and
reduced fractions, so that Math-Verify's equivalence checks matter (a gold ``7/2`` is
met by ``\\frac{7}{2}`` or ``3.5``). Every record holds the raw problem (the template
is applied when the prompt is read), the gold answer as plain text, the level and a
worked solution in the format Figure 4 asks for (the SFT target).

Levels:
  1. addition of two numbers in 1..99
  2. subtraction in 1..99, often negative
  3. a half / third / quarter of a number: integer or reduced fraction
  4. two steps: a + b - c

Problems are unique across all splits. Levels are drawn with ``LEVEL_WEIGHTS``; the
held-out splits (drawn first) follow those weights, while the training split holds
fewer level-3 problems than weighted, since only about 600 distinct ones exist.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from fs2_semionline.data.synthetic import unique_splits, write_jsonl
from fs2_semionline.data.templates import final_answer_sentence

NAMES = ("Ana", "Ben", "Chloe", "Dev", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jon")
THINGS = ("apples", "marbles", "stamps", "coins", "books", "shells", "cards", "pencils")

LEVEL_WEIGHTS: dict[int, float] = {1: 0.35, 2: 0.35, 3: 0.2, 4: 0.1}


@dataclass(frozen=True)
class MathProblem:
    prompt: str
    answer: str
    level: int
    solution: str


def _operand(rng: random.Random) -> int:
    # Small operands are common so that easy problems exist at every level.
    return rng.randint(1, 9) if rng.random() < 0.25 else rng.randint(1, 99)


def _fraction_text(value: Fraction) -> tuple[str, str]:
    """(plain gold text, LaTeX form the model writes)."""
    if value.denominator == 1:
        return str(value.numerator), str(value.numerator)
    sign = "-" if value < 0 else ""
    num, den = abs(value.numerator), value.denominator
    return f"{sign}{num}/{den}", f"{sign}\\frac{{{num}}}{{{den}}}"


def make_problem(rng: random.Random, level: int) -> MathProblem:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    if level == 1:
        a, b = _operand(rng), _operand(rng)
        text = rng.choice(
            (
                f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?",
                f"What is {a} plus {b}?",
                f"A box holds {a} {thing} and another holds {b}. How many {thing} are there in total?",
            )
        )
        work, value = f"{a} + {b} = {a + b}.", Fraction(a + b)
    elif level == 2:
        a, b = _operand(rng), _operand(rng)
        text = rng.choice(
            (
                f"The temperature was {a} degrees and fell by {b} degrees. What is the temperature now?",
                f"What is {a} minus {b}?",
                f"{name} had {a} dollars and spent {b} dollars. What is the balance of {name} now?",
            )
        )
        work, value = f"{a} - {b} = {a - b}.", Fraction(a - b)
    elif level == 3:
        n = _operand(rng)
        d, word = rng.choice(((2, "half"), (3, "a third"), (4, "a quarter")))
        value = Fraction(n, d)
        gold, latex = _fraction_text(value)
        text = rng.choice(
            (
                f"What is {word} of {n}?",
                f"A rope of {n} meters is cut into {d} equal pieces. How long is each piece in meters?",
            )
        )
        work = f"{n} / {d} = {latex}."
        return MathProblem(text, gold, level, f"{work} {final_answer_sentence(latex)}")
    elif level == 4:
        a, b, c = _operand(rng), _operand(rng), _operand(rng)
        text = f"{name} has {a} {thing}, gets {b} more and gives away {c}. How many {thing} does {name} have now?"
        work, value = f"{a} + {b} = {a + b}. {a + b} - {c} = {a + b - c}.", Fraction(a + b - c)
    else:
        raise ValueError(f"unknown level {level}; levels are {sorted(LEVEL_WEIGHTS)}")
    gold, latex = _fraction_text(value)
    return MathProblem(text, gold, level, f"{work} {final_answer_sentence(latex)}")


def generate_splits(seed: int, num_train: int, num_valid: int, num_test: int) -> dict[str, list[MathProblem]]:
    """Unique problems, shuffled, then cut into disjoint train/valid/test by prompt text."""
    levels, weights = zip(*LEVEL_WEIGHTS.items())
    return unique_splits(
        lambda rng: make_problem(rng, rng.choices(levels, weights)[0]), seed, num_train, num_valid, num_test
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=20000)
    parser.add_argument("--num-valid", type=int, default=200)
    parser.add_argument("--num-test", type=int, default=300)
    args = parser.parse_args(argv)
    splits = generate_splits(args.seed, args.num_train, args.num_valid, args.num_test)
    for split, problems in splits.items():
        write_jsonl(args.out_dir / f"{split}.jsonl", problems)
        print(f"{split}: {len(problems)} problems -> {args.out_dir / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
