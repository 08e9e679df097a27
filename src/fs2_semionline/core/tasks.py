"""The tasks a prompt can belong to, in one table: how its rollouts are rewarded and
therefore paired (paper §3.1–3.3). Training, validation, evaluation and the reward
routing read this table; nothing else decides by a task's name.

    math  verifiable:      Math-Verify against the gold answer, 0/1 → a random correct
                           against a random incorrect rollout (Figure 4 template)
    chat  non-verifiable:  the reward model's scalar → the best against the worst
                           (Figure 5 template)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TaskName = Literal["math", "chat"]
RewardKind = Literal["binary", "scalar"]
"""``binary``: correct or not (pairs and sets split on it); ``scalar``: ordered scores."""


@dataclass(frozen=True)
class TaskSpec:
    name: TaskName
    reward_kind: RewardKind
    scorer: Literal["math_verify", "reward_model"]
    """Who rewards its rollouts: the Math-Verify pool or the reward model (``reward.model``)."""
    needs_answer: bool
    """Its JSONL rows need a gold ``answer``."""


TASKS: dict[TaskName, TaskSpec] = {
    "math": TaskSpec("math", reward_kind="binary", scorer="math_verify", needs_answer=True),
    "chat": TaskSpec("chat", reward_kind="scalar", scorer="reward_model", needs_answer=False),
}


def task_spec(name: str) -> TaskSpec:
    try:
        return TASKS[name]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None
