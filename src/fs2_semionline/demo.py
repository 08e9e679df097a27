"""``make demo``: semi-online DPO on the tiny model, with held-out accuracy before and after.

1. ``lm evaluate`` the seed model (``tiny_math_sft``) on the 300 test problems;
2. ``lm preference_finetune`` with the ``tiny_semi_online_dpo`` preset;
3. ``lm evaluate`` the last checkpoint the same way; print both, with the difference.

Every step is the package's own CLI, so the demo is also a walk through it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fs2_semionline.presets import get_preset


def _cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "fs2_semionline.cli", *args, "--no-rich"]
    print("$ fs2-semionline " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def _result(out_dir: Path) -> dict[str, float]:
    return json.loads((out_dir / "results.json").read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("demo_out"))
    parser.add_argument("--preset", default="tiny_semi_online_dpo")
    parser.add_argument("--eval-preset", default="eval_tiny_math")
    args = parser.parse_args(argv)
    out: Path = args.out_dir
    if out.exists():
        shutil.rmtree(out)
    get_preset(args.preset, "preference_finetune")  # fail fast on a typo
    start = time.perf_counter()

    _cli("lm", "evaluate", str(out / "eval_before"), "--preset", args.eval_preset)
    _cli("lm", "preference_finetune", str(out / "train"), "--preset", args.preset)
    steps = sorted(int(p.name.removeprefix("step_")) for p in (out / "train" / "checkpoints").glob("step_*"))
    last = out / "train" / "checkpoints" / f"step_{steps[-1]}" / "model"
    _cli(
        "lm", "evaluate", str(out / "eval_after"), "--preset", args.eval_preset,
        "--config", "model.name=null", f"model.path={last}", "model.family=llama", "model.arch=tiny_math",
    )  # fmt: skip

    before, after = _result(out / "eval_before"), _result(out / "eval_after")
    minutes = (time.perf_counter() - start) / 60
    n = int(before["num_samples"])
    print()
    print(f"Held-out accuracy on {int(before['num_problems'])} test problems, mean ± s.e. over {n} sample sets")
    print(f"(temperature {before['temperature']}, top-p {before['top_p']}):")
    rows = [
        ("seed model (tiny_math_sft)", before["accuracy"], before["accuracy_stderr"]),
        (f"after {args.preset} ({steps[-1]} steps)", after["accuracy"], after["accuracy_stderr"]),
    ]
    width = max(len(label) for label, _, _ in rows)
    for label, mean, stderr in rows:
        print(f"  {label:<{width}}  {100 * mean:5.1f} ± {100 * stderr:.1f}")
    print(f"  {'change':<{width}}  {100 * (after['accuracy'] - before['accuracy']):+5.1f} points")
    print(f"Demo took {minutes:.1f} minutes. Training metrics: {out / 'train' / 'metrics' / 'train.jsonl'}")


if __name__ == "__main__":
    main()
