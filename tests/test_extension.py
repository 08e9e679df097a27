"""fairseq2 loads our extension: its cards, tokenizer and architecture are visible.

fairseq2 only warns when an extension fails, so this runs in a fresh interpreter
*without* FAIRSEQ2_EXTENSION_TRACE and checks the registrations themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = r"""
import json, torch
from fairseq2 import init_fairseq2
from fairseq2.assets import AssetStore
from fairseq2.models.llama import get_llama_model_hub
from fairseq2.runtime.dependency import get_dependency_resolver
init_fairseq2()
store = get_dependency_resolver().resolve(AssetStore)
card = store.retrieve_card("tiny_math_sft")
hub = get_llama_model_hub()
cfg = hub.get_arch_config("tiny_math")
model = hub.load_model("tiny_math_sft", device=torch.device("cpu"))
print(json.dumps({
    "family": card.field("model_family").as_(str),
    "archs": sorted(a for a in hub.get_archs() if a == "tiny_math"),
    "model_dim": cfg.model_dim,
    "params": sum(p.numel() for p in model.parameters()),
    "tokenizer_card": store.retrieve_card("tiny_math_tokenizer").field("tokenizer_family").as_(str),
}))
"""


def test_extension_registers_cards_arch_and_loads_model() -> None:
    env = {k: v for k, v in os.environ.items() if k != "FAIRSEQ2_EXTENSION_TRACE"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["family"] == "llama"
    assert result["archs"] == ["tiny_math"]
    assert result["model_dim"] == 256
    assert 1_000_000 <= result["params"] <= 10_000_000
    assert result["tokenizer_card"] == "hg"


def test_importing_the_package_needs_neither_vllm_nor_ray() -> None:
    """The local backend and Math-Verify runs must not pay for (or need) vLLM and Ray."""
    probe = (
        "import sys, fs2_semionline.cli, fs2_semionline.recipes.preference_finetune, "
        "fs2_semionline.recipes.evaluate, fs2_semionline.units.preference, fs2_semionline.generation.factory\n"
        "print(sorted(m for m in ('vllm', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
