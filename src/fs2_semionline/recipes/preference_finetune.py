"""``lm preference_finetune``: offline / semi-online / online DPO, GroupDPO and GRPO.

The recipe only composes: fairseq2 gives the policy, reference, tokenizer, optimizer,
checkpoints and Trainer; we add the prompt reader, the generator, the Math-Verify pool
and :class:`~fs2_semionline.units.preference.PreferenceUnit`.

    fs2-semionline lm preference_finetune OUT_DIR --preset tiny_semi_online_dpo
    python -m fs2_semionline.recipes.preference_finetune OUT_DIR --config-file F.yaml
"""

from __future__ import annotations

import atexit
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fairseq2.data.data_pipeline import DataPipeline, read_sequence
from fairseq2.datasets import DataPipelineReader, SyncMode
from fairseq2.metrics.formatters import format_as_float
from fairseq2.metrics.recorders import MetricDescriptor
from fairseq2.models.clm import CausalLM
from fairseq2.recipe.base import Recipe, RecipeContext
from fairseq2.recipe.composition import register_reference_model
from fairseq2.recipe.config import (
    AdamWConfig,
    CommonSection,
    GangSection,
    LRSchedulerSection,
    MixedPrecisionConfig,
    ModelSection,
    OptimizerSection,
    ReferenceModelSection,
    RegimeSection,
    TokenizerSection,
    TrainerSection,
)
from fairseq2.runtime.dependency import DependencyContainer
from fairseq2.task import Task
from typing_extensions import override

from fs2_semionline.config import (
    LossSection,
    PromptDataSection,
    ReferenceSyncSection,
    RewardSection,
    RolloutGeneratorSection,
    ValidationSection,
)
from fs2_semionline.data.jsonl import LoadReport, PairExample, PromptExample, load_pairs, load_prompts
from fs2_semionline.data.templates import TASK_TEMPLATES, verifiable_prompt
from fs2_semionline.errors import ConfigError, check_data_files, register_cli_errors
from fs2_semionline.generation.factory import create_generator
from fs2_semionline.generation.local import PolicySampler
from fs2_semionline.generation.gang import GangGenerator
from fs2_semionline.ray_cluster import RayCluster, RaySection
from fs2_semionline.recipes import ClosingTask
from fs2_semionline.rewards import MathVerifyPool
from fs2_semionline.sharding import full_weight_buckets, is_sharded, shard_like_policy
from fs2_semionline.units.preference import METRICS, PairBatch, PreferenceUnit, PromptBatch
from fs2_semionline.units.validation import (
    VALID_METRICS,
    BoundarySampler,
    ValidationBatch,
    ValidationUnit,
    validation_batches,
)

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class PreferenceFinetuneConfig:
    model: ModelSection = field(default_factory=lambda: ModelSection(name="tiny_math_sft"))
    reference_model: ReferenceModelSection = field(
        default_factory=lambda: ReferenceModelSection(name="tiny_math_sft")
    )
    tokenizer: TokenizerSection = field(default_factory=lambda: TokenizerSection(name="tiny_math_tokenizer"))
    dataset: PromptDataSection = field(default_factory=PromptDataSection)
    generator: RolloutGeneratorSection = field(default_factory=RolloutGeneratorSection)
    ray: RaySection = field(default_factory=RaySection)
    reward: RewardSection = field(default_factory=RewardSection)
    loss: LossSection = field(default_factory=LossSection)
    reference_sync: ReferenceSyncSection = field(default_factory=ReferenceSyncSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    trainer: TrainerSection = field(
        default_factory=lambda: TrainerSection(mixed_precision=MixedPrecisionConfig(mode="off"), max_grad_norm=1.0)
    )
    optimizer: OptimizerSection = field(
        default_factory=lambda: OptimizerSection(config=AdamWConfig(lr=1e-6, eps=1e-4, weight_decay=0.0))
    )
    lr_scheduler: LRSchedulerSection = field(default_factory=lambda: LRSchedulerSection(name="passthrough", config=None))
    regime: RegimeSection = field(
        default_factory=lambda: RegimeSection(
            num_steps=100, checkpoint_every_n_steps=10, publish_metrics_every_n_steps=1, save_model_only=False
        )
    )
    gang: GangSection = field(default_factory=GangSection)
    common: CommonSection = field(default_factory=lambda: CommonSection(no_sweep_dir=True))


def check_config(config: PreferenceFinetuneConfig) -> None:
    """Contradictions a user can make, refused before anything loads."""
    s = config.generator.sync_every_n_steps
    if s is not None and s < 1:
        raise ConfigError(f"generator.sync_every_n_steps must be >= 1 or null (offline), got {s}")
    if config.loss.name == "grpo" and s != 1:
        raise ConfigError(
            f"loss.name=grpo is on-policy (paper §2.3): it needs generator.sync_every_n_steps=1, got {s}"
        )
    every = config.regime.checkpoint_every_n_steps
    if s is not None and every is not None and every % s != 0:
        raise ConfigError(
            f"regime.checkpoint_every_n_steps={every} must be a multiple of generator.sync_every_n_steps={s}, "
            "so that a resumed run restarts on a sync boundary and repeats the uninterrupted run exactly"
        )
    if config.reference_sync.mode == "every_n_steps":
        r = config.reference_sync.every_n_steps
        if not r:
            raise ConfigError("reference_sync.mode=every_n_steps needs reference_sync.every_n_steps")
        if every is not None and every % r != 0:
            raise ConfigError(
                f"regime.checkpoint_every_n_steps={every} must be a multiple of reference_sync.every_n_steps={r}"
            )
    if s is None and config.loss.name == "grpo":
        raise ConfigError("loss.name=grpo cannot be offline (generator.sync_every_n_steps=null)")
    if config.dataset.pairs_path is not None:
        if config.loss.name != "dpo" or s is not None:
            raise ConfigError(
                "dataset.pairs_path (offline DPO from fixed pairs) needs loss.name=dpo and "
                f"generator.sync_every_n_steps=null, got loss.name={config.loss.name}, sync_every_n_steps={s}"
            )
    if (config.dataset.task == "chat" or config.dataset.chat_paths) and not config.reward.model:
        raise ConfigError(
            "chat prompts (dataset.task=chat or dataset.chat_paths) need reward.model "
            "(an asset card name or a local HF folder)"
        )
    if config.dataset.chat_paths and config.dataset.task != "math":
        raise ConfigError("dataset.chat_paths mixes chat prompts into a math run: it needs dataset.task=math")
    fraction = config.dataset.chat_fraction
    if fraction is not None and not 0.0 < fraction < 1.0:
        raise ConfigError(f"dataset.chat_fraction must be in (0, 1) or null, got {fraction}")
    valid = config.validation
    if (valid.math_paths or valid.chat_paths) and not (
        config.regime.validate_every_n_steps or config.regime.validate_at_start
    ):
        raise ConfigError(
            "validation.math_paths/chat_paths are set but regime.validate_every_n_steps is null "
            "(and regime.validate_at_start is false): no validation would run"
        )
    if valid.chat_paths and not config.reward.model:
        raise ConfigError("validation.chat_paths are scored by the reward model: set reward.model")
    if valid.num_samples < 1:
        raise ConfigError(f"validation.num_samples must be >= 1, got {valid.num_samples}")
    if config.generator.num_rollouts < 2:
        raise ConfigError("generator.num_rollouts must be >= 2 to form pairs or group advantages")
    if config.generator.colocate and config.generator.backend != "vllm":
        raise ConfigError("generator.colocate=true colocates a vLLM engine: it needs generator.backend=vllm")
    loss = config.loss
    if loss.importance_sampling == "truncated":
        if loss.name not in ("dpo", "grpo"):
            raise ConfigError(f"loss.importance_sampling=truncated is defined for loss.name=dpo and grpo, got {loss.name}")
        if config.dataset.pairs_path is not None:
            raise ConfigError("loss.importance_sampling=truncated needs rollouts with their log-probs, not dataset.pairs_path")
        if not generator_logprobs(config.generator):
            raise ConfigError(
                "loss.importance_sampling=truncated needs the generator's log-probs: generator.backend=vllm, or "
                f"local at generator.temperature 1 (fairseq2's sampler scores tempered tokens), got {config.generator.temperature}"
            )
        if not loss.importance_cap > 0:
            raise ConfigError(f"loss.importance_cap must be > 0, got {loss.importance_cap}")
    if config.validation.sampler == "generator" and not validates_through_generator(config):
        raise ConfigError(
            "validation.sampler=generator needs generator.backend=vllm and every validation step on a sync "
            f"boundary: regime.validate_every_n_steps ({config.regime.validate_every_n_steps}) a multiple of "
            f"generator.sync_every_n_steps ({config.generator.sync_every_n_steps})"
        )


def generator_logprobs(generator: RolloutGeneratorSection) -> bool:
    """Whether rollouts come with the generator's log-probs of their tokens (raw logits,
    at temperature 1): vLLM always; fairseq2's sampler only untempered (T 1, or greedy)."""
    return generator.backend == "vllm" or generator.temperature in (0.0, 1.0)


def validates_through_generator(config: PreferenceFinetuneConfig) -> bool:
    """``validation.sampler``: whether validation samples through the rollout generator."""
    s, every = config.generator.sync_every_n_steps, config.regime.validate_every_n_steps
    possible = config.generator.backend == "vllm" and s is not None and every is not None and every % s == 0
    return possible and config.validation.sampler in ("auto", "generator")


class _RestoreThreads:
    def __init__(self, threads: int) -> None:
        self._threads = threads

    def close(self) -> None:
        torch.set_num_threads(self._threads)


def mix_tasks(
    math_examples: list[PromptExample], chat_examples: list[PromptExample], chat_fraction: float | None, *, seed: int
) -> list[PromptExample]:
    """Math and chat prompts in one list (the reader shuffles them together); with a
    fraction, the larger side is subsampled (seeded) so chat is that share of the mix."""
    import random

    if chat_fraction is not None and math_examples and chat_examples:
        rng = random.Random(seed)
        want_chat = round(len(math_examples) * chat_fraction / (1 - chat_fraction))
        if want_chat <= len(chat_examples):
            chat_examples = rng.sample(chat_examples, want_chat)
        else:
            want_math = round(len(chat_examples) * (1 - chat_fraction) / chat_fraction)
            math_examples = rng.sample(math_examples, want_math)
    return math_examples + chat_examples


def share_cpu_with_generator(config: PreferenceFinetuneConfig) -> _RestoreThreads:
    """On a CPU-only machine running its own Ray cluster, the engines' threads and the
    trainer's would otherwise oversubscribe the cores and stall the generator exactly
    when it should work ahead: the trainer keeps the cores the replicas do not hold."""
    import math
    import os

    restore = _RestoreThreads(torch.get_num_threads())
    if torch.cuda.is_available() or config.ray.address is not None:
        return restore
    cores = config.ray.num_cpus or os.cpu_count() or 1
    held = math.ceil(config.generator.replicas * config.generator.num_cpus_per_replica)
    threads = max(1, cores - held)
    if threads < torch.get_num_threads():
        log.info("CPU only: the trainer uses %d of %d cores, the generator replicas %d", threads, cores, held)
        torch.set_num_threads(threads)
    return restore


def create_reward_scorer(section: RewardSection) -> Any:
    """The reward model for chat prompts, in Ray actors (Ray must be up)."""
    from fs2_semionline.rewards.reward_model import reward_model_spec
    from fs2_semionline.rewards.reward_model_actor import RayRewardScorer

    return RayRewardScorer(
        reward_model_spec(section), replicas=section.model_replicas, num_cpus=section.model_num_cpus,
        timeout_s=section.model_timeout_s,
    )  # fmt: skip


def per_rank_batch_size(config: PreferenceFinetuneConfig, dp_size: int) -> int:
    """``dataset.batch_size`` is the global batch (prompts per optimizer step, the paper's
    64 or 32), split over the data-parallel ranks and the accumulated micro-batches."""
    batch_size = config.dataset.batch_size
    num_micro = config.trainer.grad_accumulation.num_batches
    if batch_size % (dp_size * num_micro) != 0:
        raise ConfigError(
            f"dataset.batch_size={batch_size} (prompts per optimizer step, over all ranks) must be a multiple of "
            f"data-parallel size {dp_size} x trainer.grad_accumulation.num_batches {num_micro} = {dp_size * num_micro}"
        )
    return batch_size // dp_size


def train_pipeline(
    items: list[Any], config: PreferenceFinetuneConfig, batch_kls: Any, dp_rank: int, dp_size: int
) -> DataPipeline:
    """Training batches of data-parallel rank ``dp_rank``: its own shard of the prompts
    (equal sizes, so no rank runs out first), shuffled, its share of the global batch per
    step, in ``trainer.grad_accumulation.num_batches`` micro-batches."""
    num_micro = config.trainer.grad_accumulation.num_batches
    builder = (
        read_sequence(items)
        .shard(dp_rank, dp_size)
        .shuffle(config.dataset.shuffle_window, seed=config.common.seed)
        .bucket(per_rank_batch_size(config, dp_size), drop_remainder=True)
    )
    if batch_kls is PromptBatch:
        # Steps come in windows of s steps (one sync each): the unit hands a whole window
        # to the generator right after its sync.
        window = (config.generator.sync_every_n_steps or 1) if config.generator.work_ahead else 1

        def micro_batches(group: list[list[PromptExample]]) -> DataPipeline:
            return read_sequence([
                PromptBatch(tuple(group), index, micro, num_micro) for index in range(len(group)) for micro in range(num_micro)
            ]).and_return()  # fmt: skip

        builder = builder.bucket(window, drop_remainder=True).yield_from(micro_batches)
    else:
        builder = builder.yield_from(
            lambda pairs: read_sequence([PairBatch(pairs, micro, num_micro) for micro in range(num_micro)]).and_return()
        )
    return builder.and_return()


def generator_dtype(config: PreferenceFinetuneConfig) -> torch.dtype:
    """The generator serves in the trainer's compute dtype (``generator.dtype: auto``):
    bf16 under static mixed precision, else the policy's dtype."""
    if config.generator.dtype != "auto":
        return getattr(torch, config.generator.dtype)  # type: ignore[no-any-return]
    mp = config.trainer.mixed_precision
    if mp.mode == "static" and mp.dtype is not None:
        return mp.dtype  # type: ignore[no-any-return]
    return config.model.dtype  # type: ignore[no-any-return]


def model_family(section: Any) -> Any:
    """The fairseq2 model family of a model section's card (its FSDP layout)."""
    from fairseq2.assets import AssetStore
    from fairseq2.models.family import ModelFamily, get_model_family_name
    from fairseq2.runtime.dependency import get_dependency_resolver

    resolver = get_dependency_resolver()
    if section.name is not None:
        name = get_model_family_name(resolver.resolve(AssetStore).retrieve_card(section.name))
    else:
        name = section.family
    return resolver.resolve(ModelFamily, key=name)


class PreferenceFinetuneRecipe(Recipe):
    @override
    def register(self, container: DependencyContainer) -> None:
        register_reference_model(container, "reference_model")
        register_cli_errors(container)
        descriptors = [MetricDescriptor(name, display, priority, format_as_float) for name, (display, priority) in METRICS.items()]
        descriptors += [
            MetricDescriptor(name, display, priority, format_as_float, higher_better=higher)
            for name, (display, priority, higher) in VALID_METRICS.items()
        ]
        for descriptor in descriptors:
            container.collection.register_instance(MetricDescriptor, descriptor)

    @override
    def create_task(self, context: RecipeContext) -> Task:
        config = context.get_config_as(PreferenceFinetuneConfig)
        check_config(config)
        valid = config.validation
        if config.regime.score_metric is not None and not (valid.math_paths or valid.chat_paths):
            raise ConfigError(
                f"regime.score_metric={config.regime.score_metric} selects checkpoints on validation sets: set "
                "validation.math_paths and/or validation.chat_paths, or regime.score_metric=null to train without"
            )
        if valid.math_paths:
            check_data_files("validation.math_paths", valid.math_paths)
        if valid.chat_paths:
            check_data_files("validation.chat_paths", valid.chat_paths)
        if config.dataset.pairs_path is not None:
            check_data_files("dataset.pairs_path", [Path(config.dataset.pairs_path)])
        else:
            check_data_files("dataset.paths", config.dataset.paths)
            if config.dataset.chat_paths:
                check_data_files("dataset.chat_paths", config.dataset.chat_paths)

        tokenizer = context.get_tokenizer()
        policy_module = context.get_model_as(CausalLM)
        encoder = tokenizer.create_raw_encoder()
        max_seq_len = int(getattr(policy_module, "max_seq_len"))

        def load(paths: list[Path], task: str, max_gen_len: int, report: LoadReport) -> list[PromptExample]:
            max_prompt_len = config.dataset.max_prompt_len
            return load_prompts(
                paths, task=task, template=TASK_TEMPLATES[task], encode=lambda text: encoder(text).tolist(),
                max_prompt_len=max_seq_len - max_gen_len if max_prompt_len is None else max_prompt_len,
                require_answer=task == "math", report=report,
            )  # fmt: skip

        valid_report = LoadReport()
        valid_max_gen_len = valid.max_gen_len or config.generator.max_gen_len
        valid_examples = load(valid.math_paths, "math", valid_max_gen_len, valid_report)
        valid_examples += load(valid.chat_paths, "chat", valid_max_gen_len, valid_report)
        if valid_report.num_skipped:
            log.warning("validation sets: skipped %d of %d prompts: %s", valid_report.num_skipped,
                        valid_report.num_read, dict(valid_report.skipped))  # fmt: skip
        valid_tasks = frozenset(e.task for e in valid_examples)
        if (valid.math_paths or valid.chat_paths) and not valid_examples:
            raise ConfigError(f"validation: no usable prompts ({valid_report.as_dict()})")

        examples: list[PromptExample] = []
        pairs: list[PairExample] = []
        if config.dataset.pairs_path is not None:
            eos_idx = tokenizer.vocab_info.eos_idx
            assert eos_idx is not None
            report = LoadReport()
            pairs = load_pairs(
                Path(config.dataset.pairs_path), template=verifiable_prompt, encode=lambda text: encoder(text).tolist(),
                eos_idx=eos_idx, max_seq_len=max_seq_len, report=report,
            )  # fmt: skip
            if len(pairs) < config.dataset.batch_size:
                raise ConfigError(f"dataset.pairs_path: {len(pairs)} usable pairs, fewer than one batch ({report.as_dict()})")
        else:
            report = LoadReport()
            examples = load(config.dataset.paths, config.dataset.task, config.generator.max_gen_len, report)
            if config.dataset.chat_paths:
                chat = load(config.dataset.chat_paths, "chat", config.generator.max_gen_len, report)
                examples = mix_tasks(examples, chat, config.dataset.chat_fraction, seed=config.common.seed)
            if len(examples) < config.dataset.batch_size:
                raise ConfigError(f"dataset.paths: {len(examples)} usable prompts, fewer than one batch ({report.as_dict()})")
        train_tasks = frozenset(e.task for e in examples)
        tasks = train_tasks | valid_tasks

        device = context.device
        reference = None
        if config.loss.needs_reference or pairs:
            reference = context.get_model_as(CausalLM, "reference_model")
            reference.eval().requires_grad_(False)
        closables: list[Any] = []
        try:
            dp_gang = context.gangs.dp
            generator: Any = None
            vllm_owner = bool(examples) and dp_gang.rank == 0 and config.generator.backend == "vllm"
            if config.generator.colocate and config.generator.backend == "vllm" and context.gangs.root.size > 1:
                raise ConfigError(
                    f"generator.colocate=true puts one engine in a single trainer process; this run has "
                    f"{context.gangs.root.size} processes (use replicas on their own devices instead)"
                )
            if (vllm_owner and not config.generator.colocate) or "chat" in tasks:  # actors live on Ray
                cluster = RayCluster(config.ray)
                cluster.start()
                closables.append(cluster)
            if vllm_owner and not config.generator.colocate:
                closables.append(share_cpu_with_generator(config))
            if examples:
                generator = self._generator(context, config, policy_module, reference, tokenizer)
                closables.insert(0, generator)
            if reference is not None and is_sharded(policy_module):
                # After the generator took its seed weights from the full reference.
                reference = shard_like_policy(reference, config.trainer, context.gangs, model_family(config.reference_model))
                log.info("Reference model sharded like the policy (FSDP2 over %d ranks).", dp_gang.size)
            scorer, reward_model = None, None
            if "math" in tasks:
                scorer = MathVerifyPool(num_workers=config.reward.num_workers, timeout_s=config.reward.math_timeout_s)
                closables.insert(0, scorer)
            if "chat" in tasks:
                reward_model = create_reward_scorer(config.reward)
                closables.insert(0, reward_model)
            unit = PreferenceUnit(
                context.get_data_parallel_model(), policy_module, reference, generator, scorer, tokenizer,
                reward_model=reward_model, tasks=train_tasks,
                generator_config=config.generator, loss_config=config.loss, reference_sync=config.reference_sync,
                seed=config.common.seed, device=torch.device(str(device)), dp_gang=dp_gang,
                sync_dtype=generator_dtype(config) if config.generator.backend == "vllm" else None,
                rollout_logprobs=generator_logprobs(config.generator),
            )  # fmt: skip
            reader = self._reader(context, config, examples, PromptBatch) if examples else self._reader(context, config, pairs, PairBatch)
            valid_units, valid_readers = [], []
            if valid_examples:
                sampler: Any = PolicySampler(policy_module, tokenizer, batch_size=valid.batch_size)
                if generator is not None and validates_through_generator(config):
                    sampler = BoundarySampler(generator, unit.hold_weights_of, fallback=sampler)
                valid_units.append(ValidationUnit(
                    sampler, valid, tasks=valid_tasks, max_gen_len=config.generator.max_gen_len,
                    seed=config.common.seed, math_scorer=scorer, reward_model=reward_model,
                ))  # fmt: skip
                valid_readers.append(self._valid_reader(context, valid, valid_examples))
            task = ClosingTask(context.create_trainer(unit, reader, valid_units, valid_readers), closables)
        except BaseException:
            ClosingTask.close_all(closables)
            raise
        atexit.register(task.close)  # a backstop if the process ends another way
        return task

    @staticmethod
    def _generator(
        context: RecipeContext, config: PreferenceFinetuneConfig, policy_module: CausalLM, reference: CausalLM | None,
        tokenizer: Any,
    ) -> Any:  # fmt: skip
        """Trainer rank 0 owns the generator (and its Ray actors); other data-parallel ranks
        get their rollouts from it through the gang.

        The generator starts from the seed weights. On a resumed run fairseq2 builds the
        policy empty and fills it from the checkpoint only later, so the seed is taken
        from the reference model (the seed model, loaded from its card) when there is one;
        an online generator is synced to the restored policy before its first rollout.
        """
        seed_model = reference if reference is not None else policy_module
        seed_model_name = config.reference_model.name if reference is not None else config.model.name
        dp_gang = context.gangs.dp
        seed_state: dict[str, torch.Tensor] | None = None
        if is_sharded(seed_model):
            # No reference (GRPO without KL) under FSDP: gather the seed once, on rank 0.
            seed_state = {}
            for bucket in full_weight_buckets(seed_model, bucket_bytes=1 << 30, keep=dp_gang.rank == 0):
                seed_state.update(bucket)
        owner = None
        if dp_gang.rank == 0:
            owner = create_generator(
                config.generator, seed_model, tokenizer, model_name=str(seed_model_name),
                tokenizer_name=str(config.tokenizer.name), work_dir=context.output_dir, seed=config.common.seed,
                seed_state=seed_state, dtype=generator_dtype(config),
            )  # fmt: skip
        return owner if dp_gang.size == 1 else GangGenerator(dp_gang, owner)

    @staticmethod
    def _reader(context: RecipeContext, config: PreferenceFinetuneConfig, items: list[Any], batch_kls: Any) -> DataPipelineReader[Any]:
        dp = context.gangs.dp
        return DataPipelineReader(
            train_pipeline(items, config, batch_kls, dp.rank, dp.size), context.gangs,
            num_accumulate=config.trainer.grad_accumulation.num_batches,
        )  # fmt: skip

    @staticmethod
    def _valid_reader(
        context: RecipeContext, valid: ValidationSection, examples: list[PromptExample]
    ) -> DataPipelineReader[ValidationBatch]:
        """Every prompt once per validation, spread over the data-parallel ranks, as many
        batches on each (a generator shared over the gang needs every rank each call)."""
        dp = context.gangs.dp
        batches = validation_batches(examples, valid.batch_size, dp.rank, dp.size)
        return DataPipelineReader(read_sequence(batches).and_return(), context.gangs, sync_mode=SyncMode.UNTIL_LAST)

    @property
    @override
    def config_kls(self) -> type[object]:
        return PreferenceFinetuneConfig


def main() -> None:
    """``python -m`` takes what ``fs2-semionline lm preference_finetune`` takes (``--preset`` too)."""
    import sys

    from fs2_semionline.cli import run_recipe

    run_recipe("preference_finetune", sys.argv[1:])


if __name__ == "__main__":
    main()
