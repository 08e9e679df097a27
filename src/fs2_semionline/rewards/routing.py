"""Each prompt's responses go to its task's reward: math → Math-Verify, chat → the reward model.

Training (:class:`~fs2_semionline.units.preference.PreferenceUnit`), validation
(:class:`~fs2_semionline.units.validation.ValidationUnit`) and ``lm evaluate`` score
through one :class:`RewardRouter`, so a batch that mixes tasks (§3.3) is scored the same
way everywhere; which scorer a task goes to is the task table's (``core/tasks.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fs2_semionline.core.tasks import TASKS
from fs2_semionline.data.jsonl import PromptExample


class RewardModelClient(Protocol):
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float | None]: ...


class MathVerdicts(Protocol):
    @property
    def rewards(self) -> Sequence[float | None]: ...


class MathScorer(Protocol):
    """Math-Verify against gold answers (:class:`~fs2_semionline.rewards.MathVerifyPool`)."""

    def score(self, responses: Sequence[str], golds: Sequence[str]) -> MathVerdicts: ...


@dataclass(frozen=True)
class RewardRouter:
    """The scorers of a run: Math-Verify for ``math`` prompts, the reward model for ``chat``
    prompts (each None when no prompt of its task is read)."""

    math: MathScorer | None = None
    reward_model: RewardModelClient | None = None

    def score(self, examples: Sequence[PromptExample], responses: Sequence[Sequence[str]]) -> list[list[float | None]]:
        """One reward per response of every prompt: Math-Verify's 0/1 for ``math`` prompts,
        the reward model's scalar for ``chat`` prompts. ``None`` = failed (never 0): the
        caller masks and counts it. One call per task, so each scorer sees a whole batch."""
        rewards: list[list[float | None]] = [[None] * len(rs) for rs in responses]
        for task in TASKS.values():
            rows = [i for i, e in enumerate(examples) if e.task == task.name]
            if not rows:
                continue
            flat_responses = [r for i in rows for r in responses[i]]
            flat: Sequence[float | None]
            if task.scorer == "reward_model":
                if self.reward_model is None:
                    raise ValueError("chat prompts need a reward model (reward.model)")
                prompts = [examples[i].prompt for i in rows for _ in responses[i]]
                flat = self.reward_model.score(prompts, flat_responses)
            else:
                if self.math is None:
                    raise ValueError("math prompts need a Math-Verify pool")
                golds = [str(examples[i].answer) for i in rows for _ in responses[i]]
                flat = self.math.score(flat_responses, golds).rewards
            start = 0
            for i in rows:
                rewards[i] = list(flat[start : start + len(responses[i])])
                start += len(responses[i])
        return rewards
