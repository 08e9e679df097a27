"""From per-rollout rewards to what a loss trains on: DPO pairs, GroupDPO sets, GRPO advantages.

Rules follow "Bridging Offline and Online RL for LLMs" (arXiv 2506.21495):

* binary rewards (verifiable math: 1.0 correct, 0.0 incorrect) -> a DPO pair is a
  random correct response (chosen) against a random incorrect one (rejected);
* scalar rewards (reward model) -> the highest-scored against the lowest-scored,
  ties broken at random;
* prompts that give no signal (all correct, all incorrect, all equal, fewer than
  two valid rewards) are skipped for this step and counted, never padded.

``rewards[i][j]`` is the reward of rollout ``j`` of prompt ``i``. ``None`` means
FAILED (the reward function timed out or errored): a failed reward is never a
zero; it is excluded from every choice and every mean, and counted in
:attr:`PairingStats.num_failed_rewards`.

Validation:

* ``binary``: each reward must be ``None`` or exactly 0 or 1 (``0.0``/``1.0``,
  ``0``/``1`` and ``False``/``True`` compare equal and are accepted). Anything
  else, NaN and inf included, raises :class:`ValueError` naming the prompt, the
  rollout and the value: a verifier that emits 0.5 is a bug, not a reward.
* ``scalar`` (and GRPO, which takes any real reward): NaN and +/-inf are treated
  as FAILED (excluded and counted like ``None``): a reward model that overflows
  on one response should not poison the whole group's mean or ordering. A value
  that is not a real number at all (a string, ``None``-like object) raises.

Reproducibility (resuming needs no saved RNG state): the caller builds one
:class:`random.Random` per step with :func:`fs2_semionline.core.seeding.step_rng`. Inside :func:`select_dpo_pairs` every prompt, in prompt
order and skipped or not, takes exactly one 64-bit draw from that RNG and makes
its own choices with a private ``Random`` seeded by it. A prompt's pair thus
depends only on (seed, step, prompt index, its own rewards): not on whether
other prompts were skipped or how many draws they needed.
"""

from __future__ import annotations

import math
import numbers
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from fs2_semionline.core.tasks import RewardKind

__all__ = [
    "SKIP_REASONS",
    "Pair",
    "PairSet",
    "PairingStats",
    "select_dpo_pairs",
    "select_pair_sets",
    "grpo_advantages",
]

#: Every reason a prompt can be skipped; all appear in :meth:`PairingStats.as_metrics`
#: (as 0 when unused) so metric keys are the same at every step.
SKIP_REASONS: tuple[str, ...] = ("all_correct", "all_incorrect", "all_equal", "too_few_valid")

Rewards = Sequence[Sequence[float | None]]


@dataclass(frozen=True)
class Pair:
    """One DPO pair: rollout indices within prompt ``prompt_idx`` and their rewards."""

    prompt_idx: int
    chosen_idx: int
    rejected_idx: int
    chosen_reward: float
    rejected_reward: float


@dataclass(frozen=True)
class PairSet:
    """GroupDPO: all chosen-side and all rejected-side rollouts of one prompt, in rollout order."""

    prompt_idx: int
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]


@dataclass
class PairingStats:
    """What happened to a batch of prompts; logged every step so silent data loss shows."""

    num_prompts: int = 0
    num_used: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    num_failed_rewards: int = 0

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())


# ---------------------------------------------------------------------------
# Validation


def _check_kind(kind: str) -> None:
    if kind not in ("binary", "scalar"):
        raise ValueError(f"reward kind must be 'binary' or 'scalar', got {kind!r}")


def _kinds(kind: RewardKind | Sequence[RewardKind], num_prompts: int) -> list[RewardKind]:
    """One kind per prompt: a mixed batch holds math (binary) and chat (scalar) prompts."""
    kinds: list[RewardKind] = [kind] * num_prompts if isinstance(kind, str) else list(kind)  # type: ignore[list-item]
    if len(kinds) != num_prompts:
        raise ValueError(f"{len(kinds)} reward kinds for {num_prompts} prompts")
    for k in set(kinds):
        _check_kind(k)
    return kinds


def _valid_rewards(
    group: Sequence[float | None], prompt_idx: int, kind: RewardKind
) -> tuple[list[tuple[int, float]], int]:
    """(rollout index, reward) of the valid rollouts, in order, and the number of failed ones."""
    valid: list[tuple[int, float]] = []
    failed = 0
    for j, r in enumerate(group):
        if r is None:
            failed += 1
            continue
        if not isinstance(r, numbers.Real):
            raise ValueError(f"prompt {prompt_idx}, rollout {j}: reward must be a real number or None, got {r!r}")
        value = float(r)
        if kind == "binary":
            if value != 0.0 and value != 1.0:  # NaN fails both tests, so it raises too
                raise ValueError(f"prompt {prompt_idx}, rollout {j}: binary reward must be 0.0, 1.0 or None, got {r!r}")
        elif not math.isfinite(value):
            failed += 1  # NaN/inf from a reward model: treated as FAILED
            continue
        valid.append((j, value))
    return valid, failed


def _degenerate(valid: list[tuple[int, float]], kind: RewardKind) -> str | None:
    """Why this group gives no training signal, or None when it does."""
    if len(valid) < 2:
        return "too_few_valid"
    values = {v for _, v in valid}
    if len(values) > 1:
        return None
    if kind == "binary":
        return "all_correct" if values == {1.0} else "all_incorrect"
    return "all_equal"


def _usable(
    group: Sequence[float | None], prompt_idx: int, kind: RewardKind, stats: PairingStats
) -> list[tuple[int, float]] | None:
    """The valid (rollout index, reward) pairs of a group that gives a training signal;
    None for a degenerate group. Failures and skips are counted in ``stats``."""
    valid, failed = _valid_rewards(group, prompt_idx, kind)
    stats.num_failed_rewards += failed
    reason = _degenerate(valid, kind)
    if reason is not None:
        stats.skipped[reason] += 1
        return None
    return valid


# ---------------------------------------------------------------------------
# DPO


def select_dpo_pairs(
    rewards: Rewards, kind: RewardKind | Sequence[RewardKind], rng: random.Random
) -> tuple[list[Pair], PairingStats]:
    """At most one DPO pair per prompt, in prompt order.

    binary: chosen uniformly among the correct rollouts, rejected uniformly among
    the incorrect ones. scalar: chosen = a highest-scored rollout, rejected = a
    lowest-scored one, each uniformly among its ties. Each prompt takes exactly
    one draw from ``rng`` (see module docstring), so results depend only on
    ``rewards`` and the state of ``rng``. ``kind`` may give one kind per prompt.
    """
    kinds = _kinds(kind, len(rewards))
    stats = PairingStats(num_prompts=len(rewards))
    pairs: list[Pair] = []
    for i, (group, group_kind) in enumerate(zip(rewards, kinds)):
        prompt_rng = random.Random(rng.getrandbits(64))  # drawn even if skipped
        valid = _usable(group, i, group_kind, stats)
        if valid is None:
            continue
        if group_kind == "binary":
            best = [j for j, v in valid if v == 1.0]
            worst = [j for j, v in valid if v == 0.0]
        else:
            hi = max(v for _, v in valid)
            lo = min(v for _, v in valid)
            best = [j for j, v in valid if v == hi]
            worst = [j for j, v in valid if v == lo]
        chosen = prompt_rng.choice(best)
        rejected = prompt_rng.choice(worst)
        by_idx = dict(valid)
        pairs.append(Pair(i, chosen, rejected, by_idx[chosen], by_idx[rejected]))
        stats.num_used += 1
    return pairs, stats


# ---------------------------------------------------------------------------
# GroupDPO


def select_pair_sets(rewards: Rewards, kind: RewardKind | Sequence[RewardKind]) -> tuple[list[PairSet], PairingStats]:
    """All chosen-side and all rejected-side rollouts per prompt (deterministic, no RNG).

    binary: (all correct, all incorrect). scalar: rollouts strictly above the
    group's mean of valid rewards against those strictly below it; rollouts equal
    to the mean are on neither side (no preference to learn from them). The mean
    is computed exactly (fractions), so "equal to the mean" has no rounding
    error. For binary rewards the scalar rule gives the same sets. Both sides are
    non-empty whenever the valid rewards are not all equal. ``kind`` may give one
    kind per prompt.
    """
    kinds = _kinds(kind, len(rewards))
    stats = PairingStats(num_prompts=len(rewards))
    sets: list[PairSet] = []
    for i, (group, group_kind) in enumerate(zip(rewards, kinds)):
        valid = _usable(group, i, group_kind, stats)
        if valid is None:
            continue
        if group_kind == "binary":
            chosen = tuple(j for j, v in valid if v == 1.0)
            rejected = tuple(j for j, v in valid if v == 0.0)
        else:
            exact = [(j, Fraction(v)) for j, v in valid]
            mean = sum((v for _, v in exact), Fraction(0)) / len(exact)
            chosen = tuple(j for j, v in exact if v > mean)
            rejected = tuple(j for j, v in exact if v < mean)
        sets.append(PairSet(i, chosen, rejected))
        stats.num_used += 1
    return sets, stats


# ---------------------------------------------------------------------------
# GRPO


def grpo_advantages(
    rewards: Rewards, *, normalize_std: bool = False, eps: float = 1e-6
) -> tuple[list[list[float | None]], PairingStats]:
    """Group-relative advantages ``A_i = r_i - mean(valid r)``, same shape as ``rewards``.

    ``normalize_std`` divides by the population std (ddof=0) of the valid rewards
    plus ``eps``. Rewards may be binary or scalar; NaN/inf count as failed. A
    failed rollout gets ``None`` (excluded from the loss). Groups with fewer than
    2 valid rewards ("too_few_valid") or whose valid rewards are all equal
    ("all_equal": every advantage would be 0) are skipped: all their entries are
    ``None``, so they add nothing to the loss nor to its normalisation.
    """
    stats = PairingStats(num_prompts=len(rewards))
    out: list[list[float | None]] = []
    for i, group in enumerate(rewards):
        advantages: list[float | None] = [None] * len(group)
        valid = _usable(group, i, "scalar", stats)
        if valid is None:
            out.append(advantages)
            continue
        n = len(valid)
        mean = math.fsum(v for _, v in valid) / n
        scale = 1.0
        if normalize_std:
            std = math.sqrt(math.fsum((v - mean) ** 2 for _, v in valid) / n)
            scale = std + eps
        for j, v in valid:
            advantages[j] = (v - mean) / scale
        out.append(advantages)
        stats.num_used += 1
    return out, stats
