"""Every shipped preference_finetune preset structures into the recipe's config through
fairseq2's own path (the CLI's ``--dump-config``: merge, structure, the objective
registry, validation and the recipe's config checks) and holds the paper's values."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import yaml
from fairseq2.utils.structured import StandardValueConverter
from ruamel.yaml import YAML

from fs2_semionline.config.presets import list_presets
from fs2_semionline.recipes.preference_finetune import PreferenceFinetuneConfig

from helpers import run_main

PRESETS = [p for p in list_presets() if p.recipe == "preference_finetune"]


def test_the_paper_table_4_presets_are_shipped() -> None:
    names = {p.name for p in PRESETS}
    for task in ("math", "chat"):
        assert {f"{task}_offline_dpo", f"{task}_semi_online_dpo", f"{task}_online_dpo", f"{task}_grpo"} <= names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_preset_is_a_valid_config(preset, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = run_main(
        ["lm", "preference_finetune", str(tmp_path / "out"), "--preset", preset.name, "--dump-config"], capfd
    )
    assert out.returncode == 0, out.stderr[-2000:]
    dumped = YAML(typ="safe", pure=True).load(io.StringIO(out.stdout))  # YAML 1.2, as fairseq2 reads it
    loss = dumped["loss"]
    config = StandardValueConverter().structure(dumped, PreferenceFinetuneConfig)  # loss.config stays a dict
    raw = yaml.safe_load(preset.path.read_text())
    assert config.generator.backend == "vllm"
    if not preset.name.startswith("tiny_"):
        # Paper scale: fp32 master weights sharded by FSDP2, bf16 compute; the batch is the
        # paper's global batch and divides over the paper's 32 trainer GPUs.
        assert config.model.dtype == torch.float32 and config.trainer.data_parallelism == "fsdp"
        assert config.trainer.mixed_precision.mode == "static"
        assert config.trainer.mixed_precision.dtype == torch.bfloat16
        assert config.dataset.batch_size in (32, 64) and config.dataset.batch_size % 32 == 0
    if preset.name.startswith("chat_"):
        # Table 4, non-verifiable: β 0.01 (GRPO: KL 0.001), ε 1e-8, clip 0.1, no reference sync.
        assert config.dataset.math_paths == [] and "chat_paths" in raw["dataset"]
        assert config.reward.model.name == "athene_rm_8b"
        assert raw["optimizer"]["config"]["eps"] == 1e-8 and config.trainer.max_grad_norm == 0.1
        if loss["name"] == "grpo":
            assert loss["config"]["kl_beta"] == 0.001 and "beta" not in loss["config"]
        else:
            assert loss["config"]["beta"] == 0.01
        assert config.reference_sync.mode == "frozen" and config.generator.max_gen_len == 1024
    if preset.name == "mixed_online_dpo":  # Table 4, combined from the seed
        assert (
            config.dataset.math_paths == config.dataset.chat_paths == [] and config.reward.model.name == "athene_rm_8b"
        )
        assert loss["config"]["beta"] == 0.01 and raw["optimizer"]["config"]["eps"] == 1e-5
        assert config.generator.sync_every_n_steps == 1 and config.dataset.batch_size == 32


def test_dir_in_a_merged_preset_means_each_files_own_folder(tmp_path) -> None:
    """``${dir}`` is fairseq2's "folder of this config file"; merging a user file on top of a
    preset writes a new file elsewhere, so each file's ``${dir}`` is expanded first."""
    from fs2_semionline.config.presets import get_preset, merged_config_file
    from fs2_semionline.core.paths import PRESETS_DIR, TINY_CHAT_DATA_DIR

    user = tmp_path / "mine.yaml"
    user.write_text("validation:\n  chat_paths: ['${dir}/my_valid.jsonl']\n")
    merged = yaml.safe_load(
        merged_config_file(get_preset("tiny_mixed_online_dpo", "preference_finetune"), user).read_text()
    )
    (chat,) = merged["dataset"]["chat_paths"]
    assert chat == f"{PRESETS_DIR.resolve()}/../assets/tiny_chat/data/train.jsonl"
    assert Path(chat).resolve() == (TINY_CHAT_DATA_DIR / "train.jsonl").resolve()
    assert merged["validation"]["chat_paths"] == [f"{tmp_path.resolve()}/my_valid.jsonl"]
    assert merged["validation"]["math_paths"] == [f"{PRESETS_DIR.resolve()}/../assets/tiny_math/data/valid.jsonl"]
