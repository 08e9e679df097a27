"""Each prompt's responses go to its task's reward: math → Math-Verify, chat → the reward model.

Training (:class:`~fs2_semionline.units.preference.PreferenceUnit`) and validation
(:class:`~fs2_semionline.units.validation.ValidationUnit`) score through this one
function, so a batch that mixes tasks (§3.3) is scored the same way in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from fs2_semionline.core.tasks import TASKS
from fs2_semionline.data.jsonl import PromptExample


class RewardModelClient(Protocol):
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float | None]: ...


def score_responses(
    examples: Sequence[PromptExample],
    responses: Sequence[Sequence[str]],
    *,
    math_scorer: Any = None,
    reward_model: RewardModelClient | None = None,
) -> list[list[float | None]]:
    """One reward per response of every prompt: Math-Verify's 0/1 for ``math`` prompts,
    the reward model's scalar for ``chat`` prompts. ``None`` = failed (never 0): the
    caller masks and counts it. One call per task, so each scorer sees a whole batch."""
    rewards: list[list[float | None]] = [[None] * len(rs) for rs in responses]
    for task in TASKS.values():
        rows = [i for i, e in enumerate(examples) if e.task == task.name]
        if not rows:
            continue
        flat_responses = [r for i in rows for r in responses[i]]
        if task.scorer == "reward_model":
            if reward_model is None:
                raise ValueError("chat prompts need a reward model (reward.model)")
            flat = reward_model.score([examples[i].prompt for i in rows for _ in responses[i]], flat_responses)
        else:
            if math_scorer is None:
                raise ValueError("math prompts need a Math-Verify pool")
            golds = [str(examples[i].answer) for i in rows for _ in responses[i]]
            flat = math_scorer.score(flat_responses, golds).rewards
        start = 0
        for i in rows:
            rewards[i] = list(flat[start : start + len(responses[i])])
            start += len(responses[i])
    return rewards
