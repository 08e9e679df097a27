"""The scripts that pick a checkpoint after a run read the run's folder with fairseq2's
own checkpoint manager: the steps it lists and the best score it ranks first."""

from __future__ import annotations

from pathlib import Path

from fs2_semionline.runs.checkpoints import best_scored_step, checkpoint_model_dir, checkpoint_steps


def _run(tmp_path: Path, scores: dict[int, float]) -> Path:
    checkpoints = tmp_path / "checkpoints"
    for step in (2, 4, 6, 10):
        (checkpoints / f"step_{step}" / "model").mkdir(parents=True)
    (checkpoints / "step_8.tmp").mkdir()  # a save that never committed
    (checkpoints / "scores").mkdir()
    for step, score in scores.items():
        (checkpoints / "scores" / f"step_{step}.txt").write_text(f"{score}\n")
    return tmp_path


def test_steps_in_order_without_unfinished_saves(tmp_path: Path) -> None:
    run = _run(tmp_path, {})
    assert checkpoint_steps(run) == [2, 4, 6, 10]
    assert best_scored_step(run) is None
    assert checkpoint_model_dir(run, 4).is_dir()


def test_the_best_score_wins_and_a_tie_goes_to_the_later_step(tmp_path: Path) -> None:
    assert best_scored_step(_run(tmp_path / "a", {2: 0.5, 4: 0.75, 6: 0.25})) == 4
    assert best_scored_step(_run(tmp_path / "b", {2: 0.75, 6: 0.75, 10: 0.5})) == 6
    assert best_scored_step(_run(tmp_path / "c", {12: 0.9, 2: 0.1})) == 2  # step 12 is gone
