"""The relations between keys that depend on the objective are read from each objective's
own declaration (``Objective.TRAITS``): every ``loss.name`` is refused or accepted as it
declares, and the error names the objectives that would be accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from fs2_semionline.config.training import ImportanceSamplingConfig
from fs2_semionline.core.errors import ConfigError
from fs2_semionline.objectives import OBJECTIVES, LossSection, objective_traits, objectives_configured_by
from fs2_semionline.objectives.registry import own_keys
from fs2_semionline.recipes.checks import check_config
from fs2_semionline.recipes.preference_finetune import PreferenceFinetuneConfig


def config_for(name: str, **changes: object) -> PreferenceFinetuneConfig:
    config = PreferenceFinetuneConfig()
    config.loss = LossSection(name=name, config=OBJECTIVES[name].config_kls())
    config.generator.sync_every_n_steps = 1
    config.regime.checkpoint_every_n_steps = 2
    for key, value in changes.items():
        *path, field = key.split("__")
        section: object = config
        for part in path:
            section = getattr(section, part)
        setattr(section, field, value)
    return config


def test_the_declarations_are_the_papers() -> None:
    assert [n for n in OBJECTIVES if objective_traits(n).on_policy_only] == ["grpo"]
    assert objectives_configured_by(ImportanceSamplingConfig) == ["dpo", "grpo"]
    assert [n for n in OBJECTIVES if objective_traits(n).fixed_pairs] == ["dpo"]


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_each_objective_is_checked_by_what_it_declares(name: str, tmp_path: Path) -> None:
    traits = objective_traits(name)
    check_config(config_for(name))  # online: every objective

    semi = config_for(name, generator__sync_every_n_steps=2)
    if traits.on_policy_only:
        with pytest.raises(ConfigError, match=f"loss.name={name} is on-policy"):
            check_config(semi)
    else:
        check_config(semi)

    if name in objectives_configured_by(ImportanceSamplingConfig):
        check_config(config_for(name, loss__config__importance_sampling="truncated", generator__backend="vllm"))
        if traits.fixed_pairs:
            fixed = config_for(
                name,
                loss__config__importance_sampling="truncated",
                dataset__pairs_path=tmp_path / "pairs.jsonl",
                generator__sync_every_n_steps=None,
            )
            with pytest.raises(ConfigError, match="needs rollouts with their log-probs"):
                check_config(fixed)

    pairs = config_for(name, dataset__pairs_path=tmp_path / "pairs.jsonl", generator__sync_every_n_steps=None)
    if traits.fixed_pairs:
        check_config(pairs)
    else:
        with pytest.raises(ConfigError, match="needs loss.name=dpo and|is on-policy"):  # refused either way
            check_config(pairs)


DPO_DEFAULTS = {"beta": 0.1, "length_normalize": False, "nll_scale": 0.0, "nll_length_normalize": False}


def test_switching_objective_drops_the_default_objectives_untouched_keys() -> None:
    """``loss.name=grpo`` alone: fairseq2's merge leaves DPO's default keys in ``loss.config``;
    those at their defaults are dropped, a changed one is an error naming its owners."""
    merged = {**DPO_DEFAULTS, "importance_sampling": "none", "kl_beta": 0.01}
    assert own_keys("grpo", merged, DPO_DEFAULTS | {"importance_sampling": "none"}) == {
        "length_normalize": False,  # a key of both: kept
        "importance_sampling": "none",
        "kl_beta": 0.01,
    }
    with pytest.raises(
        ConfigError, match=r"loss.config.beta: not a key of loss.name=grpo \(a key of loss.name=dpo, group_dpo\)"
    ):
        own_keys("grpo", {**merged, "beta": 0.05}, DPO_DEFAULTS)
    with pytest.raises(
        ConfigError,
        match=r"loss.config.importance_sampling: not a key of loss.name=group_dpo \(a key of loss.name=dpo, grpo\)",
    ):
        own_keys("group_dpo", {**DPO_DEFAULTS, "importance_sampling": "truncated"}, DPO_DEFAULTS)
    with pytest.raises(ConfigError, match="loss.config.kl_beta: not a key of loss.name=dpo"):
        own_keys("dpo", {**DPO_DEFAULTS, "kl_beta": 0.0}, DPO_DEFAULTS)  # the default objective keeps all


def test_a_config_of_another_objective_is_refused_by_validation() -> None:
    errors = str(LossSection(name="grpo").validate())
    assert "`config` must be a GRPOConfig for name=grpo, got DPOConfig" in errors
