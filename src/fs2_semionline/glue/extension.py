"""fairseq2 extension entry point (``fairseq2.extension`` group in pyproject.toml).

fairseq2 calls :func:`setup_extension` when it initialises; it registers our asset
cards (the tiny model, its tokenizer, the tiny math data) and the ``tiny_math`` llama
architecture. fairseq2 only logs a warning when an extension fails, so
``tests/test_extension.py`` proves that these registrations are visible.
"""

from __future__ import annotations

from fairseq2.composition import register_package_assets
from fairseq2.models.llama import LLaMAConfig
from fairseq2.runtime.config_registry import ConfigRegistrar
from fairseq2.runtime.dependency import DependencyContainer

TINY_MATH_ARCH = "tiny_math"


def tiny_math_config() -> LLaMAConfig:
    """3.7M-parameter llama: big enough to learn 2-digit arithmetic on CPU in minutes.

    The FFN size follows the standard llama rule (4·model_dim scaled by 2/3) because
    fairseq2's HF converter derives ``intermediate_size`` from ``model_dim`` alone and
    ignores ``ffn_inner_dim``: any other value would export a model HF cannot load.
    """
    return LLaMAConfig(
        model_dim=256,
        max_seq_len=256,
        vocab_size=1024,
        pad_idx=5,
        tied_embeddings=False,
        num_layers=4,
        num_attn_heads=4,
        num_key_value_heads=4,
        ffn_inner_dim=4 * 256,
        ffn_inner_dim_scale=2 / 3,
        ffn_inner_dim_multiple_of=1,
        rope_theta=10_000.0,
    )


def setup_extension(container: DependencyContainer) -> None:
    register_package_assets(container, "fs2_semionline.assets.cards")
    ConfigRegistrar(container, LLaMAConfig)(TINY_MATH_ARCH)(tiny_math_config)
