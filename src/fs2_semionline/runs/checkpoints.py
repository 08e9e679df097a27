"""Which checkpoints a finished run has, and which one its validation scored best, read
by fairseq2's own checkpoint manager.

fairseq2's manager writes ``checkpoints/step_N/`` and, when a ``regime.score_metric`` is
set, ``checkpoints/scores/step_N.txt`` (higher is better; it keeps the best ones with
``regime.keep_best_n_checkpoints``). The scripts that pick a checkpoint after a run open
the same manager on the run's folder, in their own process (fake gangs), so they list and
rank checkpoints exactly as the run's manager did.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fairseq2.checkpoint import CheckpointManager


def checkpoint_manager(run_dir: Path) -> CheckpointManager:
    """fairseq2's checkpoint manager on ``run_dir/checkpoints``, for this process alone."""
    from fairseq2.checkpoint import StandardCheckpointManager
    from fairseq2.device import CPU
    from fairseq2.gang import create_fake_gangs
    from fairseq2.runtime.dependency import get_dependency_resolver, wire_object

    return wire_object(
        get_dependency_resolver(), StandardCheckpointManager, output_dir=Path(run_dir), gangs=create_fake_gangs(CPU)
    )


def checkpoint_steps(run_dir: Path) -> list[int]:
    """The steps of the checkpoints on disk, in order (unfinished ``.tmp`` saves excluded)."""
    return checkpoint_manager(run_dir).get_step_numbers()


def checkpoint_model_dir(run_dir: Path, step: int) -> Path:
    """The folder ``model.path`` takes (with ``model.family`` and ``model.arch``)."""
    return Path(run_dir) / "checkpoints" / f"step_{step}" / "model"


def best_scored_step(run_dir: Path) -> int | None:
    """The checkpoint validation scored best (ties: the later one, as fairseq2 ranks
    them); None when no checkpoint on disk has a score."""
    scores = checkpoint_manager(run_dir).load_scores()  # (score, step), best first
    return scores[0][1] if scores else None
