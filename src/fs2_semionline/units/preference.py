"""The training step of offline, semi-online and online DPO, GroupDPO and GRPO.

One step, as a straight line (../DESIGN.md):

    prompts ─► generator.rollouts (weights of version v) ─► Math-Verify rewards
            ─► pairs / pair sets / advantages (degenerate prompts: counted skips)
            ─► policy (+ reference) log-probs ─► objective ─► (loss, n) to fairseq2's Trainer

Every s steps the generator (and, if configured, the reference) is synced to the
policy first. The unit never calls backward or the optimizer: fairseq2's Trainer does.

Many ranks, many micro-batches: the first line runs once per step, for the whole step;
the last line once per micro-batch (``trainer.grad_accumulation.num_batches``). Every rank
runs the same collectives every step whatever its data: the step's item count is summed
over the ranks first, each call returns n = 1 with its summed loss scaled by
dp_size · num_micro / n_global (so fairseq2's normalisation gives the mean over all
items), a rank with nothing to train runs a zero-weight forward, and a non-finite loss
anywhere voids that micro-batch everywhere.

Resumability: nothing here needs saving. The generator's weights at a sync step are
the policy's weights at that step (checkpoints are taken on sync boundaries, which the
recipe enforces), and every random draw (sampling, pairing) is seeded from
(seed, step), so a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from fairseq2.data.tokenizers import Tokenizer
from fairseq2.gang import Gang, all_sum
from fairseq2.metrics import Max, Mean, MetricBag, Min, Sum
from fairseq2.models.clm import CausalLM
from fairseq2.trainer import TrainUnit
from torch import Tensor
from torch.nn import Module
from typing_extensions import override

from fs2_semionline.config import LossSection, ReferenceSyncSection, RolloutGeneratorSection
from fs2_semionline.data.jsonl import PairExample, PromptExample
from fs2_semionline.generation.protocol import Completion, Generator, PendingRollouts, SamplingConfig
from fs2_semionline.objectives import (
    Mismatch,
    dpo_loss,
    group_dpo_loss,
    grpo_loss,
    masked_mean,
    mismatch,
    sequence_logprobs,
    sum_by_group,
    truncated_weights,
)
from fs2_semionline.pairing import (
    PairingStats,
    RewardKind,
    grpo_advantages,
    select_dpo_pairs,
    select_pair_sets,
    step_rng,
    step_seed,
)
from fs2_semionline.rewards import MathVerifyPool
from fs2_semionline.rewards.routing import score_responses
from fs2_semionline.sharding import copy_weights, full_weight_buckets
from fs2_semionline.units.sequences import ResponseBatch, response_stats

# name → (display name, priority); registered as fairseq2 metric descriptors.
METRICS: dict[str, tuple[str, int]] = {
    "loss": ("Loss", 90),
    "dpo_loss": ("DPO Loss", 91),
    "nll_loss": ("NLL Loss", 92),
    "grpo_loss": ("GRPO Loss", 93),
    "kl": ("KL (k3)", 94),
    "entropy": ("Rollout Entropy", 95),
    "reward": ("Reward", 100),
    "reward/math": ("Reward (math)", 101),
    "reward/chat": ("Reward (chat)", 102),
    "rollout_len": ("Rollout Length", 110),
    "chosen_logps": ("Chosen Log-prob", 120),
    "rejected_logps": ("Rejected Log-prob", 121),
    "chosen_len": ("Chosen Length", 122),
    "rejected_len": ("Rejected Length", 123),
    "num_pairs": ("Pairs", 130),
    "skipped_prompts": ("Skipped Prompts", 131),
    "failed_rewards": ("Failed Rewards", 132),
    "skipped_steps": ("Skipped Steps", 133),
    "nonfinite_losses": ("Non-finite Losses", 134),
    "version_lag": ("Generator Version Lag", 140),
    "generate_seconds": ("Generate Time (s)", 150),
    "reward_seconds": ("Reward Time (s)", 151),
    "train_seconds": ("Loss Time (s)", 152),
    "sync_seconds": ("Sync Time (s)", 153),
    # How off-policy the trained rollouts are (objectives/importance.py).
    "logprob_diff": ("Rollout |Δ log-prob| (mean)", 160),
    "logprob_diff_max": ("Rollout |Δ log-prob| (max)", 161),
    "log_is_ratio": ("Sequence log IS Ratio (mean)", 162),
    "log_is_ratio_max": ("Sequence log IS Ratio (max)", 163),
    "log_is_ratio_min": ("Sequence log IS Ratio (min)", 164),
    "is_truncated": ("IS Weights Truncated", 165),
}
_MISMATCH = {"logprob_diff", "logprob_diff_max", "log_is_ratio", "log_is_ratio_max", "log_is_ratio_min"}
_SUMS = {"num_pairs", "skipped_prompts", "failed_rewards", "skipped_steps", "nonfinite_losses"}
# The lag is 0 on every sync step: the worst lag in a publish window is the useful number.
_MAXES = {"version_lag", "logprob_diff_max", "log_is_ratio_max"}
_MINS = {"log_is_ratio_min"}


class MeanOrNaN(Mean):
    """A mean that is NaN, not 0, when nothing was measured in its window (e.g. every
    reward failed): a silent 0 would read as a real reward. Also exact means of 0 no
    longer trip torcheval's "No calls to update()" warning."""

    @torch.inference_mode()
    def compute(self) -> Tensor:
        if not self.weights:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.weighted_sum / self.weights


def _metric_kls(name: str) -> type[Mean] | type[Sum] | type[Max] | type[Min]:
    return Sum if name in _SUMS else Max if name in _MAXES else Min if name in _MINS else MeanOrNaN


@dataclass
class PromptBatch:
    """One micro-batch of one step's prompts on this data-parallel rank (they stay on the
    CPU; the unit moves tensors itself).

    ``window`` holds this rank's prompts of this step and of the steps up to the next
    generator sync (``index`` is this step's place in it), so the generator can be
    handed all of them right after a sync and work ahead of the trainer (asynchronous
    semi-online). With gradient accumulation (``trainer.grad_accumulation.num_batches``
    = k) fairseq2 calls the unit k times per step; ``micro`` says which k-th of the
    step's prompts this call trains on. Rollouts, rewards and pairs are made once per
    step, for the whole step, whatever k is.
    """

    window: tuple[list[PromptExample], ...]
    index: int = 0
    micro: int = 0
    num_micro: int = 1

    @property
    def step_examples(self) -> list[PromptExample]:
        return self.window[self.index]

    @property
    def examples(self) -> list[PromptExample]:
        """This micro-batch's prompts."""
        start, end = micro_range(len(self.step_examples), self.micro, self.num_micro)
        return self.step_examples[start:end]

    def to(self, device: torch.device, *, non_blocking: bool = False) -> "PromptBatch":
        return self


@dataclass
class PairBatch:
    """Offline DPO form (b): fixed pairs read from a file; no generation, no rewards.
    ``pairs`` are the whole step's; ``micro`` as in :class:`PromptBatch`."""

    pairs: list[PairExample]
    micro: int = 0
    num_micro: int = 1

    def to(self, device: torch.device, *, non_blocking: bool = False) -> "PairBatch":
        return self


def micro_range(num_items: int, micro: int, num_micro: int) -> tuple[int, int]:
    """[start, end) of micro-batch ``micro`` of ``num_micro`` equal parts of a step."""
    size = num_items // num_micro
    return micro * size, (micro + 1) * size if micro < num_micro - 1 else num_items


@dataclass
class _Items:
    """One micro-batch's selected sequences (see :meth:`PreferenceUnit._micro_items`)."""

    prompt_ids: list[Sequence[int]] = field(default_factory=list)
    response_ids: list[Sequence[int]] = field(default_factory=list)
    groups: list[tuple[list[int], list[int]]] = field(default_factory=list)
    advantages: list[float] = field(default_factory=list)
    gen_logps: list[tuple[float, ...] | None] = field(default_factory=list)  # the generator's, per response
    num_items: int = 0  # prompts (DPO: pairs) the loss averages over


@dataclass
class _Selection:
    """What one step trains on (made once per step): (prompt, rollout) picks per prompt,
    GroupDPO groups and GRPO advantages alike; see :meth:`PreferenceUnit._select`."""

    prompt_ids: list[list[int]]
    per_prompt: dict[int, Any]  # prompt index → its pair / pair set / advantages row
    rollouts: list[list[Completion]] | None = None
    advantages: list[list[float | None]] | None = None
    fixed_pairs: list[PairExample] | None = None
    num_global: int = 0  # prompts with a selection on every rank together (the gradient's n)
    voided: bool = False  # a micro-batch had a non-finite loss (counted once as a skipped step)


def sync_steps(step_nr: int, every_n_steps: int | None) -> bool:
    """Steps are 1-based; the generator syncs before steps 1, s+1, 2s+1, ... (offline: 1 only)."""
    if every_n_steps is None:
        return step_nr == 1
    return (step_nr - 1) % every_n_steps == 0


class PreferenceUnit(TrainUnit[PromptBatch]):
    def __init__(
        self,
        policy: Module,
        policy_module: CausalLM,
        reference: CausalLM | None,
        generator: Generator | None,
        scorer: MathVerifyPool | None,
        tokenizer: Tokenizer,
        *,
        reward_model: Any = None,
        tasks: frozenset[str] = frozenset({"math"}),
        generator_config: RolloutGeneratorSection,
        loss_config: LossSection,
        reference_sync: ReferenceSyncSection,
        seed: int,
        device: torch.device,
        dp_gang: Gang | None = None,
        sync_dtype: torch.dtype | None = None,
        rollout_logprobs: bool = False,
    ) -> None:
        """``dp_gang``: the data-parallel gang (None: a single process). ``sync_dtype``:
        the generator's serving dtype; weights are cast as they are gathered.
        ``rollout_logprobs``: the generator returns its log-probs of the sampled tokens
        (then the mismatch metrics are logged, and truncated IS can use them)."""
        from fairseq2.gang import FakeGang

        self._dp_gang: Gang = dp_gang if dp_gang is not None else FakeGang(device)
        self._sync_dtype = sync_dtype
        self._rollout_logprobs = rollout_logprobs and generator is not None
        self._selection: _Selection | None = None
        self._policy = policy  # the data-parallel facade: forward passes go through it
        self._policy_module = policy_module  # the bare model: its state dict is synced
        self._reference = reference
        self._generator = generator
        self._scorer = scorer
        self._reward_model = reward_model  # RayRewardScorer for chat prompts
        self._tasks = tasks  # the tasks the data holds; a batch may mix them
        pad_idx = tokenizer.vocab_info.pad_idx
        eos_idx = tokenizer.vocab_info.eos_idx
        if pad_idx is None or eos_idx is None:
            raise ValueError("the tokenizer needs PAD and EOS tokens")
        self._pad_idx, self._eos_idx = pad_idx, eos_idx
        self._gen = generator_config
        self._loss = loss_config
        self._ref_sync = reference_sync
        self._seed = seed
        self._device = device
        self._step_nr = 0
        self._pending: list[PendingRollouts | None] = []
        self._metrics: set[str] = set()
        self._sampling = SamplingConfig(generator_config.temperature, generator_config.top_p, generator_config.max_gen_len)

    def metric_names(self) -> list[str]:
        """The metrics this loss produces (an unused metric would be logged as a silent 0)."""
        name, cfg = self._loss.name, self._loss
        skip: set[str] = set()
        if name == "grpo":
            skip |= {"dpo_loss", "nll_loss", "chosen_logps", "rejected_logps", "chosen_len", "rejected_len"}
            if cfg.beta == 0.0:
                skip.add("kl")
        else:
            skip.add("kl")
            if cfg.nll_scale == 0.0 or name != "dpo":
                skip.add("nll_loss")
            if name != "group_dpo_grpo":
                skip.add("grpo_loss")
        skip |= {f"reward/{t}" for t in ("math", "chat") if t not in self._tasks}
        if not self._rollout_logprobs:
            skip |= _MISMATCH
        if not self._rollout_logprobs or cfg.importance_sampling == "none":
            skip.add("is_truncated")
        if self._generator is None:  # pairs from a file: nothing generated, nothing rewarded
            skip |= {"reward", "reward/math", "reward/chat", "rollout_len", "skipped_prompts", "failed_rewards", "version_lag",
                     "generate_seconds", "reward_seconds", "sync_seconds"}  # fmt: skip
        return [m for m in METRICS if m not in skip]

    @override
    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        self._metrics = set(self.metric_names())
        for name in self._metrics:
            metric_bag.add(name, _metric_kls(name)())

    @override
    def set_step_nr(self, step_nr: int) -> None:
        self._step_nr = step_nr

    # --- the step ---------------------------------------------------------------

    @override
    def process_batch(self, batch: PromptBatch | PairBatch, metric_bag: MetricBag) -> tuple[Tensor, int]:
        """Micro-batch 0 of a step makes the step's selection (sync, rollouts, rewards,
        pairs); every micro-batch trains on its share of it."""
        if batch.micro == 0:
            self._selection = self._prepare_step(batch, metric_bag)
        selection = self._selection
        assert selection is not None, "a step must start with its micro-batch 0"
        start = time.perf_counter()
        items = self._micro_items(selection, batch)
        result = self._micro_loss(items, selection, batch.num_micro, metric_bag)
        self._update(metric_bag, "train_seconds", time.perf_counter() - start)
        return result

    def _prepare_step(self, batch: PromptBatch | PairBatch, metric_bag: MetricBag) -> _Selection:
        if isinstance(batch, PairBatch):
            pairs = batch.pairs
            selection = _Selection([p.prompt_ids for p in pairs], dict(enumerate(pairs)), fixed_pairs=pairs)
        else:
            assert self._generator is not None, "prompt batches need a generator"
            step = self._step_nr
            self._maybe_sync(step, metric_bag)
            examples = batch.step_examples

            start = time.perf_counter()
            rollouts = self._generator.wait(self._pending_rollouts(batch, step))
            self._update(metric_bag, "generate_seconds", time.perf_counter() - start)
            self._update(metric_bag, "version_lag", float(step - 1 - self._generator.version))

            start = time.perf_counter()
            rewards = self._score(examples, rollouts)
            self._update(metric_bag, "reward_seconds", time.perf_counter() - start)
            self._log_rewards(metric_bag, examples, rollouts, rewards)
            selection = self._select(examples, rollouts, rewards, metric_bag)
        # Every rank learns how many prompts train this step on all ranks together: the
        # gradient is normalised by it, and a rank with none still joins every collective.
        selection.num_global = int(all_sum(self._dp_gang, len(selection.per_prompt)).item())
        # fairseq2 sums a Sum over ranks: a step skipped everywhere counts once.
        skipped = selection.num_global == 0 and self._dp_gang.rank == 0
        self._update(metric_bag, "skipped_steps", 1.0 if skipped else 0.0)
        return selection

    def _select(
        self,
        examples: Sequence[PromptExample],
        rollouts: list[list[Completion]],
        rewards: list[list[float | None]],
        metric_bag: MetricBag,
    ) -> _Selection:
        """Rewards → the step's pairs / pair sets / advantages, keyed by prompt index."""
        name = self._loss.name
        per_prompt: dict[int, Any]
        advantages = None
        if name == "dpo":
            pairs, stats = select_dpo_pairs(rewards, self._reward_kinds(examples), step_rng(self._seed, self._step_nr))
            per_prompt = {p.prompt_idx: p for p in pairs}
        elif name in ("group_dpo", "group_dpo_grpo"):
            sets, stats = select_pair_sets(rewards, self._reward_kinds(examples))
            per_prompt = {s.prompt_idx: s for s in sets}
            if name == "group_dpo_grpo":
                advantages, _ = grpo_advantages(rewards, normalize_std=self._loss.normalize_advantage_std)
        elif name == "grpo":
            advantages, stats = grpo_advantages(rewards, normalize_std=self._loss.normalize_advantage_std)
            per_prompt = {i: row for i, row in enumerate(advantages) if any(a is not None for a in row)}
        else:
            raise ValueError(f"unknown loss.name '{name}'")
        self._log_pairing(metric_bag, stats)
        return _Selection([e.token_ids for e in examples], per_prompt, rollouts=rollouts, advantages=advantages)

    def _micro_items(self, selection: _Selection, batch: PromptBatch | PairBatch) -> _Items:
        """The selected (prompt, response) sequences of this micro-batch's prompts.

        ``dpo``: the first half are the chosen responses, the second half the rejected
        ones, pair by pair. ``group_dpo*``: ``groups`` index the responses. ``grpo``:
        one advantage per response.
        """
        start, end = micro_range(len(selection.prompt_ids), batch.micro, batch.num_micro)
        chosen = [i for i in range(start, end) if i in selection.per_prompt]
        items = _Items()
        if selection.fixed_pairs is not None:
            pairs = [selection.fixed_pairs[i] for i in chosen]
            items.prompt_ids = [p.prompt_ids for p in pairs] * 2
            items.response_ids = [p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs]
            items.num_items = len(pairs)
            return items
        assert selection.rollouts is not None
        name = self._loss.name
        picks: list[tuple[int, int]] = []
        if name == "dpo":
            dpo_pairs = [selection.per_prompt[i] for i in chosen]
            picks = [(p.prompt_idx, p.chosen_idx) for p in dpo_pairs] + [(p.prompt_idx, p.rejected_idx) for p in dpo_pairs]
        elif name in ("group_dpo", "group_dpo_grpo"):
            for i in chosen:
                pair_set = selection.per_prompt[i]
                first = len(picks)
                picks += [(i, j) for j in (*pair_set.chosen, *pair_set.rejected)]
                items.groups.append(
                    (list(range(first, first + len(pair_set.chosen))), list(range(first + len(pair_set.chosen), len(picks))))
                )
        else:
            picks = [(i, j) for i in chosen for j, a in enumerate(selection.per_prompt[i]) if a is not None]
        if selection.advantages is not None:
            items.advantages = [float(a) if (a := selection.advantages[i][j]) is not None else 0.0 for i, j in picks]
        items.prompt_ids = [selection.prompt_ids[i] for i, _ in picks]
        items.response_ids = [self._response_ids(selection.rollouts[i][j]) for i, j in picks]
        items.gen_logps = [selection.rollouts[i][j].logprobs for i, j in picks]
        items.num_items = len(chosen)
        return items

    def _micro_loss(self, items: _Items, selection: _Selection, num_micro: int, metric_bag: MetricBag) -> tuple[Tensor, int]:
        """The micro-batch's summed loss, scaled so that fairseq2's normalisation gives
        the mean over every rank's and micro-batch's items: each call returns n = 1
        (so every rank joins fairseq2's all-reduce of n every step, whatever its data)
        and a loss multiplied by dp_size · num_micro / n_global."""
        if selection.num_global == 0:
            return self._skip()  # no rank has anything: no rank runs a forward pass
        if items.num_items == 0:
            loss, logits = self._idle_forward(selection.prompt_ids[0])
        else:
            loss, logits = self._objective(items, metric_bag)
        # A non-finite loss on any rank voids this micro-batch on every rank: each still
        # runs its backward (the collectives), through a zero-weight loss whose gradient is
        # exactly 0 (masking inside the loss would still send NaN into the gradients).
        nonfinite = int(all_sum(self._dp_gang, 0 if bool(torch.isfinite(loss.detach())) else 1).item())
        self._update(metric_bag, "nonfinite_losses", float(nonfinite) if self._dp_gang.rank == 0 else 0.0)
        if nonfinite:
            if self._dp_gang.rank == 0 and not selection.voided:
                self._update(metric_bag, "skipped_steps", 1.0)
            selection.voided = True
            return logits.sum() * 0.0, 1
        return loss * (self._dp_gang.size * num_micro / selection.num_global), 1

    def _idle_forward(self, prompt_ids: Sequence[int]) -> tuple[Tensor, Tensor]:
        """A zero-weight forward pass for a rank with nothing to train this micro-batch:
        FSDP's all-gathers and reduce-scatters and DDP's all-reduce must run on every
        rank, or the others wait forever."""
        ids = list(prompt_ids[:2]) if len(prompt_ids) >= 2 else [*prompt_ids, self._eos_idx]
        batch = ResponseBatch.build([ids[:1]], [ids[1:2]], self._pad_idx, self._device)
        stats = response_stats(self._policy, batch)  # type: ignore[arg-type]
        if self._loss.needs_reference and self._reference is not None:
            with torch.no_grad():
                response_stats(self._reference, batch)  # type: ignore[arg-type]
        return stats.logits.sum() * 0.0, stats.logits

    def _objective(self, items: _Items, metric_bag: MetricBag) -> tuple[Tensor, Tensor]:
        """Log-probs of the selected responses → the configured loss (summed over items)."""
        name = self._loss.name
        response_ids, groups, advantages, num_items = items.response_ids, items.groups, items.advantages, items.num_items
        batch = ResponseBatch.build(items.prompt_ids, response_ids, self._pad_idx, self._device)
        stats = response_stats(self._policy, batch)  # type: ignore[arg-type]
        logits, token_logps = stats.logits, stats.token_logps
        logps = sequence_logprobs(token_logps, batch.mask)
        ref_token_logps = None
        if self._loss.needs_reference and self._reference is not None:
            with torch.no_grad():
                ref_token_logps = response_stats(self._reference, batch).token_logps  # type: ignore[arg-type]
        ref_logps = sequence_logprobs(ref_token_logps, batch.mask) if ref_token_logps is not None else None
        off = self._mismatch(items, token_logps, batch.mask, metric_bag)
        truncate = off is not None and self._loss.importance_sampling == "truncated"

        loss_cfg = self._loss
        if name == "dpo":
            assert ref_logps is not None
            num = len(response_ids) // 2
            out = dpo_loss(
                logps[:num], logps[num:], ref_logps[:num], ref_logps[num:], beta=loss_cfg.beta,
                chosen_lens=batch.response_lens[:num], rejected_lens=batch.response_lens[num:],
                length_normalize=loss_cfg.length_normalize, nll_scale=loss_cfg.nll_scale,
                nll_length_normalize=loss_cfg.nll_length_normalize,
            )  # fmt: skip
            per_item, num_items = out.loss, num
            if truncate:
                assert off is not None
                log_pair = off.seq_log_ratio[:num] + off.seq_log_ratio[num:]  # ρ(y_w)·ρ(y_l), in log space
                weights = truncated_weights(log_pair, loss_cfg.importance_cap).to(per_item.dtype)
                per_item = per_item * weights
                self._update(metric_bag, "is_truncated", float((log_pair > math.log(loss_cfg.importance_cap)).double().mean()), num)
            self._update(metric_bag, "dpo_loss", out.dpo_loss.mean().item(), num)
            self._update(metric_bag, "nll_loss", out.nll_loss.mean().item(), num)
            self._log_sides(metric_bag, logps[:num], logps[num:], batch.response_lens[:num], batch.response_lens[num:])
        elif name in ("group_dpo", "group_dpo_grpo"):
            assert ref_logps is not None
            gout = group_dpo_loss(
                logps, ref_logps, groups, beta=loss_cfg.beta, lens=batch.response_lens,
                length_normalize=loss_cfg.length_normalize, nll_scale=loss_cfg.nll_scale,
                nll_length_normalize=loss_cfg.nll_length_normalize,
            )  # fmt: skip
            per_item, num_items = gout.loss, len(groups)
            self._update(metric_bag, "dpo_loss", gout.dpo_loss.mean().item(), num_items)
            chosen = [c for c, _ in groups for c in c]
            rejected = [r for _, r in groups for r in r]
            self._log_sides(metric_bag, logps[chosen], logps[rejected], batch.response_lens[chosen], batch.response_lens[rejected])
            if name == "group_dpo_grpo":
                group_ids = torch.tensor([g for g, (c, r) in enumerate(groups) for _ in (*c, *r)], device=self._device)
                gr = grpo_loss(
                    token_logps, batch.mask, torch.tensor(advantages, device=self._device),
                    beta=loss_cfg.grpo_beta, ref_token_logps=ref_token_logps,
                    length_normalize=loss_cfg.grpo_length_normalize,
                )  # fmt: skip
                grpo_per_prompt = sum_by_group(gr.loss, group_ids, len(groups))
                per_item = per_item + loss_cfg.grpo_alpha * grpo_per_prompt
                self._update(metric_bag, "grpo_loss", grpo_per_prompt.mean().item(), num_items)
        else:
            token_weights = None
            if truncate:
                assert off is not None
                token_weights = truncated_weights(off.token_log_ratio, loss_cfg.importance_cap).to(token_logps.dtype)
                over = (off.token_log_ratio > math.log(loss_cfg.importance_cap)) & batch.mask.bool()
                self._update(metric_bag, "is_truncated", float(over.sum()) / max(off.num_tokens, 1), off.num_tokens)
            gr = grpo_loss(
                token_logps, batch.mask, torch.tensor(advantages, device=self._device),
                beta=loss_cfg.beta, ref_token_logps=ref_token_logps, length_normalize=loss_cfg.grpo_length_normalize,
                token_weights=token_weights,
            )  # fmt: skip
            # Eq. 1 sums over a prompt's rollouts; gradients are normalised per prompt.
            per_item = gr.loss
            self._update(metric_bag, "grpo_loss", gr.loss.sum().item() / num_items, num_items)
            self._update(metric_bag, "kl", gr.kl.detach().mean().item(), len(response_ids))

        loss = per_item.sum()
        if loss_cfg.entropy_coef != 0.0:
            reg = loss_cfg.entropy_coef * masked_mean(stats.token_neg_entropy, batch.mask)  # §4.2
            loss = loss + num_items * reg  # after fairseq2 divides by n: + coef · mean neg. entropy
        with torch.no_grad():
            # A mean over tokens, weighted by tokens: the same however a step is cut.
            entropy = -masked_mean(stats.token_neg_entropy.detach(), batch.mask).item()
            self._update(metric_bag, "entropy", entropy, float(batch.mask.sum()))
        if torch.isfinite(loss):
            self._update(metric_bag, "loss", loss.item() / num_items, num_items)
            self._update(metric_bag, "num_pairs", float(len(response_ids) // 2 if name == "dpo" else len(response_ids)))
        return loss, logits

    def _mismatch(self, items: _Items, token_logps: Tensor, mask: Tensor, metric_bag: MetricBag) -> Mismatch | None:
        """Trainer vs generator log-probs of the trained responses' tokens (None when the
        generator gave none, or a response's count differs from its tokens')."""
        if not self._rollout_logprobs or not items.gen_logps:
            return None
        lens = mask.sum(dim=-1).tolist()
        if any(lp is None or len(lp) != n for lp, n in zip(items.gen_logps, lens)):
            return None
        gen = torch.zeros(mask.shape, dtype=torch.float64, device=token_logps.device)
        gen[mask.bool()] = torch.tensor([x for lp in items.gen_logps for x in lp], dtype=torch.float64, device=gen.device)  # type: ignore[union-attr]
        off = mismatch(token_logps, gen, mask)
        self._update(metric_bag, "logprob_diff", off.mean_abs, off.num_tokens)
        self._update(metric_bag, "logprob_diff_max", off.max_abs)
        seq = off.seq_log_ratio
        self._update(metric_bag, "log_is_ratio", float(seq.mean()), len(seq))
        self._update(metric_bag, "log_is_ratio_max", float(seq.max()))
        self._update(metric_bag, "log_is_ratio_min", float(seq.min()))
        return off

    def _pending_rollouts(self, batch: PromptBatch, step: int) -> PendingRollouts:
        """This step's rollouts; at the start of a window, the whole window is submitted.

        Rollouts of step t are seeded from (seed, t) wherever they are submitted from, so
        working ahead changes no sample: the asynchronous run equals the synchronous one.
        """
        assert self._generator is not None
        window = batch.window
        if batch.index == 0:
            if any(p is not None for p in self._pending):
                raise RuntimeError(f"step {step}: a new rollout window began before the last one was consumed")
            self._pending = [
                self._generator.submit(
                    [e.token_ids for e in examples], self._gen.num_rollouts, self._sampling,
                    seed=step_seed(self._seed, step + i) >> 1,
                )  # fmt: skip
                for i, examples in enumerate(window)
            ]
        pending = self._pending[batch.index] if batch.index < len(self._pending) else None
        if pending is None:
            raise RuntimeError(
                f"step {step}: no rollouts were submitted for position {batch.index} of its window; "
                "a run must start or resume on a generator sync boundary"
            )
        self._pending[batch.index] = None
        return pending

    def _maybe_sync(self, step: int, metric_bag: MetricBag) -> None:
        """Every rank runs this (gathering sharded weights is a collective)."""
        assert self._generator is not None
        start = time.perf_counter()
        boundary = sync_steps(step, self._gen.sync_every_n_steps)
        if boundary and self._generator.version != step - 1:  # a validation may have synced already
            self._sync_generator(version=step - 1)
        if self._reference is not None and step > 1:
            mode = self._ref_sync.mode
            if (mode == "with_generator" and boundary) or (
                mode == "every_n_steps" and sync_steps(step, self._ref_sync.every_n_steps)
            ):
                copy_weights(self._reference, self._policy_module)
        self._update(metric_bag, "sync_seconds", time.perf_counter() - start)

    def _sync_generator(self, version: int) -> None:
        assert self._generator is not None
        buckets = full_weight_buckets(
            self._policy_module, bucket_bytes=self._gen.sync_bucket_mb << 20, dtype=self._sync_dtype,
            keep=self._dp_gang.rank == 0,
        )  # fmt: skip
        self._generator.sync(buckets, version=version)

    def hold_weights_of(self, step: int) -> bool:
        """For validation after ``step`` (every rank calls it): makes the generator hold
        the policy's weights of ``step`` if that is the sync step ``step + 1`` makes
        anyway (a sync boundary, no rollouts pending), and says whether it now does."""
        if self._generator is None:
            return False
        if self._generator.version == step:
            return True
        s = self._gen.sync_every_n_steps
        if s is None or step % s != 0 or any(p is not None for p in self._pending):
            return False
        self._sync_generator(version=step)
        return True

    def _score(self, examples: Sequence[PromptExample], rollouts: list[list[Completion]]) -> list[list[float | None]]:
        """One reward per rollout, each prompt routed to its task's reward (``None`` = failed)."""
        return score_responses(
            examples, [[c.text for c in cs] for cs in rollouts], math_scorer=self._scorer, reward_model=self._reward_model
        )

    @staticmethod
    def _reward_kinds(examples: Sequence[PromptExample]) -> list[RewardKind]:
        """Math-Verify rewards are 0/1 (pair a random correct with a random incorrect
        rollout); reward-model rewards are scalars (pair the best with the worst)."""
        return ["scalar" if e.task == "chat" else "binary" for e in examples]

    # --- helpers ----------------------------------------------------------------

    def _response_ids(self, completion: Completion) -> list[int]:
        """The sampled tokens plus EOS when the model ended the response itself."""
        return [*completion.token_ids, self._eos_idx] if completion.finished else list(completion.token_ids)

    def _skip(self) -> tuple[Tensor, int]:
        """No parameter update on any rank: a loss with no path to the model leaves every
        grad None, and n = 0 everywhere skips fairseq2's all-reduce of n everywhere."""
        return torch.zeros((), device=self._device, requires_grad=True), 0

    def _update(self, metric_bag: MetricBag, name: str, value: float, weight: float = 1.0) -> None:
        if name not in self._metrics:
            return
        kls = _metric_kls(name)
        if kls is MeanOrNaN:
            if not math.isnan(value):
                metric_bag.get(name, MeanOrNaN).update(value, weight=weight)
        else:
            metric_bag.get(name, kls).update(value)  # type: ignore[arg-type]

    def _log_rewards(
        self, metric_bag: MetricBag, examples: Sequence[PromptExample], rollouts: list[list[Completion]],
        rewards: list[list[float | None]],
    ) -> None:  # fmt: skip
        for task in (None, "math", "chat"):
            valid = [r for e, row in zip(examples, rewards) if task in (None, e.task) for r in row if r is not None]
            if valid:
                self._update(metric_bag, "reward" if task is None else f"reward/{task}", sum(valid) / len(valid), len(valid))
        lens = [len(c.token_ids) for cs in rollouts for c in cs]
        self._update(metric_bag, "rollout_len", sum(lens) / len(lens), len(lens))

    def _log_pairing(self, metric_bag: MetricBag, stats: PairingStats) -> None:
        self._update(metric_bag, "skipped_prompts", float(stats.num_skipped))
        self._update(metric_bag, "failed_rewards", float(stats.num_failed_rewards))

    def _log_sides(self, metric_bag: MetricBag, chosen: Tensor, rejected: Tensor, chosen_len: Tensor, rejected_len: Tensor) -> None:
        n = len(chosen)
        self._update(metric_bag, "chosen_logps", chosen.detach().mean().item(), n)
        self._update(metric_bag, "rejected_logps", rejected.detach().mean().item(), len(rejected))
        self._update(metric_bag, "chosen_len", chosen_len.mean().item(), n)
        self._update(metric_bag, "rejected_len", rejected_len.mean().item(), len(rejected))
