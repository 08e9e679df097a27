"""docs/configuration.md is generated from the config dataclasses; it must match them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from fs2_semionline.recipes.preference_finetune import PreferenceFinetuneConfig
from fs2_semionline.tools.config_reference import recipe_configs, render

DOC = Path(__file__).parents[1] / "docs" / "configuration.md"


def test_committed_reference_is_up_to_date() -> None:
    assert DOC.read_text() == render(recipe_configs()), (
        "docs/configuration.md is stale: python -m fs2_semionline.tools.config_reference > docs/configuration.md"
    )


def _leaf_keys(obj: object, prefix: str) -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys += _leaf_keys(value, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def test_every_key_of_our_sections_is_documented() -> None:
    rows = {
        line.split("|")[1].strip(" `"): line.split("|")[-2].strip()
        for line in DOC.read_text().splitlines()
        if line.startswith("| `")
    }
    config = PreferenceFinetuneConfig()
    for section in ("dataset", "generator", "reward", "loss", "reference_sync", "validation", "ray"):
        for key in _leaf_keys(getattr(config, section), f"{section}."):
            assert key in rows, key
            assert rows[key], f"{key} has no description"
    text = DOC.read_text()
    assert "| `generator.sync_every_n_steps` | int or None | `1` | s: 1 = online" in text
