"""The tiny model's SFT recipe on fairseq2's own Trainer (the script that made the checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fs2_semionline.core.paths import TINY_MATH_DATA_DIR
from fs2_semionline.tiny.sft import TinySFTConfig, TinySFTRecipe, collate_lm


def test_collate_masks_only_response_tokens() -> None:
    batch = collate_lm([([0, 1, 2, 3, 4], 2), ([0, 1, 2], 1)], pad_idx=9)
    assert batch.seqs.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 9, 9]]
    assert batch.target_mask.tolist() == [[False, False, True, True, True], [False, True, True, False, False]]
    assert batch.seq_lens == [5, 3]


def test_short_sft_run_lowers_the_loss_and_checkpoints(tmp_path: Path) -> None:
    from fairseq2.recipe.run import run

    train = tmp_path / "train.jsonl"
    train.write_text("\n".join((TINY_MATH_DATA_DIR / "train.jsonl").read_text().splitlines()[:256]) + "\n")
    config = TinySFTConfig()
    config.dataset.path = train
    config.dataset.batch_size = 16
    config.regime.num_steps = 6
    config.regime.checkpoint_after_n_steps = 0
    config.regime.checkpoint_every_n_steps = 6
    config.regime.publish_metrics_every_n_steps = 1
    config.lr_scheduler.config.num_warmup_steps = 0
    config.common.metric_recorders.tensorboard.enabled = False
    torch.manual_seed(0)
    run(TinySFTRecipe(), config, tmp_path / "out", no_rich=True)

    rows = [json.loads(l) for l in (tmp_path / "out" / "metrics" / "train.jsonl").read_text().splitlines()]
    losses = [r["NLL Loss"] for r in rows]  # display name of fairseq2's nll_loss descriptor
    assert len(losses) == 6
    assert losses[-1] < 0.8 * losses[0], losses  # from random init the NLL falls fast
    assert (tmp_path / "out" / "checkpoints" / "step_6" / "model").is_dir()


def test_a_record_with_an_unknown_task_names_its_line(tmp_path: Path) -> None:
    import pytest
    from fairseq2.recipe.run import run

    from fs2_semionline.core.errors import DataFileError

    train = tmp_path / "train.jsonl"
    rows = [
        {"prompt": "Write about Ana and the coins. Use no numbers.", "solution": "Ana likes the coins.", "task": "chat"}
    ] * 3
    rows.append({"prompt": "x", "solution": "y", "task": "poem"})
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = TinySFTConfig()
    config.dataset.path = train
    config.regime.num_steps = 1
    config.common.metric_recorders.tensorboard.enabled = False
    with pytest.raises(
        DataFileError, match=rf"{train}:4: field 'task': expected one of \['chat', 'math'\], got 'poem'"
    ):
        run(TinySFTRecipe(), config, tmp_path / "out", no_rich=True)


def test_tiny_batches_move_in_place_as_fairseq2s_trainer_expects() -> None:
    """fairseq2's Trainer calls ``batch.to(device)`` and drops what it returns: a batch
    that returned a moved copy stayed on the CPU on a GPU (found by mypy's
    SupportsDeviceTransfer bound)."""
    from fs2_semionline.tiny.train_reward_model import collate_pairs

    meta = torch.device("meta")
    lm = collate_lm([([1, 2, 3], 1), ([4, 5], 1)], pad_idx=0)
    lm.to(meta)
    assert lm.seqs.is_meta and lm.target_mask.is_meta
    pairs = collate_pairs([([1, 2], [3])], pad_idx=0)
    pairs.to(meta)
    assert pairs.seqs.is_meta
