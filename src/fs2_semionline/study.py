"""``make study``: the paper's Table 1 at tiny scale, on CPU.

Trains the shipped tiny model with offline DPO, semi-online DPO (s = 10 and s = 4),
online DPO and GRPO under one budget (the tiny presets: 80 steps of 16 prompts x 8
rollouts, lr 1e-4, β 0.1 / KL 0.001, seed 2), evaluates each final checkpoint on the 300
test problems with N samples (temperature 0.6, top-p 0.9) and writes a table of mean
accuracy ± s.e. (the form of Table 1), the training curves and ``results.json``.

    python -m fs2_semionline.study [OUT_DIR] [--backend local|vllm] [--num-samples 16]

Hyperparameters come from the presets; the learning rate was chosen on the validation
split for semi-online DPO (see the README) and is shared by every method.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import time
from pathlib import Path

from fs2_semionline.checkpoints import checkpoint_model_dir, checkpoint_steps
from fs2_semionline.demo import _cli, _result, checkpoint_overrides
from fs2_semionline.plot import plot_runs

# (label, preset, extra --config overrides)
METHODS: list[tuple[str, str, list[str]]] = [
    ("Offline DPO", "tiny_offline_dpo", []),
    ("Semi-online DPO (s = 10)", "tiny_semi_online_dpo", ["generator.sync_every_n_steps=10"]),
    ("Semi-online DPO (s = 4)", "tiny_semi_online_dpo", []),
    ("Online DPO", "tiny_online_dpo", []),
    ("GRPO", "tiny_grpo", []),
]


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


def _evaluate(out_dir: Path, num_samples: int, checkpoint: Path | None) -> dict[str, float]:
    overrides = [f"sampling.num_samples={num_samples}"]
    if checkpoint is not None:
        overrides += checkpoint_overrides(checkpoint)
    _cli("lm", "evaluate", str(out_dir), "--preset", "eval_tiny_math", "--config", *overrides)
    return _result(out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("study_out"))
    parser.add_argument(
        "--backend",
        choices=("local", "vllm"),
        default="local",
        help="rollout generator (local: fairseq2's sampler, fastest on a small CPU)",
    )
    parser.add_argument("--num-samples", type=int, default=16)
    parser.add_argument("--steps", type=int, default=80)
    args = parser.parse_args(argv)
    out: Path = args.out_dir
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    rows = [("Seed (tiny_math_sft)", _evaluate(out / "seed_eval", args.num_samples, None), None)]
    for label, preset, overrides in METHODS:
        run = out / _slug(label)
        t0 = time.perf_counter()
        _cli(
            "lm",
            "preference_finetune",
            str(run / "train"),
            "--preset",
            preset,
            "--config",
            f"generator.backend={args.backend}",
            f"regime.num_steps={args.steps}",
            *overrides,
        )
        train_minutes = (time.perf_counter() - t0) / 60
        checkpoint = checkpoint_model_dir(run / "train", checkpoint_steps(run / "train")[-1])
        rows.append((label, _evaluate(run / "eval", args.num_samples, checkpoint), train_minutes))

    seed_acc = rows[0][1]["accuracy"]
    lines = [
        f"Tiny math, 300 test problems, N = {args.num_samples} samples (T 0.6, top-p 0.9), "
        f"{args.steps} steps of 16 prompts x 8 rollouts, generator backend {args.backend}.",
        "",
        "| method | accuracy (%) | vs seed | train min |",
        "|---|---|---|---|",
    ]
    for label, result, minutes in rows:
        delta = "" if minutes is None else f"{100 * (result['accuracy'] - seed_acc):+.1f}"
        took = "" if minutes is None else f"{minutes:.1f}"
        lines.append(
            f"| {label} | {100 * result['accuracy']:.1f} ± {100 * result['accuracy_stderr']:.1f} | {delta} | {took} |"
        )
    total = (time.perf_counter() - start) / 60
    lines += ["", f"Study took {total:.1f} minutes."]
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    (out / "results.json").write_text(
        json.dumps(
            {
                "backend": args.backend,
                "steps": args.steps,
                "num_samples": args.num_samples,
                "minutes": total,
                "rows": [{"method": label, **result, "train_minutes": minutes} for label, result, minutes in rows],
            },
            indent=2,
        )
        + "\n"
    )
    plot_runs(
        [out / _slug(label) / "train" for label, _, _ in METHODS],
        out / "plots",
        labels=[label for label, _, _ in METHODS],
        smooth_window=5,
    )
    print()
    print(table, end="")
    print(f"Table, results and curves: {out}")


if __name__ == "__main__":
    main()
