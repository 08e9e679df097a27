"""Gradient accumulation (``trainer.grad_accumulation.num_batches`` = k): fairseq2 calls the
unit k times per step. The step's rollouts, rewards and pairs are made once, for the
whole step; each call trains on a k-th of its prompts; the gradient is normalised over
the whole step. So k = 2 must train exactly what k = 1 trains, with s-windows, work-ahead
and resume (fairseq2's Trainer, the tiny model, Math-Verify, all real).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fs2_semionline.core.paths import TINY_MATH_DATA_DIR

from helpers import run_recipe, tiny_config

# The sums and means that must not depend on how a step is cut into micro-batches.
COMPARED = (
    "Loss",
    "DPO Loss",
    "Chosen Log-prob",
    "Rejected Log-prob",
    "Reward",
    "Rollout Length",
    "Pairs",
    "Skipped Prompts",
    "Gradient Norm",
    "Rollout Entropy",
    "Generator Version Lag",
)


def _weights(step_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(step_dir / "model" / "pp_00" / "tp_00" / "sdp_00.pt", map_location="cpu", weights_only=True)
    return state.get("model", state)  # type: ignore[no-any-return]


def _config(tmp_path: Path, num_batches: int, num_steps: int = 4):  # type: ignore[no-untyped-def]
    config = tiny_config(tmp_path, name="dpo")
    config.dataset.batch_size = 8
    config.generator.sync_every_n_steps = 2  # semi-online: windows of 2 steps, worked ahead
    config.reference_sync.mode = "with_generator"
    config.trainer.grad_accumulation.num_batches = num_batches
    config.regime.num_steps = num_steps
    valid = tmp_path / "valid.jsonl"
    if not valid.exists():
        valid.write_text("\n".join((TINY_MATH_DATA_DIR / "valid.jsonl").read_text().splitlines()[:6]) + "\n")
    config.validation.math_paths = [valid]
    config.validation.max_batch_size = 3
    config.regime.validate_every_n_steps = 2
    return config


def test_two_micro_batches_train_what_one_batch_trains(tmp_path: Path) -> None:
    whole = run_recipe(_config(tmp_path, 1), tmp_path / "k1")
    split = run_recipe(_config(tmp_path, 2), tmp_path / "k2")
    assert [r["Step"] for r in split] == [1, 2, 3, 4]
    assert sum(float(r["Pairs"]) for r in whole) > 4  # pairs were trained, so the test can fail
    for a, b in zip(whole, split):
        for key in COMPARED:
            assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-4, abs=1e-6, nan_ok=True), (a["Step"], key)
    valid = [
        [json.loads(l) for l in (tmp_path / d / "metrics" / "valid.jsonl").read_text().splitlines()]
        for d in ("k1", "k2")
    ]
    assert [v["Step"] for v in valid[1]] == [2, 4]
    assert [v["Accuracy (math)"] for v in valid[1]] == pytest.approx([v["Accuracy (math)"] for v in valid[0]], abs=1e-9)
    w1, w2 = _weights(tmp_path / "k1" / "checkpoints" / "step_4"), _weights(tmp_path / "k2" / "checkpoints" / "step_4")
    for name, value in w1.items():
        torch.testing.assert_close(w2[name], value, rtol=1e-4, atol=1e-6)

    # Resume with accumulation: 2 steps, then the same output dir to 4, equals the whole run.
    run_recipe(_config(tmp_path, 2, num_steps=2), tmp_path / "k2_resumed")
    resumed = run_recipe(_config(tmp_path, 2), tmp_path / "k2_resumed")
    rows = {int(r["Step"]): r for r in resumed}
    for r in split[2:]:
        for key in COMPARED:
            assert float(rows[int(r["Step"])][key]) == pytest.approx(float(r[key]), rel=1e-6, abs=1e-7, nan_ok=True), (
                key
            )


def test_rollouts_are_generated_once_per_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The generator sees each step's whole batch in one request, whatever k is."""
    from fs2_semionline.generation.local import LocalGenerator

    calls: list[int] = []
    submit = LocalGenerator.submit

    def counting_submit(self, prompts, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(len(prompts))
        return submit(self, prompts, *args, **kwargs)

    monkeypatch.setattr(LocalGenerator, "submit", counting_submit)
    run_recipe(_config(tmp_path, 2, num_steps=2), tmp_path / "count")
    assert calls == [8, 8]  # 2 steps x 8 prompts, none per micro-batch
    rows = [json.loads(l) for l in (tmp_path / "count" / "metrics" / "train.jsonl").read_text().splitlines()]
    assert [float(r["Pairs"]) + float(r["Skipped Prompts"]) for r in rows] == [8.0, 8.0]
