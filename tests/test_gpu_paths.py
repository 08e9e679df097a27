"""The GPU paths' shared code, on CPU: the weight-sync group's bounded join, GPU
placement on one node, the colocated engine's sleep-mode order.

What differs on a GPU is one line each (PyNccl instead of gloo after the same barrier;
CUDA ids Ray hands out; vLLM's sleep and wake). ``benchmarks/gpu_check.sh`` runs those.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import torch

from fs2_semionline.core.errors import ConfigError
from fs2_semionline.generation.pg_sync import SyncGroup, free_port, store_barrier
from fs2_semionline.generation.protocol import WeightSyncTimeout
from fs2_semionline.glue.ray_cluster import RaySection, check_gpu_placement, check_local_placement, visible_gpus

# --------------------------------------------------------------------------- the join


def test_a_member_that_never_joins_is_a_named_timeout_not_a_hang() -> None:
    # Before NCCL's init (whose warm-up all-reduce would wait forever): the store barrier.
    start = time.monotonic()
    with pytest.raises(WeightSyncTimeout, match=r"weight-sync group: 1 of 3 members joined within 1.0 s"):
        SyncGroup("127.0.0.1", free_port(), 0, 3, "gloo", timeout_s=1.0)
    assert time.monotonic() - start < 5.0


def test_the_group_forms_when_every_member_comes_and_broadcasts() -> None:
    port, got = free_port(), {}

    def member(rank: int) -> None:
        group = SyncGroup("127.0.0.1", port, rank, 3, "gloo", timeout_s=30.0)
        buffer = torch.arange(6, dtype=torch.float32) if rank == 0 else torch.zeros(6)
        group.broadcast(buffer)()
        got[rank] = buffer.tolist()

    threads = [threading.Thread(target=member, args=(r,)) for r in (1, 2)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the others wait at the barrier for rank 0's store
    member(0)
    for t in threads:
        t.join(timeout=30)
    assert got == {r: [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] for r in range(3)}


def test_store_barrier_counts_arrivals() -> None:
    store = torch.distributed.HashStore()
    store.add("k", 2)  # two members already there
    store_barrier(store, "k", 3, timeout_s=1.0)  # the third completes it at once
    with pytest.raises(WeightSyncTimeout, match="4 of 5 members"):
        store_barrier(store, "k", 5, timeout_s=0.2)


# --------------------------------------------------------------------------- placement


def test_generators_on_the_trainers_gpus_are_refused() -> None:
    # 4 trainer ranks on an 8-GPU node; a local Ray would hand out GPUs from 0 up.
    with pytest.raises(
        ConfigError,
        match=r"ray.gpu_ids: the generators' GPUs \[0, 1, 2, 3, 4, 5, 6, 7\] overlap GPUs \[0, 1, 2, 3\] .*"
        r"e.g. --config 'ray.gpu_ids=\[4,5\]'.*generator.colocate=true",
    ):
        check_local_placement(RaySection(), needed=2, local_world_size=4, num_devices=8, cuda_visible=None)
    with pytest.raises(ConfigError, match=r"overlap GPUs \[3\]"):
        check_local_placement(
            RaySection(gpu_ids=[3, 4]), needed=2, local_world_size=4, num_devices=8, cuda_visible=None
        )
    # Their own GPUs: accepted.
    check_local_placement(RaySection(gpu_ids=[4, 5]), needed=2, local_world_size=4, num_devices=8, cuda_visible=None)
    # The trainer restricted to GPUs 4-7 by CUDA_VISIBLE_DEVICES: generators on 0-3 are fine.
    check_local_placement(
        RaySection(gpu_ids=[0, 1, 2, 3]), needed=4, local_world_size=4, num_devices=4, cuda_visible="4,5,6,7"
    )


def test_too_few_generator_gpus_are_refused_not_waited_for() -> None:
    with pytest.raises(ConfigError, match=r"need 4 GPUs, the local Ray cluster has 2 \(\[6, 7\]\); Ray would wait"):
        check_gpu_placement(trainer_gpus=[0, 1], pool=[6, 7], needed=4)


def test_visible_gpus() -> None:
    assert visible_gpus(2, None) == [0, 1] and visible_gpus(8, "3, 5") == [3, 5]
    with pytest.raises(ConfigError, match="only integer GPU ids"):
        visible_gpus(1, "GPU-1234")


def test_gpu_ids_are_validated() -> None:
    from fs2_semionline.recipes.preference_finetune import PreferenceFinetuneConfig

    def errors(**ray: Any) -> str:
        config = PreferenceFinetuneConfig()
        config.ray = RaySection(**ray)
        return str(config.ray.validate())

    assert "must be distinct GPU ids >= 0, got [1, 1]" in errors(gpu_ids=[1, 1])
    assert "applies to a local cluster" in errors(gpu_ids=[1], address="auto")
    assert "must be null or len(ray.gpu_ids) = 2, got 3" in errors(gpu_ids=[1, 2], num_gpus=3)
    assert errors(gpu_ids=[4, 5]) == str(RaySection().validate())


_RAY_GPU_IDS = """
import json, os, ray
from fs2_semionline.glue.ray_cluster import RayCluster, RaySection
cluster = RayCluster(RaySection(num_cpus=2, gpu_ids=[4, 6]))
cluster.start()
@ray.remote(num_gpus=1, num_cpus=0)
def ids():
    return os.environ.get("CUDA_VISIBLE_DEVICES"), [str(i) for i in ray.get_gpu_ids()]
print(json.dumps({"resources": ray.cluster_resources().get("GPU"), "tasks": ray.get([ids.remote(), ids.remote()]),
                  "driver": os.environ.get("CUDA_VISIBLE_DEVICES")}))
cluster.stop()
"""


def test_a_local_ray_hands_out_only_ray_gpu_ids() -> None:
    """A real local Ray on this CPU machine, told its GPUs are [4, 6]: it counts two and
    hands tasks those ids (Ray does not check that the devices exist), and this
    process's own environment is left as it was."""
    run = subprocess.run(
        [sys.executable, "-c", _RAY_GPU_IDS], capture_output=True, text=True, timeout=180, env=_env_without_cuda_vars()
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["resources"] == 2.0 and got["driver"] is None
    assert {visible for visible, _ in got["tasks"]} <= {"4", "6"}
    assert all(visible == ids[0] for visible, ids in got["tasks"])


def _env_without_cuda_vars() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return {**env, "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1"}


# --------------------------------------------------------------------------- sleep mode


class _RecordingEngine:
    """Stands in for vLLM's engine, whose sleep mode needs CUDA (the mocked boundary:
    ``sleep`` / ``wake_up`` / ``load_weights`` / ``generate``, recorded in order)."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def sleep(self) -> None:
        self.calls.append("sleep")

    def wake_up(self, tags: list[str]) -> None:
        self.calls.append(f"wake {'+'.join(tags)}")

    def load_weights(self, hf_state: dict[str, torch.Tensor]) -> None:
        self.calls.append("load")
        self.sum = sum(float(t.sum(dtype=torch.float64)) for t in hf_state.values())

    def checksum(self) -> float:
        return self.sum

    def reset_prefix_cache(self) -> None:
        pass

    def generate(self, *args: Any) -> list[Any]:
        self.calls.append("generate")
        return []


def test_a_sleeping_colocated_engine_wakes_weights_for_a_sync_and_its_cache_to_generate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fs2_semionline.generation import colocated
    from fs2_semionline.generation.protocol import SamplingConfig

    calls: list[str] = []
    monkeypatch.setattr(colocated, "VLLMEngine", lambda *a, **k: _RecordingEngine(calls))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    gen = colocated.ColocatedVLLMGenerator(
        "dir", to_hf=lambda b: dict(b), max_model_len=64, seed=0, engine_args={"enable_sleep_mode": True}
    )
    sampling = SamplingConfig(1.0, 1.0, 4)
    gen.wait(gen.submit([[1, 2]], 2, sampling, seed=0))  # awake at start: generate, then sleep
    gen.sync({"w": torch.ones(2)}, version=1)  # weights only, PyTorch's cache emptied first
    gen.wait(gen.submit([[1, 2]], 2, sampling, seed=0))  # the KV cache just before generating
    gen.wait(gen.submit([[1, 2]], 2, sampling, seed=0))  # asleep again: both
    assert calls == [
        "generate",
        "sleep",
        "empty_cache",
        "wake weights",
        "load",
        "empty_cache",
        "wake kv_cache",
        "generate",
        "sleep",
        "empty_cache",
        "wake weights+kv_cache",
        "generate",
        "sleep",
    ]
