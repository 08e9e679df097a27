"""``make demo``: semi-online DPO on the tiny model, with held-out accuracy before and after.

1. ``lm evaluate`` the seed model (``tiny_math_sft``) on the 300 test problems;
2. ``lm preference_finetune`` with the ``tiny_semi_online_dpo`` preset;
3. ``lm evaluate`` the last checkpoint the same way; print both, with the difference.

``make demo-mixed`` (``--preset tiny_mixed_online_dpo``) trains on math and tiny chat
prompts in one batch (§3.3) and evaluates the seed (``tiny_mixed_sft``) and the
checkpoint that validation selected on both test sets: math accuracy, and for chat the
reward model's reward next to the synthetic preference it was trained from
(:func:`fs2_semionline.data.chat_task.quality`), which no training run ever sees.

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

from fs2_semionline.config.presets import get_preset
from fs2_semionline.runs.checkpoints import best_scored_step, checkpoint_model_dir, checkpoint_steps


def _cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "fs2_semionline.cli", *args, "--no-rich"]
    print("$ fs2-semionline " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def checkpoint_overrides(model_dir: Path) -> list[str]:
    """``--config`` values that evaluate a tiny checkpoint instead of a card."""
    return ["model.name=null", f"model.path={model_dir}", "model.family=llama", "model.arch=tiny_math"]


def _result(out_dir: Path) -> dict[str, float]:
    return json.loads((out_dir / "results.json").read_text())


def _chat_quality(out_dir: Path) -> dict[str, float]:
    """The hidden preference of the tiny chat task over an evaluation's answers."""
    from fs2_semionline.core.paths import TINY_CHAT_DATA_DIR
    from fs2_semionline.data.chat_task import meets_constraints, quality, read_prompts

    prompts = {p.prompt: p for p in read_prompts(TINY_CHAT_DATA_DIR / "test.jsonl")}
    rows = [json.loads(line) for line in (out_dir / "generations.jsonl").read_text().splitlines()]
    answers = [(prompts[r["prompt"]], r["response"]) for r in rows]
    return {
        "quality": sum(quality(p, a) for p, a in answers) / len(answers),
        "both_met": sum(meets_constraints(p, a) for p, a in answers) / len(answers),
    }


def mixed_demo(out: Path, preset: str, start: float) -> None:
    """Math + chat in one run: both tasks evaluated before and after."""
    seed_model = ["--config", "model.name=tiny_mixed_sft"]
    _cli("lm", "evaluate", str(out / "math_before"), "--preset", "eval_tiny_math", *seed_model)
    _cli("lm", "evaluate", str(out / "chat_before"), "--preset", "eval_tiny_chat")
    _cli("lm", "preference_finetune", str(out / "train"), "--preset", preset)
    step = best_scored_step(out / "train") or checkpoint_steps(out / "train")[-1]
    model = ["--config", *checkpoint_overrides(checkpoint_model_dir(out / "train", step))]
    _cli("lm", "evaluate", str(out / "math_after"), "--preset", "eval_tiny_math", *model)
    _cli("lm", "evaluate", str(out / "chat_after"), "--preset", "eval_tiny_chat", *model)

    rows = []
    for label, when in (("seed model (tiny_mixed_sft)", "before"), (f"after {preset} (best: step {step})", "after")):
        m, c = _result(out / f"math_{when}"), _result(out / f"chat_{when}")
        rows.append(
            (
                label,
                m["accuracy"],
                m["accuracy_stderr"],
                c["mean_reward"],
                c["reward_stderr"],
                _chat_quality(out / f"chat_{when}"),
            )
        )
    width = max(len(r[0]) for r in rows)
    print()
    print("Held-out test sets: 300 math problems (accuracy, N=16) and 300 chat prompts (N=4), T 0.6, top-p 0.9.")
    print(
        "Chat: the tiny reward model's reward, and the synthetic preference its pairs came from (0-2; RL never sees it)."
    )
    print("'both met': answers that meet both constraints their prompt states.")
    print(f"  {'':<{width}}  {'math acc. %':>12}  {'chat reward':>14}  {'chat quality':>12}  {'both met':>9}")
    for label, acc, acc_se, reward, reward_se, q in rows:
        print(
            f"  {label:<{width}}  {100 * acc:6.1f} ± {100 * acc_se:3.1f}  {reward:7.3f} ± {reward_se:.3f}  "
            f"{q['quality']:12.2f}  {100 * q['both_met']:8.1f}%"
        )
    minutes = (time.perf_counter() - start) / 60
    summary = [
        {
            "model": label,
            "math_accuracy": acc,
            "math_accuracy_stderr": acc_se,
            "chat_reward": reward,
            "chat_reward_stderr": reward_se,
            "chat_quality": q["quality"],
            "chat_both_met": q["both_met"],
        }
        for label, acc, acc_se, reward, reward_se, q in rows
    ]
    (out / "summary.json").write_text(
        json.dumps({"rows": summary, "best_step": step, "minutes": minutes}, indent=2) + "\n"
    )
    print(f"Demo took {minutes:.1f} minutes. Metrics: {out / 'train' / 'metrics'} (train.jsonl, valid.jsonl)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("demo_out"))
    parser.add_argument("--preset", default="tiny_semi_online_dpo")
    parser.add_argument("--eval-preset", default="eval_tiny_math")
    args = parser.parse_args(argv)
    out: Path = args.out_dir
    if out.exists():
        shutil.rmtree(out)
    preset = get_preset(args.preset, "preference_finetune")  # fail fast on a typo
    start = time.perf_counter()
    if "chat_paths" in preset.path.read_text():
        mixed_demo(out, args.preset, start)
        return

    _cli("lm", "evaluate", str(out / "eval_before"), "--preset", args.eval_preset)
    _cli("lm", "preference_finetune", str(out / "train"), "--preset", args.preset)
    steps = checkpoint_steps(out / "train")
    last = checkpoint_model_dir(out / "train", steps[-1])
    _cli(
        "lm", "evaluate", str(out / "eval_after"), "--preset", args.eval_preset, "--config", *checkpoint_overrides(last)
    )

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
