"""docs/configuration.md is generated from the config dataclasses; it must match them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fs2_semionline.config_reference import recipe_configs, render
from fs2_semionline.recipes.preference_finetune import PreferenceFinetuneConfig

DOC = Path(__file__).parents[1] / "docs" / "configuration.md"


def test_committed_reference_is_up_to_date() -> None:
    assert DOC.read_text() == render(recipe_configs()), (
        "docs/configuration.md is stale: python -m fs2_semionline.config_reference > docs/configuration.md"
    )


def test_every_key_of_our_sections_is_documented() -> None:
    text = DOC.read_text()
    config = PreferenceFinetuneConfig()
    for section in ("dataset", "generator", "reward", "loss", "reference_sync", "ray"):
        for f in dataclasses.fields(getattr(config, section)):
            assert f"| `{section}.{f.name}` |" in text, f"{section}.{f.name}"
    assert "| `generator.sync_every_n_steps` | int or None | `1` | s: 1 = online" in text
