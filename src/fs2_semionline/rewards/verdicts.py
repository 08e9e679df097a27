"""Verdicts of the rule-based math reward: one item's outcome and a batch's.

They separate the model's faults from ours: "incorrect" (reward 0.0) is the
model's fault (wrong value, no/unbalanced/empty/too long/unparseable boxed
answer); "failed" (reward ``None``, to be masked out, never treated as 0) is
ours (timeout, Math-Verify exception, unusable gold, worker crash).

A module of their own because the boxed-answer pre-checks
(:mod:`~fs2_semionline.rewards.boxed`), the judge
(:mod:`~fs2_semionline.rewards.math_judge`) and the pool
(:mod:`~fs2_semionline.rewards.math_pool`) all produce them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BatchVerdicts",
    "Verdict",
    "VerdictStatus",
]

VerdictStatus = Literal["correct", "incorrect", "failed"]


@dataclass(frozen=True)
class Verdict:
    """Outcome of scoring one response against one gold answer.

    ``status`` says whose fault a non-correct outcome is: "incorrect" is the
    model's (a real 0 reward), "failed" is ours (no reward: mask the sample).
    """

    status: VerdictStatus
    reason: str
    #: The final answer as found in the response, its boxes joined (``None`` when
    #: there is none, it is unbalanced or too long).
    extracted: str | None = None

    @property
    def reward(self) -> float | None:
        """1.0 / 0.0, or ``None`` for "failed": a failure must never read as 0."""
        if self.status == "correct":
            return 1.0
        if self.status == "incorrect":
            return 0.0
        return None


@dataclass
class BatchVerdicts:
    """Verdicts of one batch, in input order, with counts for logging."""

    verdicts: list[Verdict]

    def __len__(self) -> int:
        return len(self.verdicts)

    def __iter__(self) -> Iterator[Verdict]:
        return iter(self.verdicts)

    def __getitem__(self, index: int) -> Verdict:
        return self.verdicts[index]

    @property
    def num_correct(self) -> int:
        return sum(v.status == "correct" for v in self.verdicts)

    @property
    def num_incorrect(self) -> int:
        return sum(v.status == "incorrect" for v in self.verdicts)

    @property
    def num_failed(self) -> int:
        return sum(v.status == "failed" for v in self.verdicts)

    @property
    def rewards(self) -> list[float | None]:
        """Per-item rewards; ``None`` marks items to mask out."""
        return [v.reward for v in self.verdicts]

    def reason_counts(self) -> dict[str, int]:
        """How often each reason occurs, to monitor failure modes."""
        return dict(Counter(v.reason for v in self.verdicts))
