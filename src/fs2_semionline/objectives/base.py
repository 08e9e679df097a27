"""What every objective shares: the typed selection it trains on, the scores it is
given, what it returns, and the protocol that joins them.

    rollouts + rewards ─► Objective[ItemT].select ─► items (PreferencePair,
    PreferenceGroup, AdvantageGroup, GroupWithAdvantages), one per trained prompt ─►
    the unit scores their responses (policy, reference and generator log-probs) ─►
    Objective[ItemT].loss ─► LossOutput

An item lists the responses it trains on (``responses``, in its own order); the unit
flattens every item's responses into one batch in item order (it sees only
:class:`TrainItem`), and ``Scores.rows(i)`` gives item i's rows back. Each objective is
generic in its own item type, so it reads its items without casts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import ClassVar, Protocol, TypeVar

import torch
from torch import Tensor

from fs2_semionline.core.metrics import Metric, Term
from fs2_semionline.core.tasks import RewardKind
from fs2_semionline.losses import Mismatch, sequence_logprobs
from fs2_semionline.objectives.selection import PairingStats

#: Logged by every objective that can correct for off-policy rollouts (truncated IS).
IS_TERM = Term("is_truncated", Metric("IS Weights Truncated", 165), when="importance_cap_or_none")


@dataclass(frozen=True)
class Response:
    """One trained response: its tokens (with the EOS the model ended on, if it did) and
    the generator's log-prob of each (None: not known, e.g. fixed pairs)."""

    token_ids: tuple[int, ...]
    gen_logps: tuple[float, ...] | None = None


@dataclass(frozen=True)
class PreferencePair:
    """DPO: one chosen and one rejected response of prompt ``prompt_idx`` of the step."""

    prompt_idx: int
    prompt_ids: tuple[int, ...]
    chosen: Response
    rejected: Response

    @property
    def responses(self) -> tuple[Response, ...]:
        return (self.chosen, self.rejected)


@dataclass(frozen=True)
class PreferenceGroup:
    """GroupDPO: every chosen and every rejected response of one prompt."""

    prompt_idx: int
    prompt_ids: tuple[int, ...]
    chosen: tuple[Response, ...]
    rejected: tuple[Response, ...]
    rollout_idx: tuple[int, ...] = ()
    """Each response's index among the prompt's rollouts, in ``responses`` order."""

    @property
    def responses(self) -> tuple[Response, ...]:
        return self.chosen + self.rejected


@dataclass(frozen=True)
class AdvantageGroup:
    """GRPO: one prompt's responses with a valid reward and their advantages."""

    prompt_idx: int
    prompt_ids: tuple[int, ...]
    responses: tuple[Response, ...]
    advantages: tuple[float, ...]


@dataclass(frozen=True)
class GroupWithAdvantages:
    """GroupDPO + GRPO: a GroupDPO group and each of its responses' GRPO advantage."""

    group: PreferenceGroup
    advantages: tuple[float, ...]

    @property
    def prompt_idx(self) -> int:
        return self.group.prompt_idx

    @property
    def prompt_ids(self) -> tuple[int, ...]:
        return self.group.prompt_ids

    @property
    def responses(self) -> tuple[Response, ...]:
        return self.group.responses


class TrainItem(Protocol):
    """What the unit reads of any objective's item: which prompt, which responses."""

    @property
    def prompt_idx(self) -> int: ...

    @property
    def prompt_ids(self) -> tuple[int, ...]: ...

    @property
    def responses(self) -> tuple[Response, ...]: ...


ItemT = TypeVar("ItemT", bound=TrainItem)


@dataclass(frozen=True)
class Rollouts:
    """One step's rollouts on this rank: ``responses[i][j]`` is rollout j of prompt i,
    ``rewards[i][j]`` its reward (None = failed), ``kinds[i]`` how prompt i is rewarded."""

    prompt_ids: Sequence[tuple[int, ...]]
    responses: Sequence[Sequence[Response]]
    rewards: Sequence[Sequence[float | None]]
    kinds: Sequence[RewardKind]


@dataclass
class Scores:
    """The flattened responses of a micro-batch's items ([S, T] over response tokens)
    under the policy, the reference and the generator."""

    token_logps: Tensor
    """log π_θ per token, float32, with the gradient."""
    mask: Tensor
    lens: Tensor
    """[S] response lengths in tokens (float)."""
    offsets: list[int]
    """Item i's rows are ``offsets[i]:offsets[i + 1]``."""
    ref_token_logps: Tensor | None = None
    mismatch: Mismatch | None = None
    """Trainer vs generator log-probs (None when the generator gave none)."""

    def rows(self, i: int) -> slice:
        return slice(self.offsets[i], self.offsets[i + 1])

    def index(self, rows: Sequence[int]) -> Tensor:
        return torch.tensor(rows, dtype=torch.long, device=self.token_logps.device)

    @cached_property
    def logps(self) -> Tensor:
        """log π_θ(y|x) per response, [S]."""
        return sequence_logprobs(self.token_logps, self.mask)

    @cached_property
    def ref_logps(self) -> Tensor:
        assert self.ref_token_logps is not None, "this objective has no reference"
        return sequence_logprobs(self.ref_token_logps, self.mask)


@dataclass
class LossOutput:
    loss: Tensor
    """Summed over the items (the unit normalises by the step's item count)."""
    num_items: int
    metrics: dict[str, tuple[float, float]] = field(default_factory=dict)
    """``{name: (value, weight)}``, every name a term of the objective's ``TERMS``; the
    unit logs those its config turns on (``metric_names``)."""


@dataclass(frozen=True)
class Traits:
    """What an objective accepts, declared by the objective itself; ``recipes/checks.py``
    refuses a config that asks for anything else, before anything loads."""

    on_policy_only: bool = False
    """Trains only on rollouts of the current weights: ``generator.sync_every_n_steps=1``
    (GRPO, paper §2.3)."""
    fixed_pairs: bool = False
    """Trains on pairs read from ``dataset.pairs_path`` (offline DPO form (b))."""


class Objective(Protocol[ItemT]):
    """A training objective: which rollouts to train on (its own item type), and the loss on them."""

    TERMS: ClassVar[tuple[Term, ...]]
    """Every metric this kind of objective can log, and the config key that turns each on."""
    TRAITS: ClassVar[Traits]

    @property
    def needs_reference(self) -> bool: ...

    def metric_names(self) -> tuple[str, ...]:
        """The terms this configured objective logs (``enabled_names(TERMS, config)``)."""

    def skip_reasons(self, kinds: frozenset[RewardKind]) -> tuple[str, ...]:
        """The reasons its selection can skip a prompt, given the batch's reward kinds."""

    def select(self, rollouts: Rollouts, rng: random.Random) -> tuple[list[ItemT], PairingStats]:
        """Rewards → the items to train on, in prompt order; degenerate prompts are counted skips."""

    def loss(self, items: Sequence[ItemT], scores: Scores) -> LossOutput: ...


def preference_skip_reasons(kinds: frozenset[RewardKind]) -> tuple[str, ...]:
    """DPO and GroupDPO pair by the reward kind: binary rewards skip all-correct and
    all-incorrect prompts, scalar ones all-equal prompts."""
    reasons: list[str] = []
    if "binary" in kinds:
        reasons += ["all_correct", "all_incorrect"]
    if "scalar" in kinds:
        reasons.append("all_equal")
    return (*reasons, "too_few_valid")


def detached_mean(values: Tensor) -> float:
    return float(values.detach().double().mean()) if values.numel() else float("nan")
