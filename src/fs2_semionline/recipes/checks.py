"""Contradictions between keys of ``lm preference_finetune``, refused before anything
loads, each as one line naming the keys (relations between keys live here only)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from fairseq2.utils.validation import StandardObjectValidator, ValidationError, ValidationResult

from fs2_semionline.config.training import ImportanceSamplingConfig, RolloutGeneratorSection
from fs2_semionline.core.errors import ConfigError, check_data_files
from fs2_semionline.objectives import objective_traits, objectives_with


def validate_recipe_config(config: Any) -> ValidationResult:
    """``PreferenceFinetuneConfig.validate()``: fairseq2 keys it leaves unchecked, then,
    only when every section is valid on its own (fairseq2 reports those errors), the
    relations between keys (:func:`check_config`)."""
    result = ValidationResult()
    optimizer = getattr(config, "optimizer", None)
    lr = getattr(getattr(optimizer, "config", None), "lr", None)
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
        result.add_error(f"optimizer.config.lr must be >= 0, got {lr!r}.")
    validator = StandardObjectValidator()
    for f in dataclasses.fields(config):
        try:
            validator.validate(getattr(config, f.name))
        except ValidationError:
            return result
    try:
        check_config(config)
    except ConfigError as err:
        result.add_error(str(err))
    return result


def check_config(config: Any) -> None:
    """``config``: a ``PreferenceFinetuneConfig``."""
    gen, loss, dataset, valid, regime = config.generator, config.loss, config.dataset, config.validation, config.regime
    s = gen.sync_every_n_steps
    traits = objective_traits(loss.name)
    if traits.on_policy_only and s != 1:
        raise ConfigError(
            f"loss.name={loss.name} is on-policy (paper §2.3): it needs generator.sync_every_n_steps=1, got {s}"
        )
    every = regime.checkpoint_every_n_steps
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
    if dataset.pairs_path is not None and (not traits.fixed_pairs or s is not None):
        raise ConfigError(
            f"dataset.pairs_path (offline DPO from fixed pairs) needs loss.name={_one_of('fixed_pairs')} and "
            f"generator.sync_every_n_steps=null, got loss.name={loss.name}, sync_every_n_steps={s}"
        )
    if "chat" in dataset.tasks and not config.reward.model.name:
        raise ConfigError(
            "dataset.chat_paths are scored by the reward model: set reward.model.name (a card or a local HF folder)"
        )
    if (valid.math_paths or valid.chat_paths) and not (regime.validate_every_n_steps or regime.validate_at_start):
        raise ConfigError(
            "validation.math_paths/chat_paths are set but regime.validate_every_n_steps is null "
            "(and regime.validate_at_start is false): no validation would run"
        )
    if valid.chat_paths and not config.reward.model.name:
        raise ConfigError("validation.chat_paths are scored by the reward model: set reward.model.name")
    if gen.colocate and gen.backend != "vllm":
        raise ConfigError("generator.colocate=true colocates a vLLM engine: it needs generator.backend=vllm")
    if isinstance(loss.config, ImportanceSamplingConfig) and loss.config.importance_sampling == "truncated":
        if dataset.pairs_path is not None:
            raise ConfigError(
                "loss.config.importance_sampling=truncated needs rollouts with their log-probs, not dataset.pairs_path"
            )
        if not generator_logprobs(gen):
            raise ConfigError(
                "loss.config.importance_sampling=truncated needs the generator's log-probs: generator.backend=vllm, or "
                f"local at generator.temperature 1 (fairseq2's sampler scores tempered tokens), got {gen.temperature}"
            )
    if valid.sampler == "generator" and not validates_through_generator(config):
        raise ConfigError(
            "validation.sampler=generator needs generator.backend=vllm and every validation step on a sync "
            f"boundary: regime.validate_every_n_steps ({regime.validate_every_n_steps}) a multiple of "
            f"generator.sync_every_n_steps ({s})"
        )


def _one_of(trait: str, sep: str = " or ") -> str:
    """The objectives that declare ``trait``, for an error message."""
    return sep.join(objectives_with(trait))


def check_config_files(config: Any) -> None:
    """Every data file named by the config exists, and the data a key needs is named
    (before any model loads: a typo in a path must not cost a model download). Presets
    leave paths empty for the user to set, so this is not part of :func:`check_config`."""
    dataset, valid, regime = config.dataset, config.validation, config.regime
    if regime.score_metric is not None and not (valid.math_paths or valid.chat_paths):
        raise ConfigError(
            f"regime.score_metric={regime.score_metric} selects checkpoints on validation sets: set "
            "validation.math_paths and/or validation.chat_paths, or regime.score_metric=null to train without"
        )
    for key, paths in (("validation.math_paths", valid.math_paths), ("validation.chat_paths", valid.chat_paths)):
        if paths:
            check_data_files(key, paths)
    if dataset.pairs_path is not None:
        check_data_files("dataset.pairs_path", [Path(dataset.pairs_path)])
        return
    if not (dataset.math_paths or dataset.chat_paths):
        raise ConfigError(
            "dataset.math_paths and dataset.chat_paths are both empty: set --config 'dataset.math_paths=[file.jsonl]' "
            "(or chat_paths, or dataset.pairs_path)"
        )
    for key, paths in (("dataset.math_paths", dataset.math_paths), ("dataset.chat_paths", dataset.chat_paths)):
        if paths:
            check_data_files(key, paths)


def generator_logprobs(generator: RolloutGeneratorSection) -> bool:
    """Whether rollouts come with the generator's log-probs of their tokens (raw logits,
    at temperature 1): vLLM always; fairseq2's sampler only untempered (T 1, or greedy)."""
    return generator.backend == "vllm" or generator.temperature in (0.0, 1.0)


def validates_through_generator(config: Any) -> bool:
    """``validation.sampler``: whether validation samples through the rollout generator."""
    s, every = config.generator.sync_every_n_steps, config.regime.validate_every_n_steps
    possible = config.generator.backend == "vllm" and s is not None and every is not None and every % s == 0
    return possible and config.validation.sampler in ("auto", "generator")
