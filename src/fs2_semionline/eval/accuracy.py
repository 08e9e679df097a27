"""Mean accuracy and its standard error over N sample sets (the paper's Table 1).

Sample set k holds the k-th completion of every problem; its accuracy is the share
of correct answers among the *scored* ones (a failed reward is left out and counted,
never taken as wrong). The reported value is the mean of the N set accuracies and the
standard error of that mean, std(ddof=1) / sqrt(N).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class AccuracyStats:
    mean: float
    stderr: float
    per_set: list[float]
    num_failed: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f} ± {100 * self.stderr:.1f}"


def accuracy_over_sample_sets(rewards: Sequence[Sequence[float | None]]) -> AccuracyStats:
    """``rewards[i][k]`` is problem i's k-th sample: 1.0, 0.0 or None (failed)."""
    if not rewards:
        raise ValueError("no problems to score")
    num_sets = len(rewards[0])
    if num_sets == 0 or any(len(r) != num_sets for r in rewards):
        raise ValueError("every problem needs the same, non-zero number of samples")
    per_set: list[float] = []
    num_failed = 0
    for k in range(num_sets):
        scored = [v for r in rewards if (v := r[k]) is not None]
        num_failed += len(rewards) - len(scored)
        per_set.append(sum(scored) / len(scored) if scored else math.nan)
    valid = [a for a in per_set if not math.isnan(a)]
    if not valid:
        raise ValueError("every reward failed: no accuracy can be computed")
    mean = sum(valid) / len(valid)
    if len(valid) > 1:
        var = sum((a - mean) ** 2 for a in valid) / (len(valid) - 1)
        stderr = math.sqrt(var / len(valid))
    else:
        stderr = math.nan
    return AccuracyStats(mean, stderr, per_set, num_failed)
