"""Which checkpoints a run has, and which one its validation scored best.

fairseq2's checkpoint manager writes ``checkpoints/step_N/`` and, when a
``regime.score_metric`` is set, ``checkpoints/scores/step_N.txt`` (higher is better;
it keeps the best ones with ``regime.keep_best_n_checkpoints``). These helpers only
read that layout, for the scripts that pick a checkpoint after a run.
"""

from __future__ import annotations

from pathlib import Path


def checkpoint_steps(run_dir: Path) -> list[int]:
    """The steps of the checkpoints on disk, in order."""
    return sorted(int(p.name.removeprefix("step_")) for p in (Path(run_dir) / "checkpoints").glob("step_*"))


def checkpoint_model_dir(run_dir: Path, step: int) -> Path:
    """The folder ``model.path`` takes (with ``model.family`` and ``model.arch``)."""
    return Path(run_dir) / "checkpoints" / f"step_{step}" / "model"


def best_scored_step(run_dir: Path) -> int | None:
    """The checkpoint validation scored best (ties: the later one, as fairseq2 keeps it);
    None when no checkpoint on disk has a score."""
    scores_dir = Path(run_dir) / "checkpoints" / "scores"
    scores = {int(p.stem.removeprefix("step_")): float(p.read_text()) for p in scores_dir.glob("step_*.txt")}
    scored = [s for s in checkpoint_steps(run_dir) if s in scores]
    return max(scored, key=lambda s: (scores[s], s)) if scored else None
