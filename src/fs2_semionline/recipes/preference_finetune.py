"""``lm preference_finetune``: offline / semi-online / online DPO, GroupDPO and GRPO.

The recipe only composes: fairseq2 gives the policy, reference, tokenizer, optimizer,
checkpoints and Trainer; we add the prompt reader, the generator, the Math-Verify pool
and :class:`~fs2_semionline.units.preference.PreferenceUnit`.

    fs2-semionline lm preference_finetune OUT_DIR --preset tiny_semi_online_dpo
    python -m fs2_semionline.recipes.preference_finetune OUT_DIR --config-file F.yaml
"""

from __future__ import annotations

import atexit
import os
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from typing import Any

import torch
from fairseq2.checkpoint import CheckpointDir
from fairseq2.data.data_pipeline import read_sequence
from fairseq2.datasets import DataPipelineReader, SyncMode
from fairseq2.logging import log
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
from fairseq2.utils.structured import ValueConverter
from fairseq2.utils.validation import ValidationResult
from fairseq2.utils.yaml import YamlDumper
from typing_extensions import override

from fs2_semionline.config.shared import RaySection, RewardSection
from fs2_semionline.config.training import (
    PromptDataSection,
    ReferenceSyncSection,
    RolloutGeneratorSection,
    ValidationSection,
)
from fs2_semionline.core.errors import ConfigError
from fs2_semionline.data.encoding import fairseq2_text_encoder
from fs2_semionline.data.jsonl import PromptExample
from fs2_semionline.data.train_data import TrainingData, data_metrics, load_training_data, train_pipeline
from fs2_semionline.generation.factory import create_generator, serving_dtype, share_cpu_with_generator
from fs2_semionline.generation.gang import GangGenerator
from fs2_semionline.generation.local import PolicySampler
from fs2_semionline.generation.sharding import full_weight_buckets, is_sharded, model_family, shard_like_policy
from fs2_semionline.glue.cli_errors import register_cli_errors
from fs2_semionline.glue.ray_cluster import RayCluster, check_local_placement
from fs2_semionline.objectives import LossSection, Objective, create_objective, register_objectives
from fs2_semionline.recipes import ClosingTask
from fs2_semionline.recipes.checks import (
    check_config_files,
    generator_logprobs,
    validate_recipe_config,
    validates_through_generator,
)
from fs2_semionline.rewards import MathVerifyPool
from fs2_semionline.rewards.reward_model_actor import create_reward_scorer
from fs2_semionline.rewards.routing import RewardRouter
from fs2_semionline.runs.export import register_hf_exporter
from fs2_semionline.runs.resume import prepare_output_dir
from fs2_semionline.units.preference import PreferenceUnit, train_metrics
from fs2_semionline.units.schedule import RolloutSchedule
from fs2_semionline.units.validation import (
    VALID_METRICS,
    BoundarySampler,
    ValidationBatch,
    ValidationUnit,
    validation_batches,
)


@dataclass(kw_only=True)
class PreferenceFinetuneConfig:
    model: ModelSection = field(default_factory=lambda: ModelSection(name="tiny_math_sft"))
    reference_model: ReferenceModelSection = field(default_factory=lambda: ReferenceModelSection(name="tiny_math_sft"))
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
    lr_scheduler: LRSchedulerSection = field(
        default_factory=lambda: LRSchedulerSection(name="passthrough", config=None)
    )
    regime: RegimeSection = field(
        default_factory=lambda: RegimeSection(
            num_steps=100, checkpoint_every_n_steps=10, publish_metrics_every_n_steps=1, save_model_only=False
        )
    )
    gang: GangSection = field(default_factory=GangSection)
    common: CommonSection = field(default_factory=lambda: CommonSection(no_sweep_dir=True))

    def validate(self) -> ValidationResult:
        """fairseq2 calls this (and each section's own ``validate()``) before anything
        loads: here the keys of fairseq2's sections it leaves unchecked, and, once every
        section is valid, the relations between keys (``recipes/checks.py``)."""
        return validate_recipe_config(self)


class PreferenceFinetuneRecipe(Recipe):
    @override
    def register(self, container: DependencyContainer) -> None:
        register_reference_model(container, "reference_model")
        register_cli_errors(container)
        register_hf_exporter(container)
        register_objectives(container)
        for name, metric in (train_metrics() | VALID_METRICS).items():
            container.collection.register_instance(MetricDescriptor, metric.descriptor(name))

    @override
    def create_task(self, context: RecipeContext) -> Task:
        """Composes: data → (reference) → Ray, generator, rewards → unit → fairseq2 Trainer."""
        config = context.get_config_as(PreferenceFinetuneConfig)  # validated by fairseq2
        check_config_files(config)
        last_step = context.get_checkpoint_manager().maybe_get_last_step_number(exclude_model_only=True)
        prepare_output_dir(
            context.resolver.resolve(ValueConverter).unstructure(config),
            checkpoint_dir=context.resolver.resolve(CheckpointDir).path or context.output_dir / "checkpoints",
            output_dir=context.output_dir,
            last_step=last_step,
            is_rank0=context.gangs.root.rank == 0,
            write_config_yaml=lambda tree: context.resolver.resolve(YamlDumper).dump(
                tree, context.output_dir / "config.yaml"
            ),
        )
        tokenizer = context.get_tokenizer()
        policy_module = context.get_model_as(CausalLM)
        eos_idx = tokenizer.vocab_info.eos_idx
        assert eos_idx is not None
        data = load_training_data(
            config.dataset,
            config.validation,
            encoder=fairseq2_text_encoder(tokenizer),
            eos_idx=eos_idx,
            max_seq_len=int(getattr(policy_module, "max_seq_len")),
            max_gen_len=config.generator.max_gen_len,
            seed=config.common.seed,
        )
        if last_step is None:
            context.metric_recorder.record_metric_values("data", data_metrics(data), step_nr=0)
        objective = create_objective(context.resolver, config.loss)
        reference = None
        if objective.needs_reference:
            reference = context.get_model_as(CausalLM, "reference_model")
            reference.eval().requires_grad_(False)
        stack = ExitStack()  # what the run starts, closed in reverse: rewards, generator, Ray
        try:
            self._start_ray(context, config, data, stack)
            schedule = self._rollouts(context, config, data, reference, stack)
            if reference is not None and is_sharded(policy_module):
                # After the generator took its seed weights from the full reference.
                reference = shard_like_policy(
                    reference, config.trainer, context.gangs, model_family(config.reference_model)
                )
                log.info("Reference model sharded like the policy (FSDP2 over {} ranks).", context.gangs.dp.size)
            rewards = self._rewards(config, data, stack)
            unit = self._unit(context, config, data, objective, reference, schedule, rewards)
            valid_units, valid_readers = self._validation(context, config, data, schedule, rewards)
            reader = self._reader(context, config, data)
            task = ClosingTask(context.create_trainer(unit, reader, valid_units, valid_readers), stack)
        except BaseException:
            stack.close()
            raise
        atexit.register(task.close)  # a backstop if the process ends another way
        return task

    def _validation(
        self,
        context: RecipeContext,
        config: PreferenceFinetuneConfig,
        data: TrainingData,
        schedule: RolloutSchedule | None,
        rewards: RewardRouter,
    ) -> tuple[list[ValidationUnit], list[DataPipelineReader[ValidationBatch]]]:
        """The held-out sets' unit, sampling through the generator on sync boundaries when it can."""
        if not data.valid_examples:
            return [], []
        valid = config.validation
        sampler: Any = PolicySampler(
            context.get_model_as(CausalLM), context.get_tokenizer(), batch_size=valid.max_batch_size
        )
        if schedule is not None and validates_through_generator(config):
            sampler = BoundarySampler(schedule.generator, schedule.hold_weights_of, fallback=sampler)
        unit = ValidationUnit(
            sampler,
            valid,
            tasks=data.valid_tasks,
            max_gen_len=config.generator.max_gen_len,
            seed=config.common.seed,
            rewards=rewards,
        )
        return [unit], [self._valid_reader(context, valid, data.valid_examples)]

    @staticmethod
    def _start_ray(
        context: RecipeContext, config: PreferenceFinetuneConfig, data: TrainingData, stack: ExitStack
    ) -> None:
        """A Ray cluster when actors are needed (vLLM replicas on rank 0, a reward model);
        on a CPU-only machine the trainer leaves the replicas their cores."""
        gen = config.generator
        if gen.colocate and context.gangs.root.size > 1:
            raise ConfigError(
                f"generator.colocate=true puts one engine in a single trainer process; this run has "
                f"{context.gangs.root.size} processes (use replicas on their own devices instead)"
            )
        replicas_here = (
            bool(data.examples) and context.gangs.dp.rank == 0 and gen.backend == "vllm" and not gen.colocate
        )
        if replicas_here and config.ray.address is None and torch.cuda.is_available():
            check_local_placement(
                config.ray,
                needed=gen.replicas * gen.tensor_parallel_size,
                local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
                num_devices=torch.cuda.device_count(),
                cuda_visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
            )
        if replicas_here or "chat" in data.train_tasks | data.valid_tasks:
            stack.enter_context(closing(RayCluster(config.ray))).start()
        if replicas_here:
            stack.enter_context(closing(share_cpu_with_generator(gen, config.ray.address, config.ray.num_cpus)))

    def _rollouts(
        self,
        context: RecipeContext,
        config: PreferenceFinetuneConfig,
        data: TrainingData,
        reference: CausalLM | None,
        stack: ExitStack,
    ) -> RolloutSchedule | None:
        """The generator and the schedule of its syncs (None: fixed pairs, no rollouts)."""
        if not data.examples:
            return None
        gen = config.generator
        dtype = serving_dtype(gen, config.trainer, config.model.dtype)
        policy_module = context.get_model_as(CausalLM)
        generator = self._generator(context, config, policy_module, reference, context.get_tokenizer(), dtype)
        stack.enter_context(closing(generator))
        return RolloutSchedule(
            generator,
            policy_module,
            reference,
            config=gen,
            reference_sync=config.reference_sync,
            seed=config.common.seed,
            dp_gang=context.gangs.dp,
            sync_dtype=dtype if gen.backend == "vllm" else None,
        )

    @staticmethod
    def _rewards(config: PreferenceFinetuneConfig, data: TrainingData, stack: ExitStack) -> RewardRouter:
        """Math-Verify's pool for math prompts, the reward model's actor for chat prompts."""
        tasks = data.train_tasks | data.valid_tasks
        scorer, reward_model = None, None
        if "math" in tasks:
            math = config.reward.math
            scorer = stack.enter_context(
                closing(MathVerifyPool(num_workers=math.num_workers, timeout_s=math.timeout_s))
            )
        if "chat" in tasks:
            reward_model = stack.enter_context(closing(create_reward_scorer(config.reward.model)))
        return RewardRouter(scorer, reward_model)

    @staticmethod
    def _unit(
        context: RecipeContext,
        config: PreferenceFinetuneConfig,
        data: TrainingData,
        objective: Objective[Any],
        reference: CausalLM | None,
        schedule: RolloutSchedule | None,
        rewards: RewardRouter,
    ) -> PreferenceUnit:
        unit = PreferenceUnit(
            context.get_data_parallel_model(),
            objective,
            context.get_tokenizer(),
            reference=reference,
            schedule=schedule,
            rewards=rewards,
            tasks=data.train_tasks,
            entropy_coef=config.loss.entropy_coef,
            seed=config.common.seed,
            device=torch.device(str(context.device)),
            dp_gang=context.gangs.dp,
            rollout_logprobs=generator_logprobs(config.generator),
        )
        unit.void_updates_of(context.get_optimizer())
        return unit

    @staticmethod
    def _generator(
        context: RecipeContext,
        config: PreferenceFinetuneConfig,
        policy_module: CausalLM,
        reference: CausalLM | None,
        tokenizer: Any,
        dtype: torch.dtype,
    ) -> Any:
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
                config.generator,
                seed_model,
                tokenizer,
                model_name=str(seed_model_name),
                tokenizer_name=str(config.tokenizer.name),
                work_dir=context.output_dir,
                seed=config.common.seed,
                seed_state=seed_state,
                dtype=dtype,
            )
        return owner if dp_gang.size == 1 else GangGenerator(dp_gang, owner)

    @staticmethod
    def _reader(
        context: RecipeContext, config: PreferenceFinetuneConfig, data: TrainingData
    ) -> DataPipelineReader[Any]:
        dp = context.gangs.dp
        num_micro = config.trainer.grad_accumulation.num_batches
        window = (config.generator.sync_every_n_steps or 1) if config.generator.work_ahead else 1
        pipeline = train_pipeline(
            data.examples or data.pairs,
            config.dataset,
            window=window,
            num_micro=num_micro,
            seed=config.common.seed,
            dp_rank=dp.rank,
            dp_size=dp.size,
        )
        return DataPipelineReader(pipeline, context.gangs, num_accumulate=num_micro)

    @staticmethod
    def _valid_reader(
        context: RecipeContext, valid: ValidationSection, examples: list[PromptExample]
    ) -> DataPipelineReader[ValidationBatch]:
        """Every prompt once per validation, spread over the data-parallel ranks, as many
        batches on each (a generator shared over the gang needs every rank each call)."""
        dp = context.gangs.dp
        batches = validation_batches(examples, valid.max_batch_size, dp.rank, dp.size)
        return DataPipelineReader(read_sequence(batches).and_return(), context.gangs, sync_mode=SyncMode.UNTIL_LAST)

    @property
    @override
    def config_kls(self) -> type[object]:
        return PreferenceFinetuneConfig


def main() -> None:
    """``python -m`` takes what ``fs2-semionline lm preference_finetune`` takes (``--preset`` too)."""
    import sys

    from fs2_semionline.recipes import run_recipe

    run_recipe("preference_finetune", sys.argv[1:])


if __name__ == "__main__":
    main()
