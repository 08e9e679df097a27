"""Validation: sample the policy on held-out prompts and score what it writes (§3.2, §3.3).

    held-out prompts ─► N samples from the policy being trained (fairseq2's sampler,
    temperature 0.6, top-p 0.9) ─► math: Math-Verify; chat: the reward model
    ─► accuracy, reward, reward_len_norm ─► score = their mean

The paper selects non-verifiable checkpoints by the "highest length-normalised
Athene-RM-8B reward" and combined runs by "averaging length-normalised non-verifiable
reward and verifiable reward" without defining the normalisation. Its authors' code
divides the mean reward by the mean rollout length; ``reward_len_norm`` does the same
over the whole validation set (Σ reward / Σ tokens over the scored samples), so the
value does not depend on the batch size or the number of ranks. Dividing a negative
mean by the length makes longer answers score higher: that is logged, and
``validation.length_normalize=none`` uses the plain mean reward instead.

Who samples (``validation.sampler``): fairseq2's sampler on the trainer's own model
(``PolicySampler``), or the rollout generator (:class:`BoundarySampler`, vLLM: the
paper's protocol at 8B is GPU-hours with the in-process sampler). The generator is used
only when it holds the weights being validated: validation after step k syncs it to
version k when k is a sync boundary (the sync step k+1 makes anyway, so the
semi-online schedule does not change); at any other step (the end of training off a
boundary) that validation falls back to the policy sampler. Stale weights are never
validated. Batch b of every validation is sampled with the seed
:func:`validation_seed` (common.seed, b), so all checkpoints see the same sampling noise
(their differences are not noise) and nothing is kept between validations: resuming
needs no state. Every rank has the same number of batches (the last ones may be
empty), since a generator shared over the gang needs every rank at every call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fairseq2.device import Device, SupportsDeviceTransfer
from fairseq2.evaluator import EvalUnit
from fairseq2.logging import log
from fairseq2.metrics import MetricBag, Sum
from typing_extensions import override

from fs2_semionline.config.training import ValidationSection
from fs2_semionline.core.metrics import MeanOrNaN, Metric, as_float
from fs2_semionline.core.seeding import step_seed
from fs2_semionline.data.jsonl import PromptExample
from fs2_semionline.eval.chat_eval import length_normalised_reward
from fs2_semionline.generation.local import GeneratorSampler, PolicySampler
from fs2_semionline.generation.protocol import Completion, Generator, SamplingConfig
from fs2_semionline.rewards.routing import RewardRouter

#: Registered as fairseq2 metric descriptors; the higher-is-better ones select checkpoints.
VALID_METRICS: dict[str, Metric] = {
    "score": Metric("Validation Score", 80, higher_better=True),
    "accuracy": Metric("Accuracy (math)", 81, higher_better=True),
    "reward_len_norm": Metric("Length-normalised Reward (chat)", 82, higher_better=True),
    "response_len/math": Metric("Response Length (math)", 111),
    "response_len/chat": Metric("Response Length (chat)", 112),
}
_MEANS = ("accuracy", "reward/chat", "response_len/math", "response_len/chat")


@dataclass
class ValidationBatch(SupportsDeviceTransfer):
    examples: list[PromptExample]

    def to(self, device: Device, *, non_blocking: bool = False) -> None:
        """Nothing to move: the sampler encodes the prompts itself."""


def validation_seed(seed: int, batch_nr: int) -> int:
    """The sampler seed of batch ``batch_nr`` (0-based) of every validation."""
    return step_seed(seed, -1 - batch_nr) >> 1  # negative "steps": never a training step's seed


def validation_score(values: MutableMapping[str, object], tasks: frozenset[str]) -> float:
    """The mean of math accuracy and the length-normalised chat reward, over the tasks
    validated (paper §3.3). A component that could not be measured (every reward
    failed) makes the score −inf, so that checkpoint is never selected, and is logged."""
    parts = {"math": values.get("accuracy"), "chat": values.get("reward_len_norm")}
    chosen = [as_float(parts[t]) for t in sorted(tasks)]
    if not chosen or any(math.isnan(p) for p in chosen):
        log.warning("validation: no reward could be measured for some task ({}): score is -inf", parts)
        return -math.inf
    return sum(chosen) / len(chosen)


def validation_batches(
    examples: Sequence[PromptExample], batch_size: int, rank: int, world_size: int
) -> list[ValidationBatch]:
    """This rank's batches: every prompt once over the ranks (round robin), and as many
    batches on every rank (the last may be short or empty)."""
    mine = list(examples[rank::world_size])
    per_rank = -(-len(examples) // world_size)
    num_batches = -(-per_rank // batch_size)
    return [ValidationBatch(mine[b * batch_size : (b + 1) * batch_size]) for b in range(num_batches)]


class ValidationSampler(Protocol):
    def prepare(self, step_nr: int) -> None:
        """Called on every rank at the start of the validation after ``step_nr``."""

    def __call__(
        self, prompts: list[list[int]], num_samples: int, sampling: SamplingConfig, seed: int
    ) -> list[list[Completion]]: ...


class BoundarySampler:
    """Validation through the rollout generator when ``hold(step)`` makes it hold the
    weights of ``step`` (a sync boundary); otherwise, for that validation, ``fallback``
    (the trainer's own model)."""

    def __init__(self, generator: Generator[Any], hold: Callable[[int], bool], fallback: PolicySampler) -> None:
        self._generator = generator
        self._through_generator = GeneratorSampler(generator)
        self._hold, self._fallback = hold, fallback
        self._use_generator = False

    def prepare(self, step_nr: int) -> None:
        self._use_generator = self._hold(step_nr)
        if self._use_generator:
            log.info(
                "validation after step {}: sampling through the rollout generator at version {}",
                step_nr,
                self._generator.version,
            )
        else:
            log.info("validation after step {}: not a generator sync boundary, sampling the trainer's model", step_nr)

    def __call__(
        self, prompts: list[list[int]], num_samples: int, sampling: SamplingConfig, seed: int
    ) -> list[list[Completion]]:
        sample = self._through_generator if self._use_generator else self._fallback
        return sample(prompts, num_samples, sampling, seed)


class ValidationUnit(EvalUnit[ValidationBatch]):
    def __init__(
        self,
        sampler: ValidationSampler,
        config: ValidationSection,
        *,
        tasks: frozenset[str],
        max_gen_len: int,
        seed: int,
        rewards: RewardRouter,
    ) -> None:
        self._sample = sampler
        self._seed = seed
        self._batch_nr = 0
        self._config = config
        self._tasks = tasks
        self._sampling = SamplingConfig(config.temperature, config.top_p, config.max_gen_len or max_gen_len)
        self._rewards = rewards

    @override
    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        for name in _MEANS:
            metric_bag.add(name, MeanOrNaN())
        metric_bag.add("failed_rewards", Sum())

    @override
    def set_train_step_nr(self, step_nr: int) -> None:
        self._batch_nr = 0  # called at the start of every validation
        self._sample.prepare(step_nr)

    @override
    def process_batch(self, batch: ValidationBatch, metric_bag: MetricBag) -> None:
        examples = batch.examples
        completions = self._sample(
            [list(e.token_ids) for e in examples],
            self._config.num_samples,
            self._sampling,
            validation_seed(self._seed, self._batch_nr),
        )
        self._batch_nr += 1
        if not examples:  # this rank's share ran out (the others may still sample)
            return
        rewards = self._rewards.score(examples, [[c.text for c in cs] for cs in completions])
        num_failed = 0
        for task, reward_name in (("math", "accuracy"), ("chat", "reward/chat")):
            scored = [
                (r, len(c.token_ids))
                for e, cs, rs in zip(examples, completions, rewards)
                if e.task == task
                for c, r in zip(cs, rs)
                if r is not None
            ]
            num_failed += sum(r is None for e, rs in zip(examples, rewards) if e.task == task for r in rs)
            if scored:
                n = len(scored)
                metric_bag.get(reward_name, MeanOrNaN).update(sum(r for r, _ in scored) / n, weight=n)
                # Over the scored samples only: reward_len_norm is then Σ reward / Σ tokens.
                metric_bag.get(f"response_len/{task}", MeanOrNaN).update(sum(l for _, l in scored) / n, weight=n)
        metric_bag.get("failed_rewards", Sum).update(num_failed)

    @override
    def process_metric_values(self, values: MutableMapping[str, object]) -> None:
        if "chat" in self._tasks:
            reward = as_float(values["reward/chat"])
            length = as_float(values["response_len/chat"])
            values["reward_len_norm"] = length_normalised_reward(reward, length, self._config.length_normalize)
            if self._config.length_normalize == "mean_ratio" and reward < 0:
                log.warning(
                    "validation: the mean chat reward is negative ({:.4g}); divided by the length it favours longer "
                    "answers. validation.length_normalize=none selects by the plain mean reward.",
                    reward,
                )
        for task, names in (
            ("math", ("accuracy", "response_len/math")),
            ("chat", ("reward/chat", "response_len/chat")),
        ):
            if task not in self._tasks:
                for name in names:
                    values.pop(name, None)
        values["score"] = validation_score(values, self._tasks)
