"""What a run checks and tidies in its output folder before it trains.

fairseq2 resumes from the last checkpoint in the folder, whatever config made it, and
writes ``config.yaml`` anew before the recipe sees the old one. So a fresh run records
its config beside its checkpoints (``run_config.json``); a resumed run compares against
it: a key that changes the maths (loss, s, seed, batch, data, model, optimizer, ...) is
refused with the differing keys named, a harmless one (the step budget, logging,
validation cadence, memory knobs, timeouts) is allowed and logged. A resumed run also
drops the metric rows of the steps after its checkpoint, which it is about to run again,
so each step appears once in ``metrics/*.jsonl``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fairseq2.logging import log

from fs2_semionline.core.errors import ConfigError

RUN_CONFIG = "run_config.json"

#: Keys a resumed run may change: none of them changes what is trained on or how.
HARMLESS_KEYS: tuple[str, ...] = (
    "regime.num_steps",
    "regime.num_data_epochs",
    "regime.validate_",
    "regime.checkpoint_every_n_steps",
    "regime.keep_",
    "regime.publish_metrics_every_n_steps",
    "regime.export_hugging_face",
    "regime.score_metric",
    "regime.save_model_only",
    "validation.",
    "common.metric_recorders.",
    "common.profilers.",
    "common.assets.",
    "common.no_sweep_dir",
    "gang.",
    "ray.",
    "generator.max_batch_size",
    "generator.replicas",
    "generator.num_cpus_per_replica",
    "generator.engine_args",
    "generator.sync_bucket_mb",
    "generator.sync_timeout_s",
    "generator.generate_timeout_s",
    "generator.max_restarts",
    "reward.math.num_workers",
    "reward.math.timeout_s",
    "reward.model.replicas",
    "reward.model.num_cpus",
    "reward.model.device",
    "reward.model.max_batch_size",
    "reward.model.timeout_s",
)


def flatten(tree: object, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists stay whole values)."""
    if not isinstance(tree, Mapping) or not tree:
        return {prefix.rstrip("."): tree}
    out: dict[str, object] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def config_changes(old: Mapping[str, object], new: Mapping[str, object]) -> dict[str, tuple[object, object]]:
    """Keys whose value differs (a key present on one side only counts)."""
    missing = object()
    changes = {}
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key, missing), new.get(key, missing)
        if before != after:
            changes[key] = ("(unset)" if before is missing else before, "(unset)" if after is missing else after)
    return changes


def is_harmless(key: str) -> bool:
    return key.startswith(HARMLESS_KEYS)


def _describe(changes: Mapping[str, tuple[object, object]]) -> str:
    return ", ".join(f"{key} ({before!r} → {after!r})" for key, (before, after) in changes.items())


def prepare_output_dir(
    unstructured_config: object,
    *,
    checkpoint_dir: Path,
    output_dir: Path,
    last_step: int | None,
    is_rank0: bool,
    write_config_yaml: Callable[[object], None],
) -> None:
    """A fresh run (``last_step`` None) records its config; a resumed one checks it (every
    rank, so every rank stops) and drops the metric rows after ``last_step`` (rank 0).
    ``write_config_yaml`` writes ``OUTPUT_DIR/config.yaml`` as fairseq2 does."""
    record = checkpoint_dir / RUN_CONFIG
    new = flatten(json.loads(json.dumps(unstructured_config, default=str)))
    if last_step is None:
        if is_rank0:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(record, json.dumps(unstructured_config, default=str, indent=1) + "\n")
        return
    if not record.is_file():
        log.warning(
            "{} holds a checkpoint (step {}) but no {}: the config it was started with is unknown and "
            "is not compared with this one.",
            checkpoint_dir,
            last_step,
            RUN_CONFIG,
        )
    else:
        old_tree = json.loads(record.read_text(encoding="utf-8"))
        changes = config_changes(flatten(old_tree), new)
        refused = {k: v for k, v in changes.items() if not is_harmless(k)}
        if refused:
            if is_rank0:  # fairseq2 wrote this run's config.yaml before the check: the folder's goes back
                write_config_yaml(old_tree)
            raise ConfigError(
                f"{output_dir} holds a checkpoint (step {last_step}) of another configuration: {_describe(refused)} "
                "would change what is trained; resume with the values it started with, or give a new OUTPUT_DIR"
            )
        if changes:
            log.info("Resuming from step {} with changed keys: {}.", last_step, _describe(changes))
    if is_rank0:
        trim_metric_rows(output_dir / "metrics", last_step)


def trim_metric_rows(metrics_dir: Path, last_step: int) -> int:
    """Drops the rows of steps after ``last_step`` from every ``*.jsonl`` there (the
    resumed run writes them again); returns how many rows went."""
    dropped = 0
    for path in sorted(metrics_dir.glob("*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if _keep(line, last_step)]
        if len(kept) != len(lines):
            dropped += len(lines) - len(kept)
            _write_atomic(path, "".join(kept))
    if dropped:
        log.info("Dropped {} metric rows of steps after {}, which this run takes again.", dropped, last_step)
    return dropped


def _keep(line: str, last_step: int) -> bool:
    try:
        row: Any = json.loads(line)
    except json.JSONDecodeError:
        return False  # a line cut by the kill
    step = row.get("Step") if isinstance(row, dict) else None
    return not isinstance(step, int) or step <= last_step


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
