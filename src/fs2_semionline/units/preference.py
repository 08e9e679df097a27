"""The training step of offline, semi-online and online DPO, GroupDPO and GRPO.

One step, as a straight line, in :meth:`PreferenceUnit.process_batch`:

    prompts ─► generator rollouts (weights of version v) ─► rewards (Math-Verify, RM)
            ─► objective.select: pairs / pair sets / advantages (degenerate: counted skips)
            ─► policy (+ reference) log-probs ─► objective.loss ─► (loss, n) to fairseq2

The objective (``objectives/``, chosen by ``loss.name``); the sync
schedule is :class:`~fs2_semionline.units.schedule.RolloutSchedule`. The unit never
calls backward or the optimizer: fairseq2's Trainer does.

Many ranks, many micro-batches: the selection is made once per step (micro-batch 0);
each micro-batch trains on the items of its share of the step's prompts. Every rank
runs the same collectives every step whatever its data: the step's item count is summed
over the ranks first, each call returns n = 1 with its summed loss scaled by
dp_size · num_micro / n_global (so fairseq2's normalisation gives the mean over all
items), a rank with nothing to train runs a zero-weight forward, and a non-finite loss
anywhere voids the whole step everywhere: every rank still runs its backward (the
collectives), and :meth:`PreferenceUnit.void_updates_of` drops every gradient before
the optimizer steps, so weights and optimizer state stay bitwise as they were.

Resumability: nothing here needs saving; every random draw is seeded from
(seed, step) (``core/seeding.py``) and the schedule restarts on a sync boundary.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from fairseq2.data.tokenizers import Tokenizer
from fairseq2.gang import FakeGang, Gang, all_sum
from fairseq2.metrics import MetricBag
from fairseq2.models.clm import CausalLM
from fairseq2.trainer import TrainUnit
from torch import Tensor
from torch.nn import Module
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from fs2_semionline.core.metrics import Metric, MetricWriter, add_metrics
from fs2_semionline.core.seeding import step_rng
from fs2_semionline.core.tasks import RewardKind, task_spec
from fs2_semionline.data.batches import PairBatch, PromptBatch, micro_range
from fs2_semionline.data.jsonl import PromptExample
from fs2_semionline.generation.protocol import Completion
from fs2_semionline.losses import Mismatch, masked_mean, mismatch
from fs2_semionline.objectives import (
    Objective,
    Response,
    Rollouts,
    Scores,
    TrainItem,
    all_objective_metrics,
    fixed_pairs,
)
from fs2_semionline.objectives.selection import SKIP_REASONS, PairingStats
from fs2_semionline.rewards.routing import RewardRouter
from fs2_semionline.units.schedule import RolloutSchedule
from fs2_semionline.units.sequences import ResponseBatch, response_stats

#: What the unit logs whatever the objective (each objective declares its own).
COMMON_METRICS: dict[str, Metric] = {
    "loss": Metric("Loss", 90),
    "entropy": Metric("Rollout Entropy", 95),
    "reward": Metric("Reward", 100),
    "reward/math": Metric("Reward (math)", 101),
    "reward/chat": Metric("Reward (chat)", 102),
    "rollout_len": Metric("Rollout Length", 110),
    "num_prompts": Metric("Trained Prompts", 129, "sum"),
    "skipped_prompts": Metric("Skipped Prompts", 131, "sum"),
    **{f"skipped/{r}": Metric(f"Skipped: {r.replace('_', ' ')}", 131, "sum") for r in SKIP_REASONS},
    "failed_rewards": Metric("Failed Rewards", 132, "sum"),
    "skipped_steps": Metric("Skipped Steps", 133, "sum"),
    "nonfinite_losses": Metric("Non-finite Losses", 134, "sum"),
    "version_lag": Metric("Generator Version Lag", 140, "max"),  # 0 on every sync step: the worst lag counts
    "generate_seconds": Metric("Generate Time (s)", 150),
    "reward_seconds": Metric("Reward Time (s)", 151),
    "forward_seconds": Metric("Forward + Loss Time (s)", 152),  # backward and optimizer: fairseq2's own
    "sync_seconds": Metric("Sync Time (s)", 153),
    # How off-policy the trained rollouts are (losses/importance.py).
    "logprob_diff": Metric("Rollout |Δ log-prob| (mean)", 160),
    "logprob_diff_max": Metric("Rollout |Δ log-prob| (max)", 161, "max"),
    "log_is_ratio": Metric("Sequence log IS Ratio (mean)", 162),
    "log_is_ratio_max": Metric("Sequence log IS Ratio (max)", 163, "max"),
    "log_is_ratio_min": Metric("Sequence log IS Ratio (min)", 164, "min"),
}
_MISMATCH = ("logprob_diff", "logprob_diff_max", "log_is_ratio", "log_is_ratio_max", "log_is_ratio_min")
_GENERATED = (
    "reward",
    "rollout_len",
    "skipped_prompts",
    "failed_rewards",
    "version_lag",
    "generate_seconds",
    "reward_seconds",
    "sync_seconds",
)


def train_metrics() -> dict[str, Metric]:
    """Every metric a training run can log (registered as fairseq2 descriptors)."""
    return COMMON_METRICS | all_objective_metrics()


@dataclass
class _Step:
    """What one step trains on (made once, at micro-batch 0)."""

    items: list[TrainItem]
    num_prompts: int  # this rank's prompts of the step (items index into them)
    idle_ids: Sequence[int]  # a prompt for a zero-weight forward
    num_global: int = 0  # items on every rank together: the gradient's n
    voided: bool = False  # a micro-batch had a non-finite loss: no update (counted once as a skipped step)

    def micro_items(self, micro: int, num_micro: int) -> list[TrainItem]:
        start, end = micro_range(self.num_prompts, micro, num_micro)
        return [item for item in self.items if start <= item.prompt_idx < end]


class PreferenceUnit(TrainUnit[PromptBatch | PairBatch]):
    def __init__(
        self,
        policy: Module,
        objective: Objective[Any],
        tokenizer: Tokenizer,
        *,
        reference: CausalLM | None,
        schedule: RolloutSchedule | None,
        rewards: RewardRouter | None = None,
        tasks: frozenset[str] = frozenset({"math"}),
        entropy_coef: float = 0.0,
        seed: int,
        device: torch.device,
        dp_gang: Gang | None = None,
        rollout_logprobs: bool = False,
    ) -> None:
        """``policy``: the data-parallel facade (forward passes go through it).
        ``schedule`` and ``rewards``: None for fixed pairs. ``tasks``: the tasks the prompts hold (a batch
        may mix them). ``rollout_logprobs``: the generator returns its log-probs of the
        sampled tokens (then the mismatch metrics are logged, and truncated IS can use them)."""
        self._policy = policy
        self._objective = objective
        self._reference = reference if objective.needs_reference else None
        self._schedule = schedule
        self._rewards = rewards if rewards is not None else RewardRouter()
        self._tasks = tasks
        self._entropy_coef = entropy_coef
        self._seed = seed
        self._device = device
        self._dp_gang: Gang = dp_gang if dp_gang is not None else FakeGang(device)
        self._rollout_logprobs = rollout_logprobs and schedule is not None
        pad_idx, eos_idx = tokenizer.vocab_info.pad_idx, tokenizer.vocab_info.eos_idx
        if pad_idx is None or eos_idx is None:
            raise ValueError("the tokenizer needs PAD and EOS tokens")
        self._pad_idx, self._eos_idx = pad_idx, eos_idx
        self._specs = train_metrics()
        self._names = self.metric_names()
        self._step_nr = 0
        self._step: _Step | None = None

    def metric_names(self) -> list[str]:
        """The metrics this run logs: the objective's and the common ones it computes."""
        kinds = frozenset(_reward_kind(t) for t in self._tasks)
        names = ["loss", "entropy", "num_prompts", "skipped_steps", "nonfinite_losses", "forward_seconds"]
        if self._schedule is not None:
            names += [*_GENERATED, *(f"reward/{t}" for t in sorted(self._tasks))]
            names += [f"skipped/{r}" for r in self._objective.skip_reasons(kinds)]
        if self._rollout_logprobs:
            names += _MISMATCH
        names += self._objective.metric_names()
        return sorted(set(names), key=lambda n: self._specs[n].priority)

    @override
    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        add_metrics(metric_bag, self._names, self._specs)

    @override
    def set_step_nr(self, step_nr: int) -> None:
        self._step_nr = step_nr

    @property
    def schedule(self) -> RolloutSchedule | None:
        return self._schedule

    def void_updates_of(self, optimizer: Optimizer) -> RemovableHandle:
        """Make a voided step a true no-op for ``optimizer``.

        A non-finite forward pass (e.g. a bf16 overflow) poisons the backward of any
        loss built on it: 0 · NaN = NaN on every parameter. And even exactly zero
        gradients move the weights under AdamW (momentum, weight decay) and advance
        its step counts. So before the optimizer steps on a voided step, every
        gradient is dropped: torch's optimizers skip a parameter without a gradient
        entirely, leaving it and its state bitwise as they were. The flag is the
        same on every rank (the non-finite count is summed over them)."""

        def drop_gradients(opt: Optimizer, args: object, kwargs: object) -> None:
            if self._step is not None and self._step.voided:
                for group in opt.param_groups:
                    for param in group["params"]:
                        param.grad = None

        return optimizer.register_step_pre_hook(drop_gradients)

    # --- the step ---------------------------------------------------------------

    @override
    def process_batch(self, batch: PromptBatch | PairBatch, metric_bag: MetricBag) -> tuple[Tensor, int]:
        metrics = MetricWriter(metric_bag, self._specs, self._names)
        if batch.micro == 0:
            self._step = self._select(batch, metrics)  # sync → rollouts → rewards → selection
        step = self._step
        assert step is not None, "a step must start with its micro-batch 0"
        if step.num_global == 0:
            return self._skip()  # no rank has anything: no rank runs a forward pass
        start = time.perf_counter()
        if step.voided:  # an earlier micro-batch voided the step: only the collectives remain
            loss, logits = self._idle_forward(step.idle_ids)
            metrics.update("forward_seconds", time.perf_counter() - start)
            return logits.sum() * 0.0, 1
        items = step.micro_items(batch.micro, batch.num_micro)
        if items:
            scores, logits, neg_entropy = self._scores(items, metrics)  # policy (+ reference) log-probs
            out = self._objective.loss(items, scores)  # summed over the items, with its metrics
            loss = self._regularised(out.loss, out.num_items, scores, neg_entropy, metrics)
        else:
            loss, logits = self._idle_forward(step.idle_ids)  # the collectives run on every rank
        result = self._normalised(loss, logits, step, batch.num_micro, metrics)
        if items and not step.voided:  # a voided step trains nothing: no loss is logged
            metrics.update_terms(out.metrics)
            metrics.update("loss", loss.item() / out.num_items, out.num_items)
            metrics.update("num_prompts", float(out.num_items))
        metrics.update("forward_seconds", time.perf_counter() - start)
        return result

    def _select(self, batch: PromptBatch | PairBatch, metrics: MetricWriter) -> _Step:
        if isinstance(batch, PairBatch):
            items: list[TrainItem] = list(fixed_pairs(batch.pairs))
            step = _Step(items, len(batch.pairs), batch.pairs[0].prompt_ids)
        else:
            assert self._schedule is not None, "prompt batches need a generator"
            examples = batch.step_examples
            metrics.update("sync_seconds", self._schedule.before_step(self._step_nr))
            start = time.perf_counter()
            completions = self._schedule.rollouts(batch, self._step_nr)
            metrics.update("generate_seconds", time.perf_counter() - start)
            metrics.update("version_lag", float(self._step_nr - 1 - self._schedule.generator.version))
            rollouts = self._rewarded(examples, completions, metrics)
            items, stats = self._objective.select(rollouts, step_rng(self._seed, self._step_nr))
            self._log_selection(stats, metrics)
            step = _Step(items, len(examples), examples[0].token_ids)
        # Every rank learns how many items train this step on all ranks together: the
        # gradient is normalised by it, and a rank with none still joins every collective.
        step.num_global = int(all_sum(self._dp_gang, len(step.items)).item())
        # fairseq2 sums a Sum over ranks: a step skipped everywhere counts once.
        metrics.update("skipped_steps", 1.0 if step.num_global == 0 and self._dp_gang.rank == 0 else 0.0)
        return step

    def _rewarded(
        self, examples: Sequence[PromptExample], completions: list[list[Completion]], metrics: MetricWriter
    ) -> Rollouts:
        """One reward per rollout, each prompt routed to its task's reward (None = failed)."""
        start = time.perf_counter()
        texts = [[c.text for c in cs] for cs in completions]
        rewards = self._rewards.score(examples, texts)
        metrics.update("reward_seconds", time.perf_counter() - start)
        for task in (None, *sorted(self._tasks)):
            valid = [r for e, row in zip(examples, rewards) if task in (None, e.task) for r in row if r is not None]
            if valid:
                metrics.update("reward" if task is None else f"reward/{task}", sum(valid) / len(valid), len(valid))
        lens = [len(c.token_ids) for cs in completions for c in cs]
        metrics.update("rollout_len", sum(lens) / len(lens), len(lens))
        responses = [[self._response(c) for c in cs] for cs in completions]
        kinds = [_reward_kind(e.task) for e in examples]
        return Rollouts([tuple(e.token_ids) for e in examples], responses, rewards, kinds)

    def _response(self, completion: Completion) -> Response:
        """The sampled tokens plus EOS when the model ended the response itself (the
        generator's log-probs cover every sampled token, EOS included)."""
        ids = (*completion.token_ids, self._eos_idx) if completion.finished else tuple(completion.token_ids)
        return Response(ids, completion.logprobs)

    def _log_selection(self, stats: PairingStats, metrics: MetricWriter) -> None:
        metrics.update("skipped_prompts", float(stats.num_skipped))
        metrics.update("failed_rewards", float(stats.num_failed_rewards))
        for reason, count in stats.skipped.items():
            metrics.update(f"skipped/{reason}", float(count))

    def _scores(self, items: Sequence[TrainItem], metrics: MetricWriter) -> tuple[Scores, Tensor, Tensor]:
        """Every item's responses in one batch: policy, reference and generator log-probs."""
        prompts = [item.prompt_ids for item in items for _ in item.responses]
        responses = [r for item in items for r in item.responses]
        offsets = [0]
        for item in items:
            offsets.append(offsets[-1] + len(item.responses))
        batch = ResponseBatch.build(prompts, [r.token_ids for r in responses], self._pad_idx, self._device)
        stats = response_stats(self._policy, batch)
        ref_token_logps = None
        if self._reference is not None:
            with torch.no_grad():
                ref_token_logps = response_stats(self._reference, batch).token_logps
        scores = Scores(stats.token_logps, batch.mask, batch.response_lens, offsets, ref_token_logps)
        scores.mismatch = self._mismatch(responses, scores, metrics)
        return scores, stats.logits, stats.token_neg_entropy

    def _mismatch(self, responses: Sequence[Response], scores: Scores, metrics: MetricWriter) -> Mismatch | None:
        """Trainer vs generator log-probs of the trained tokens (None when the generator
        gave none, or a response's count differs from its tokens')."""
        if not self._rollout_logprobs:
            return None
        lens = scores.mask.sum(dim=-1).tolist()
        flat: list[float] = []
        for r, n in zip(responses, lens):
            if r.gen_logps is None or len(r.gen_logps) != n:
                return None
            flat += r.gen_logps
        gen = torch.zeros(scores.mask.shape, dtype=torch.float64, device=scores.mask.device)
        gen[scores.mask.bool()] = torch.tensor(flat, dtype=torch.float64, device=gen.device)
        off = mismatch(scores.token_logps, gen, scores.mask)
        metrics.update("logprob_diff", off.mean_abs, off.num_tokens)
        metrics.update("logprob_diff_max", off.max_abs)
        seq = off.seq_log_ratio
        metrics.update("log_is_ratio", float(seq.mean()), len(seq))
        metrics.update("log_is_ratio_max", float(seq.max()))
        metrics.update("log_is_ratio_min", float(seq.min()))
        return off

    def _regularised(
        self, loss: Tensor, num_items: int, scores: Scores, neg_entropy: Tensor, metrics: MetricWriter
    ) -> Tensor:
        """The entropy term of §4.2, for any objective, and the entropy metric."""
        if self._entropy_coef != 0.0:
            # After fairseq2 divides by n: + coef · mean negative entropy of the rollout tokens.
            loss = loss + num_items * self._entropy_coef * masked_mean(neg_entropy, scores.mask)
        with torch.no_grad():
            # A mean over tokens, weighted by tokens: the same however a step is cut.
            entropy = -masked_mean(neg_entropy.detach(), scores.mask).item()
            metrics.update("entropy", entropy, float(scores.mask.sum()))
        return loss

    def _normalised(
        self, loss: Tensor, logits: Tensor, step: _Step, num_micro: int, metrics: MetricWriter
    ) -> tuple[Tensor, int]:
        """The micro-batch's summed loss, scaled so that fairseq2's normalisation gives
        the mean over every rank's and micro-batch's items: each call returns n = 1
        (so every rank joins fairseq2's all-reduce of n every step, whatever its data)
        and a loss multiplied by dp_size · num_micro / n_global.

        A non-finite loss on any rank voids the step on every rank: each still runs its
        backward (the collectives) through a zero-weight loss, and the gradients (NaN
        when the forward itself was not finite) are dropped before the optimizer steps
        (:meth:`void_updates_of`)."""
        nonfinite = int(all_sum(self._dp_gang, 0 if bool(torch.isfinite(loss.detach())) else 1).item())
        metrics.update("nonfinite_losses", float(nonfinite) if self._dp_gang.rank == 0 else 0.0)
        if nonfinite:
            if self._dp_gang.rank == 0 and not step.voided:
                metrics.update("skipped_steps", 1.0)
            step.voided = True
            return logits.sum() * 0.0, 1
        return loss * (self._dp_gang.size * num_micro / step.num_global), 1

    def _idle_forward(self, prompt_ids: Sequence[int]) -> tuple[Tensor, Tensor]:
        """A zero-weight forward pass for a rank with nothing to train this micro-batch:
        FSDP's all-gathers and reduce-scatters and DDP's all-reduce must run on every
        rank, or the others wait forever."""
        ids = list(prompt_ids[:2]) if len(prompt_ids) >= 2 else [*prompt_ids, self._eos_idx]
        batch = ResponseBatch.build([ids[:1]], [ids[1:2]], self._pad_idx, self._device)
        stats = response_stats(self._policy, batch)
        if self._reference is not None:
            with torch.no_grad():
                response_stats(self._reference, batch)
        return stats.logits.sum() * 0.0, stats.logits

    def _skip(self) -> tuple[Tensor, int]:
        """No parameter update on any rank: a loss with no path to the model leaves every
        grad None, and n = 0 everywhere skips fairseq2's all-reduce of n everywhere."""
        return torch.zeros((), device=self._device, requires_grad=True), 0


def _reward_kind(task: str) -> RewardKind:
    """How the task's rewards pair (``core/tasks.py``)."""
    return task_spec(task).reward_kind
