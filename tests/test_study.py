"""The study driver (``make study``): its statistics by hand, and a small study end to end."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from fs2_semionline.tools import study


def test_seed_statistics_by_hand() -> None:
    rows = [
        {"accuracy": 0.5, "accuracy_stderr": 0.01, "train_minutes": 1.0},
        {"accuracy": 0.6, "accuracy_stderr": 0.02, "train_minutes": 2.0},
        {"accuracy": 0.7, "accuracy_stderr": 0.03, "train_minutes": 3.0},
    ]
    got = study.summarise(rows)
    assert got["accuracy"] == pytest.approx(0.6)
    assert got["stderr_across_seeds"] == pytest.approx(0.1 / math.sqrt(3))  # sample stdev 0.1 over 3 seeds
    assert got["stderr_within_seed"] == pytest.approx(0.02)
    assert got["train_minutes"] == pytest.approx(2.0)
    assert math.isnan(study.summarise(rows[:1])["stderr_across_seeds"])  # one seed: no spread to show


def test_checkpoints_fall_on_sync_boundaries() -> None:
    assert study._checkpoint_interval(60, study.semi_online(10)) == 20
    assert study._checkpoint_interval(60, study.semi_online(2)) == 20
    assert study._checkpoint_interval(2, study.ONLINE) == 2


def _cli_in_process(*args: str) -> None:
    """``fs2-semionline ARGS`` as the study runs it, in this process: the same command
    without the ~8 s a fresh interpreter spends importing, for each of the study's runs."""
    from fs2_semionline.cli import main

    argv = list(sys.argv)
    try:
        main([*args, "--no-rich"])
    except SystemExit as ex:
        assert ex.code in (0, None), f"fs2-semionline {' '.join(args)} exited with {ex.code}"
    finally:
        sys.argv = argv


@pytest.mark.slow
def test_a_two_method_one_seed_study_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(study, "METHODS", list(study.METHODS))  # main() narrows the list
    monkeypatch.setattr(study, "_cli", _cli_in_process)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "study"
    study.main(
        [str(out), "--methods", "offline_dpo,online_dpo", "--seeds", "1", "--steps", "2", "--num-samples", "1"]
        + ["--sweep", "1,inf", "--offline-lrs", "1e-4"]
    )
    result = json.loads((out / "results.json").read_text())
    assert list(result["methods"]) == ["Offline DPO", "Online DPO"]
    for entry in [*result["methods"].values(), *result["sync_sweep"].values()]:
        (row,) = entry["seeds"]
        assert 0.0 <= row["accuracy"] <= 1.0 and entry["accuracy"] == row["accuracy"]
        assert math.isnan(entry["stderr_across_seeds"])  # one seed
    # s = 1 is online DPO, s = ∞ offline DPO at the shared lr (the offline study's 1e-4 run): not trained twice.
    assert result["sync_sweep"]["1"]["seeds"][0]["run"] == result["methods"]["Online DPO"]["seeds"][0]["run"]
    assert result["sync_sweep"]["inf"]["seeds"][0]["run"] == "runs/offline_dpo_lr_0_0001/seed_0"
    offline = result["offline"]
    assert set(offline["validation_grid"]) == {"1e-05", "0.0001"}  # the preset's lr, and the one tried
    assert all(set(row) == {"2"} for row in offline["validation_grid"].values())
    best = max(offline["validation_grid"].items(), key=lambda kv: kv[1]["2"])
    assert offline["chosen"]["lr"] == pytest.approx(float(best[0])) and offline["chosen"]["steps"] == 2
    assert {"chosen_logp", "chosen_logp_start"} <= set(offline["logprobs"]["Offline DPO (lr 0.0001)"])
    table = (out / "table.md").read_text()
    assert "| Offline DPO |" in table and "| ∞ |" in table and "Chosen on validation" in table
    for png in ("accuracy_vs_s.png", "plots/reward.png", "plots/rollout_length.png", "plots/rollout_entropy.png"):
        assert (out / png).stat().st_size > 0, png
