"""The shipped ``lm evaluate`` presets: paper §3 settings, valid configs, a documented data path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fairseq2.utils.structured import StandardValueConverter

from fs2_semionline.config.evaluate import EvaluateConfig
from fs2_semionline.config.presets import list_presets

PRESETS = {p.name: p for p in list_presets() if p.recipe == "evaluate"}
FULL_SCALE = {
    "eval_math": "math",
    "eval_math500": "math",
    "eval_amc23": "math",
    "eval_aime24": "math",
    "eval_aime25": "math",
    "eval_numinamath_test": "math",
    "eval_alpaca_eval": "chat",
    "eval_arena_hard": "chat",
}

#: Presets that read their set by its Hub name (``datasets.load_dataset``, cached).
NAMED = {
    "eval_math500": [Path("HuggingFaceH4/MATH-500")],
    "eval_amc23": [Path("math-ai/amc23")],
    "eval_aime24": [Path("HuggingFaceH4/aime_2024")],
    "eval_aime25": [Path("yentinglin/aime_2025")],
}


@pytest.mark.parametrize("name", sorted(FULL_SCALE))
def test_full_scale_eval_preset(name: str) -> None:
    preset = PRESETS[name]
    config = StandardValueConverter().structure(yaml.safe_load(preset.path.read_text()), EvaluateConfig)
    assert config.dataset.task == FULL_SCALE[name]
    assert config.model.name == config.tokenizer.name == "llama3_1_8b_instruct"
    assert (config.sampling.temperature, config.sampling.top_p) == (0.6, 0.9)
    assert config.sampling.num_samples == (50 if config.dataset.task == "math" else 1)
    # The data path is a placeholder the user sets, or a set's Hub name; the one-line
    # description says how to give another.
    assert "--config 'dataset.paths=[" in preset.about
    assert config.dataset.paths == NAMED.get(name, [])
