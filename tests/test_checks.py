"""The relations between keys that depend on the objective are read from each objective's
own declaration (``Objective.TRAITS``): every ``loss.name`` is refused or accepted as it
declares, and the error names the objectives that would be accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from fs2_semionline.core.errors import ConfigError
from fs2_semionline.objectives import OBJECTIVES, objective_traits
from fs2_semionline.recipes.checks import check_config
from fs2_semionline.recipes.preference_finetune import PreferenceFinetuneConfig


def config_for(name: str, **changes: object) -> PreferenceFinetuneConfig:
    config = PreferenceFinetuneConfig()
    config.loss.name = name  # type: ignore[assignment]
    config.generator.sync_every_n_steps = 1
    config.regime.checkpoint_every_n_steps = 2
    for key, value in changes.items():
        section, field = key.split("__")
        setattr(getattr(config, section), field, value)
    return config


def test_the_declarations_are_the_papers() -> None:
    assert [n for n in OBJECTIVES if objective_traits(n).on_policy_only] == ["grpo"]
    assert [n for n in OBJECTIVES if objective_traits(n).importance_sampling] == ["dpo", "grpo"]
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

    truncated = config_for(name, loss__importance_sampling="truncated", generator__backend="vllm")
    if traits.importance_sampling:
        check_config(truncated)
    else:
        with pytest.raises(ConfigError, match="defined for loss.name=dpo and grpo, got " + name):
            check_config(truncated)

    pairs = config_for(name, dataset__pairs_path=tmp_path / "pairs.jsonl", generator__sync_every_n_steps=None)
    if traits.fixed_pairs:
        check_config(pairs)
    else:
        with pytest.raises(ConfigError, match="needs loss.name=dpo and|is on-policy"):  # refused either way
            check_config(pairs)
