"""Config sections only ``lm preference_finetune`` reads (fairseq2 structures them from
YAML/CLI). The sampling, engine, reward and Ray sections both recipes read are in
``config/shared.py``; the recipe's config class composes these with fairseq2's own
(model, trainer, optimizer, ...) in ``recipes/preference_finetune.py``. Every key and
default is listed in docs/configuration.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fairseq2.utils.validation import ValidationResult

from fs2_semionline.config.fields import FieldChecks
from fs2_semionline.config.shared import EngineSection, SamplingSection
from fs2_semionline.core.paths import TINY_MATH_DATA_DIR


@dataclass(kw_only=True)
class PromptDataSection:
    """The prompts (or fixed pairs) training reads, one batch per step. Training and
    validation name their data the same way: ``math_paths`` and ``chat_paths``."""

    math_paths: list[Path] = field(default_factory=lambda: [TINY_MATH_DATA_DIR / "train.jsonl"])
    """Verifiable prompts, JSONL with ``prompt`` and ``answer``: Figure 4 template,
    Math-Verify reward (binary: a random correct against a random incorrect rollout)."""
    chat_paths: list[Path] = field(default_factory=list)
    """Non-verifiable prompts, JSONL with ``prompt``: Figure 5 template, ``reward.model``
    (scalar: the best against the worst rollout). Both lists set: one combined task
    (§3.3), each prompt scored by its own reward and paired by its own rule."""
    chat_fraction: float | None = None
    """Share of chat prompts in a combined mix (paper: 50k WildChat of 150k = 1/3; the
    larger side is subsampled with common.seed). null: every prompt of both."""
    pairs_path: Path | None = None
    """Offline DPO form (b): JSONL with ``prompt``, ``chosen``, ``rejected``; no
    generation (then ``math_paths`` and ``chat_paths`` are not read)."""
    batch_size: int = 8
    """Prompts per optimizer step, over all data-parallel ranks together (the paper's
    batch): each rank takes batch_size / dp_size, in
    ``trainer.grad_accumulation.num_batches`` micro-batches; it must divide evenly."""
    max_prompt_len: int | None = None
    """Longer prompts are counted skips. Default: model max_seq_len − generator.max_gen_len."""
    shuffle_window: int = 10_000
    """Prompts shuffled together (seeded by common.seed)."""

    @property
    def tasks(self) -> frozenset[str]:
        """The tasks training reads prompts of (none for fixed pairs)."""
        if self.pairs_path is not None:
            return frozenset()
        return frozenset(t for t, paths in (("math", self.math_paths), ("chat", self.chat_paths)) if paths)

    def validate(self) -> ValidationResult:
        checks = FieldChecks(self)
        checks.at_least("batch_size", 1)
        checks.at_least("max_prompt_len", 1, optional=True)
        checks.at_least("shuffle_window", 1)
        if self.chat_fraction is not None:
            checks.within("chat_fraction", 0.0, 1.0, low_open=True, high_open=True, note=" or null")
        return checks.result


@dataclass(kw_only=True)
class RolloutGeneratorSection(SamplingSection, EngineSection):
    """Who generates the rollouts, how, and how often it takes the policy's weights.

    The engine and sampling keys are the shared sections' (``config/shared.py``); the
    defaults here are the paper's rollout ones."""

    temperature: float = 1.0
    """Rollout sampling temperature (paper §3: 1.0; 0 = greedy)."""
    top_p: float = 1.0
    """Nucleus sampling mass for rollouts (paper §3: 1.0)."""
    max_batch_size: int = 64
    """``local``: at most this many prompts per sampler call (a memory knob)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``vllm``: the dtype the engines serve in and the weights travel in. ``auto``: the
    trainer's compute dtype (``trainer.mixed_precision.dtype`` under static mixed
    precision, else ``model.dtype``), so fp32 master weights are served in bf16."""
    sync_every_n_steps: int | None = 1
    """s: 1 = online, k > 1 = semi-online, null = offline (the seed model's rollouts)."""
    num_rollouts: int = 8
    """Rollouts per prompt (paper: 8 for DPO, GRPO)."""
    max_gen_len: int = 512
    """Longest rollout in tokens; a longer one is cut (not finished: no EOS is trained)."""
    work_ahead: bool = True
    """Right after a sync, hand the generator the prompts of the next s steps so it
    generates while the trainer trains (asynchronous semi-online; same samples either way)."""
    colocate: bool = False
    """``vllm``: one engine in the trainer's own process and device (a single trainer
    process: one GPU, or a CPU); weights are handed over in-process, no broadcast.
    Otherwise replicas are Ray actors and take weights by broadcast from trainer rank 0
    over a process group (gloo on CPU, NCCL on GPU)."""
    sync_bucket_mb: int = 1024
    """Weights travel in buffers of about this size (one broadcast each)."""
    sync_timeout_s: float = 600.0
    """A weight sync slower than this is an error naming the replica, not a hang."""
    max_restarts: int = 3
    """Replacements of one replica within one request before the run stops."""
    batch_invariant: bool = False
    """``vllm``: vLLM's batch-invariant mode (``VLLM_BATCH_INVARIANT=1``): a prompt's
    samples do not depend on what else is in its batch (GPU kernels are otherwise
    shape-dependent), so rollouts do not depend on the replica split or on work-ahead,
    and a resume regenerates them bit for bit; slower. On CPU they are so already."""

    def validate(self) -> ValidationResult:
        checks = self.check_sampling(self.check_engine(FieldChecks(self)))
        checks.at_least("sync_every_n_steps", 1, optional=True, note=" (null = offline)")
        checks.at_least("num_rollouts", 2, note=" (pairs and group advantages need two)")
        checks.at_least("max_gen_len", 1)
        checks.at_least("sync_bucket_mb", 1)
        checks.positive("sync_timeout_s")
        checks.at_least("max_restarts", 0)
        return checks.result


MOVED_KEYS: dict[str, str] = {
    "loss.dpo": "loss.config (loss.name=dpo or group_dpo; loss.config.dpo for group_dpo_grpo)",
    "loss.grpo": "loss.config (loss.name=grpo; loss.config.grpo for group_dpo_grpo)",
    "loss.group_dpo_grpo": "loss.config.alpha (loss.name=group_dpo_grpo)",
    "loss.importance_sampling": "loss.config.importance_sampling (loss.name=dpo or grpo)",
    "loss.importance_cap": "loss.config.importance_cap (loss.name=dpo or grpo)",
}
"""Keys of earlier releases → where they are now; an old config's error names the new key."""


@dataclass(kw_only=True)
class ImportanceSamplingConfig:
    """The opt-in correction of the objectives that support it (``dpo``, ``grpo``)."""

    importance_sampling: Literal["none", "truncated"] = "none"
    """Correction for rollouts sampled by the generator's copy of the policy (older
    weights, other kernels): ``truncated`` weights GRPO's tokens by min(π/μ, C) and DPO's
    pairs by min(ρ(y_w)ρ(y_l), C), detached (losses/importance.py). Paper: none."""
    importance_cap: float = 2.0
    """C, the cap of the truncated importance weights."""

    @property
    def importance_cap_or_none(self) -> float | None:
        """C when the correction is on, else None."""
        return self.importance_cap if self.importance_sampling == "truncated" else None

    def check_importance(self, checks: FieldChecks) -> FieldChecks:
        checks.positive("importance_cap")
        return checks


@dataclass(kw_only=True)
class DPOTermConfig:
    """DPO's pair loss (Eq. 3), also the pairs GroupDPO averages over (Eq. 4)."""

    beta: float = 0.1
    """β of the log-ratio margin (Table 4: 0.1 verifiable, 0.01 non-verifiable)."""
    length_normalize: bool = False
    """Compare per-token (length-normalised) log-ratios instead of summed ones."""
    nll_scale: float = 0.0
    """Weight of an NLL term on the chosen response (0 = off)."""
    nll_length_normalize: bool = False
    """Divide the NLL term by the chosen response's length."""

    def check_dpo(self, checks: FieldChecks) -> FieldChecks:
        checks.positive("beta")
        checks.at_least("nll_scale", 0.0, note=" (0 = off)")
        return checks

    def validate(self) -> ValidationResult:
        return self.check_dpo(FieldChecks(self)).result


@dataclass(kw_only=True)
class GRPOTermConfig:
    """GRPO's loss (Eq. 1), also the GRPO term of ``group_dpo_grpo``."""

    kl_beta: float = 0.001
    """Coefficient of the k3 KL to the reference (Table 4: 0.001; 0 = no reference)."""
    length_normalize: bool = False
    """Divide each sequence's sum by its length (default: sequence-summed, Eq. 1)."""
    normalize_advantage_std: bool = False
    """Divide advantages by the group's std (paper: off)."""

    def check_grpo(self, checks: FieldChecks) -> FieldChecks:
        checks.at_least("kl_beta", 0.0, note=" (0 = no reference)")
        return checks

    def validate(self) -> ValidationResult:
        return self.check_grpo(FieldChecks(self)).result


@dataclass(kw_only=True)
class DPOConfig(ImportanceSamplingConfig, DPOTermConfig):
    """``loss.name=dpo`` (Eq. 3): one pair per prompt."""

    def validate(self) -> ValidationResult:
        return self.check_importance(self.check_dpo(FieldChecks(self))).result


@dataclass(kw_only=True)
class GroupDPOConfig(DPOTermConfig):
    """``loss.name=group_dpo`` (Eq. 4): every chosen × rejected pair of a prompt, averaged."""


@dataclass(kw_only=True)
class GRPOConfig(ImportanceSamplingConfig, GRPOTermConfig):
    """``loss.name=grpo`` (Eq. 1): group-relative advantages, on-policy."""

    def validate(self) -> ValidationResult:
        return self.check_importance(self.check_grpo(FieldChecks(self))).result


@dataclass(kw_only=True)
class GroupDPOGRPOConfig:
    """``loss.name=group_dpo_grpo`` (§4.2): L = L_GroupDPO + α · L_GRPO on the same responses."""

    dpo: DPOTermConfig = field(default_factory=DPOTermConfig)
    """The GroupDPO part."""
    grpo: GRPOTermConfig = field(default_factory=GRPOTermConfig)
    """The GRPO term."""
    alpha: float = 0.01
    """α (§4.2: 0.01 or 0.001)."""

    def validate(self) -> ValidationResult:
        checks = FieldChecks(self)
        checks.at_least("alpha", 0.0)
        return checks.result


@dataclass(kw_only=True)
class ReferenceSyncSection:
    """Whether and when the reference model takes the policy's weights."""

    mode: Literal["frozen", "with_generator", "every_n_steps"] = "frozen"
    """Table 4 "Ref model Sync": frozen, or synced to the policy with the generator."""
    every_n_steps: int | None = None
    """``every_n_steps`` mode: r (a divisor of the checkpoint interval)."""

    def validate(self) -> ValidationResult:
        checks = FieldChecks(self)
        checks.at_least("every_n_steps", 1, optional=True)
        return checks.result


@dataclass(kw_only=True)
class ValidationSection(SamplingSection):
    """Held-out sets sampled from the policy every ``regime.validate_every_n_steps`` (§3.2, §3.3).

    Metrics go to ``OUT_DIR/metrics/valid.jsonl``: ``accuracy`` (math, Math-Verify),
    ``reward/chat`` and ``reward_len_norm`` (chat, the reward model) and ``score``, the
    mean of the two that are present; ``regime.score_metric`` may name any of them to
    keep the best checkpoints (``regime.keep_best_n_checkpoints``)."""

    math_paths: list[Path] = field(default_factory=list)
    """Math JSONL (``prompt``, ``answer``): mean accuracy of the samples."""
    chat_paths: list[Path] = field(default_factory=list)
    """Chat JSONL (``prompt``): the reward model's reward (needs ``reward.model``)."""
    num_samples: int = 1
    """Samples per prompt."""
    max_gen_len: int | None = None
    """Answer length limit in tokens. Default: ``generator.max_gen_len``."""
    sampler: Literal["auto", "policy", "generator"] = "auto"
    """``policy``: fairseq2's sampler on the trainer's model. ``generator``: the rollout
    generator (vLLM), synced first to the weights being validated; it needs every
    validation step to be a sync boundary (``regime.validate_every_n_steps`` a multiple
    of a finite s), so the sync is the one the next step makes anyway and the
    semi-online schedule is unchanged. ``auto``: ``generator`` when the backend is vllm
    and that holds, else ``policy``. Either way validation never sees stale weights."""
    length_normalize: Literal["mean_ratio", "none"] = "mean_ratio"
    """``reward_len_norm``: ``mean_ratio`` = mean reward / mean response length in tokens over
    the whole set (the reading of the paper's authors' code; with negative rewards it
    favours long answers, and the run log says so); ``none`` = the mean reward."""

    def validate(self) -> ValidationResult:
        checks = self.check_sampling(FieldChecks(self))
        checks.at_least("num_samples", 1)
        checks.at_least("max_gen_len", 1, optional=True, note=" (null = generator.max_gen_len)")
        return checks.result
