"""Several eval sets in one ``lm evaluate`` run: per-set results equal single-file runs.

Each set is sampled from a freshly seeded RNG, so a set's numbers do not depend on
which sets run before it; the top-level keys pool all problems (as one file would).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fs2_semionline.core.paths import TINY_MATH_DATA_DIR
from fs2_semionline.data.encoding import TextEncoder
from fs2_semionline.eval.sets import drop_long_prompts, load_eval_sets, set_names

from helpers import run_main

LINES = (TINY_MATH_DATA_DIR / "test.jsonl").read_text().splitlines()


@pytest.fixture
def one_thread():
    """One intra-op thread: on 2 cores shared with other jobs, 2 OpenMP threads make this
    tiny model's sampler ~40x slower (spinning threads wait for each other)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def two_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sets")
    return _write(root / "alpha.jsonl", LINES[:2]), _write(root / "beta.jsonl", LINES[2:5])


def test_each_set_equals_its_file_alone(tiny_model, tiny_tokenizer, two_files, one_thread) -> None:
    from fs2_semionline.eval.math_eval import pool_math_results
    from fs2_semionline.eval.sets import evaluate_math_sets
    from fs2_semionline.generation.local import PolicySampler
    from fs2_semionline.generation.protocol import SamplingConfig
    from fs2_semionline.rewards.math_pool import MathVerifyPool

    encoder = tiny_tokenizer.create_raw_encoder()

    def run(paths: list[Path]):
        sets = load_eval_sets(paths, task="math", encoder=TextEncoder(lambda t: encoder(t).tolist(), ()))
        return evaluate_math_sets(
            PolicySampler(tiny_model, tiny_tokenizer, batch_size=8),
            sets,
            pool,
            seed=3,
            num_samples=3,
            sampling=SamplingConfig(0.6, 0.9, 16),
        )

    a, b = two_files
    with MathVerifyPool(num_workers=1) as pool:
        both = run([a, b])
        alone = run([a]) + run([b])
    for together, single in zip(both, alone):
        assert together.summary() == single.summary()
        assert [r["response"] for r in together.records] == [r["response"] for r in single.records]
    assert both[0].records != both[1].records  # two different sets, really
    pooled = pool_math_results(both)
    assert pooled.num_problems == 5 and pooled.num_samples == 3
    for k in range(3):  # set k of the pooled result weighs problems, not files
        correct = sum(r.accuracy.per_set[k] * r.num_problems for r in both)
        assert pooled.accuracy.per_set[k] == pytest.approx(correct / 5)
    assert pooled.mean_response_len == pytest.approx(sum(r.mean_response_len * r.num_problems for r in both) / 5)


def test_set_names_are_unique() -> None:
    assert set_names([Path("a/x.jsonl"), Path("b/y.jsonl")]) == ["x", "y"]
    assert set_names([Path("math500/test.jsonl"), Path("amc23/test.jsonl")]) == ["math500_test", "amc23_test"]
    assert set_names([Path("d/t.jsonl"), Path("e.jsonl"), Path("d/t.jsonl")]) == ["d_t_1", "e", "d_t_3"]


def test_long_prompts_are_counted_per_set(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.jsonl", LINES[:2] + [json.dumps({"prompt": "1 plus 1? " * 50, "answer": "2"})])
    (s,) = load_eval_sets([path], task="math", encoder=TextEncoder(lambda t: list(t.encode()), ()))
    drop_long_prompts(s, max_prompt_len=max(len(e.token_ids) for e in s.examples[:2]))
    assert len(s.examples) == 2
    assert s.report.as_dict() == {"num_read": 3, "num_skipped": 1, "skipped": {"prompt_too_long": 1}}


def test_cli_reports_each_set_and_the_pool(
    tmp_path: Path, two_files, one_thread, capfd: pytest.CaptureFixture[str]
) -> None:
    """b, a, b: the last b ran after another set yet equals the first (= b alone)."""
    a, b = two_files
    out_dir = tmp_path / "eval"
    cmd = [
        "lm",
        "evaluate",
        str(out_dir),
        "--preset",
        "eval_tiny_math",
        "--no-rich",
        "--config",
        "sampling.num_samples=2",
        "sampling.max_gen_len=12",
        "reward.math.num_workers=1",
        f"dataset.paths=[{b},{a},{b}]",
        "sampling.max_batch_size=8",
    ]
    out = run_main(cmd, capfd)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((out_dir / "results.json").read_text())
    sets = result["sets"]
    names = [s["name"] for s in sets]
    assert names[1] == "alpha" and names[0].endswith("_beta_1") and names[2].endswith("_beta_3")
    assert [s["data"] for s in sets] == [str(b), str(a), str(b)]
    assert [s["num_problems"] for s in sets] == [3, 2, 3]
    first, last = ({k: v for k, v in s.items() if k != "name"} for s in (sets[0], sets[2]))
    assert first == last
    # The single-file keys describe the pool.
    assert result["num_problems"] == 8 and result["num_samples"] == 2 and result["task"] == "math"
    assert result["prompts"] == {"num_read": 8, "num_skipped": 0, "skipped": {}}
    for k in range(2):
        pooled = sum(s["accuracy_per_sample_set"][k] * s["num_problems"] for s in sets) / 8
        assert result["accuracy_per_sample_set"][k] == pytest.approx(pooled)
    assert len((out_dir / "generations.jsonl").read_text().splitlines()) == 16
    # fairseq2's metric files hold the pool and, with several sets, each set.
    pooled_row = json.loads((out_dir / "metrics" / "eval" / "math.jsonl").read_text().splitlines()[-1])
    assert pooled_row["Accuracy"] == pytest.approx(result["accuracy"])  # fairseq2 names "accuracy" "Accuracy"
    for s in sets:
        row = json.loads((out_dir / "metrics" / "eval" / "math" / f"{s['name']}.jsonl").read_text().splitlines()[-1])
        assert row["Accuracy"] == pytest.approx(s["accuracy"]) and row["num_failed_rewards"] == s["num_failed_rewards"]
