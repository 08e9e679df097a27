"""``make study``: the paper's Table 1 and its Figure 1 idea at tiny scale, on CPU, with seeds.

Every arm trains the shipped tiny model from a tiny preset under one budget (``--steps``
steps of 16 prompts x 8 rollouts, lr 1e-4, β 0.1 / KL 0.001; offline DPO's preset: lr 1e-5,
chosen on validation for it alone, and at 1e-4 too at the s = ∞ end of the sweep) once per seed (the training
seed and the evaluation's sampling seed both change with it), and each final checkpoint
is evaluated on the 300 test problems with N samples (temperature 0.6, top-p 0.9). It
writes, under OUT_DIR:

- ``table.md``: per method, accuracy as the mean over seeds ± the standard error across
  seeds, beside the mean within-seed N-sample standard error (the one Table 1 uses);
- the same against the sync interval s ∈ {1, 2, 4, 10, 20, ∞} (``accuracy_vs_s.png``),
  with the generator's version lag at each s;
- the offline study: offline DPO's validation accuracy over its checkpoints and learning
  rates (chosen on the 200 validation problems only), and its chosen / rejected log-probs
  against online DPO's;
- ``results.json`` (every seed of every arm) and the curves (reward, length, entropy;
  a band of ± one s.e. across seeds).

    python -m fs2_semionline.tools.study [OUT_DIR] [--seeds 3] [--steps 60] [--num-samples 8] [--quick]

``--quick`` (``make study-quick``): one seed, the five methods, N = 16: the one-seed table.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fs2_semionline.core.metrics import as_float
from fs2_semionline.core.paths import TINY_MATH_DATA_DIR
from fs2_semionline.runs.checkpoints import checkpoint_model_dir, checkpoint_steps
from fs2_semionline.tools.demo import _cli, _result, checkpoint_overrides
from fs2_semionline.tools.plot import plot_runs, read_series

BASE_SEED = 2  # the presets' common.seed: seed k of the study trains with BASE_SEED + k


@dataclass(frozen=True)
class Arm:
    """One training configuration: a preset and its overrides."""

    label: str
    preset: str
    overrides: tuple[str, ...] = ()

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.label.lower()).strip("_")


OFFLINE = Arm("Offline DPO", "tiny_offline_dpo")  # its preset's lr was chosen on validation (offline_study)
#: Offline DPO at the lr every other arm uses: the s = ∞ end of the sweep (one budget for every s).
OFFLINE_SHARED_LR = Arm("Offline DPO (lr 0.0001)", "tiny_offline_dpo", ("optimizer.config.lr=0.0001",))
ONLINE = Arm("Online DPO", "tiny_online_dpo")


def semi_online(s: int) -> Arm:
    if s == 4:
        return Arm("Semi-online DPO (s = 4)", "tiny_semi_online_dpo")
    return Arm(f"Semi-online DPO (s = {s})", "tiny_semi_online_dpo", (f"generator.sync_every_n_steps={s}",))


METHODS: list[Arm] = [OFFLINE, semi_online(10), semi_online(4), ONLINE, Arm("GRPO", "tiny_grpo")]
#: s of the sweep (None = ∞: the seed model's rollouts) and its arm; 1, 4, 10 and ∞ are methods above.
SWEEP: dict[int | None, Arm] = {1: ONLINE, 2: semi_online(2), 4: semi_online(4), 10: semi_online(10)}
SWEEP.update({20: semi_online(20), None: OFFLINE_SHARED_LR})
OFFLINE_LRS = (1e-4, 3e-5)  # tried beside the offline preset's own lr, chosen on validation


@dataclass
class Study:
    out: Path
    seeds: int
    steps: int
    num_samples: int
    backend: str
    methods: Sequence[Arm] = tuple(METHODS)
    sweep: Mapping[int | None, Arm] = field(default_factory=lambda: dict(SWEEP))  # s → its arm
    offline_lrs: Sequence[float] = OFFLINE_LRS
    kept: bool = False  # runs and evaluations of an earlier invocation reused
    runs: dict[str, dict[str, object]] = field(default_factory=dict)  # key: arm slug / seed

    # ------------------------------------------------------------------ running

    def train(self, arm: Arm, seed: int) -> Path:
        """Trains ``arm`` with seed ``seed`` once; later calls reuse the run."""
        run = self.out / "runs" / arm.slug / f"seed_{seed}"
        if not (run / "train" / "checkpoints").exists():
            t0 = time.perf_counter()
            _cli(
                "lm",
                "preference_finetune",
                str(run / "train"),
                "--preset",
                arm.preset,
                "--config",
                f"generator.backend={self.backend}",
                f"regime.num_steps={self.steps}",
                f"regime.checkpoint_every_n_steps={_checkpoint_interval(self.steps, arm)}",
                f"common.seed={BASE_SEED + seed}",
                *arm.overrides,
            )
            (run / "train_minutes.txt").write_text(f"{(time.perf_counter() - t0) / 60:.3f}\n")
        return run

    def evaluate(self, run: Path | None, seed: int, *, step: int | None = None, split: str = "test") -> dict:
        """Accuracy of ``run``'s checkpoint at ``step`` (default: its last; no run: the
        seed model) on the test or validation problems, sampled with seed ``seed``."""
        if run is None:
            out, overrides = self.out / "runs" / "seed_model" / f"seed_{seed}" / f"eval_{split}", []
        else:
            steps = checkpoint_steps(run / "train")
            step = steps[-1] if step is None else step
            out = run / f"eval_{split}_step_{step}"
            overrides = checkpoint_overrides(checkpoint_model_dir(run / "train", step))
        if not (out / "results.json").exists():
            _cli(
                "lm",
                "evaluate",
                str(out),
                "--preset",
                "eval_tiny_math",
                "--config",
                f"sampling.num_samples={self.num_samples}",
                f"dataset.paths=[{TINY_MATH_DATA_DIR / f'{split}.jsonl'}]",
                f"common.seed={seed}",
                *overrides,
            )
        return _result(out)

    def arm_seeds(self, arm: Arm, *, step: int | None = None) -> list[dict[str, object]]:
        """Every seed of ``arm``: test accuracy (± its N-sample s.e.) of the checkpoint at
        ``step`` (default: the last) and training summaries."""
        rows = []
        for seed in range(self.seeds):
            run = self.train(arm, seed)
            result = self.evaluate(run, seed, step=step)
            row = {
                "seed": seed,
                "accuracy": result["accuracy"],
                "accuracy_stderr": result["accuracy_stderr"],
                "train_minutes": float((run / "train_minutes.txt").read_text()),
                "run": str(run.relative_to(self.out)),
                **training_summary(run / "train"),
            }
            self.runs[f"{arm.slug}/{seed}"] = {"arm": arm.label, **row}
            rows.append(row)
        return rows


def preset_lr(arm: Arm) -> float:
    """The learning rate ``arm``'s preset sets."""
    import yaml

    from fs2_semionline.config.presets import get_preset

    config = yaml.safe_load(get_preset(arm.preset, "preference_finetune").path.read_text())
    return float(config["optimizer"]["config"]["lr"])


def _checkpoint_interval(steps: int, arm: Arm) -> int:
    """Every 20 steps (the offline study reads them), on the arm's sync boundaries."""
    s = next((int(o.split("=")[1]) for o in arm.overrides if o.startswith("generator.sync_every_n_steps=")), 1)
    interval = math.lcm(min(20, steps), s)
    return interval if steps % interval == 0 else steps


def training_summary(train_dir: Path) -> dict[str, float]:
    """Means over the last quarter of training of what the run logged, and the first
    quarter's chosen / rejected log-probs (how far the pairs' likelihoods moved)."""
    out: dict[str, float] = {}
    metrics = {
        "reward": "Reward",
        "rollout_length": "Rollout Length",
        "entropy": "Rollout Entropy",
        "version_lag": "Generator Version Lag",
        "mismatch": "Rollout |Δ log-prob| (mean)",
        "chosen_logp": "Chosen Log-prob",
        "rejected_logp": "Rejected Log-prob",
    }
    for key, metric in metrics.items():
        _, values = read_series(train_dir, metric)
        values = [v for v in values if math.isfinite(v)]
        if values:
            quarter = max(1, len(values) // 4)
            out[key] = statistics.mean(values[-quarter:])
            if key in ("chosen_logp", "rejected_logp"):
                out[f"{key}_start"] = statistics.mean(values[:quarter])
    return out


def summarise(rows: Sequence[dict[str, object]]) -> dict[str, float]:
    """Mean over seeds, s.e. across seeds, and the mean within-seed (N-sample) s.e."""
    accs = [as_float(r["accuracy"]) for r in rows]
    across = statistics.stdev(accs) / math.sqrt(len(accs)) if len(accs) > 1 else math.nan
    within = statistics.mean(as_float(r["accuracy_stderr"]) for r in rows)
    out = {"accuracy": statistics.mean(accs), "stderr_across_seeds": across, "stderr_within_seed": within}
    for key in ("train_minutes", "version_lag", "mismatch", "reward", "rollout_length", "entropy"):
        values = [as_float(r[key]) for r in rows if key in r]
        if values:
            out[key] = statistics.mean(values)
    return out


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f}"


# ---------------------------------------------------------------------- the study


def run_study(study: Study, *, quick: bool) -> dict[str, object]:
    seed_model = [study.evaluate(None, seed) for seed in range(study.seeds)]
    seed_rows = [
        {"seed": k, "accuracy": r["accuracy"], "accuracy_stderr": r["accuracy_stderr"]}
        for k, r in enumerate(seed_model)
    ]
    methods = {arm.label: study.arm_seeds(arm) for arm in study.methods}
    result: dict[str, object] = {
        "seed_model": {"seeds": seed_rows, **summarise(seed_rows)},
        "methods": {label: {"seeds": rows, **summarise(rows)} for label, rows in methods.items()},
    }
    if quick:
        return result
    sweep = {("inf" if s is None else str(s)): {"seeds": study.arm_seeds(arm)} for s, arm in study.sweep.items()}
    for entry in sweep.values():
        entry.update(summarise(entry["seeds"]))  # type: ignore[arg-type]
    result["sync_sweep"] = sweep
    result["offline"] = offline_study(study)
    return result


def offline_study(study: Study) -> dict[str, object]:
    """Why offline DPO falls below the seed here, and whether a choice the paper leaves
    open fixes it: its validation accuracy after 20, 40, ... steps at each learning rate
    (seed 0; the validation split only), the best of them trained with every seed and
    scored on test, and the log-probs of its pairs against online DPO's."""
    grid: dict[str, dict[str, float]] = {}
    candidates = [(preset_lr(OFFLINE), OFFLINE)] + [
        (lr, Arm(f"Offline DPO (lr {lr:g})", "tiny_offline_dpo", (f"optimizer.config.lr={lr:g}",)))
        for lr in study.offline_lrs
    ]
    best: tuple[float, float, int, Arm] | None = None
    for lr, arm in candidates:
        run = study.train(arm, 0)
        grid[f"{lr:g}"] = {}
        for step in checkpoint_steps(run / "train"):
            acc = float(study.evaluate(run, 0, step=step, split="valid")["accuracy"])
            grid[f"{lr:g}"][str(step)] = acc
            if best is None or acc > best[0]:
                best = (acc, lr, step, arm)
    assert best is not None
    _, lr, step, arm = best
    # The learning rate is constant: n steps of training are the first n steps of the run.
    tuned_rows = study.arm_seeds(arm, step=step)
    seed_valid = float(study.evaluate(None, 0, split="valid")["accuracy"])
    logprobs = {a.label: training_summary(study.train(a, 0) / "train") for a in (OFFLINE_SHARED_LR, OFFLINE, ONLINE)}
    return {
        "validation_grid": grid,
        "seed_model_valid": seed_valid,
        "chosen": {"lr": lr, "steps": step, "seeds": tuned_rows, **summarise(tuned_rows)},
        "logprobs": logprobs,
    }


# ---------------------------------------------------------------------- writing


def write_outputs(study: Study, result: dict[str, object], minutes: float) -> str:
    out = study.out
    seed = result["seed_model"]
    lines = [
        f"Tiny math, 300 test problems, N = {study.num_samples} samples per problem (T 0.6, top-p 0.9); "
        f"{study.steps} steps of 16 prompts x 8 rollouts; {study.seeds} seed(s) per arm (training and sampling "
        f"seed both varied); generator backend {study.backend}.",
        "",
        "| method | accuracy (%) | ± s.e. across seeds | ± s.e. within seed (N samples) | vs seed | train min |",
        "|---|---|---|---|---|---|",
        _row("Seed (tiny_math_sft)", seed, None),  # type: ignore[arg-type]
    ]
    for label, entry in result["methods"].items():  # type: ignore[attr-defined]
        lines.append(_row(label, entry, seed))  # type: ignore[arg-type]
    if "sync_sweep" in result:
        lines += [
            "",
            "Accuracy against the sync interval s (∞: offline, the seed model's rollouts):",
            "",
            "| s | accuracy (%) | ± s.e. across seeds | ± s.e. within seed | generator version lag (steps) "
            "| rollout/policy mismatch, mean abs. Δ log-prob per token |",
            "|---|---|---|---|---|---|",
        ]
        for s, entry in result["sync_sweep"].items():  # type: ignore[attr-defined]
            lag, mismatch = entry.get("version_lag", math.nan), entry.get("mismatch", math.nan)
            lines.append(
                f"| {'∞' if s == 'inf' else s} | {_pct(entry['accuracy'])} | {_pct(entry['stderr_across_seeds'])} "
                f"| {_pct(entry['stderr_within_seed'])} | {lag:.2f} | {mismatch:.3f} |"
            )
        _plot_sweep(result["sync_sweep"], seed, out / "accuracy_vs_s.png")  # type: ignore[arg-type]
    if "offline" in result:
        lines += _offline_lines(result["offline"], seed)  # type: ignore[arg-type]
    lines += [
        "",
        f"Study took {minutes:.1f} minutes" + (" (reusing the runs already in OUT_DIR)." if study.kept else "."),
    ]
    table = "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    payload = {
        "backend": study.backend,
        "steps": study.steps,
        "num_samples": study.num_samples,
        "seeds": study.seeds,
        "minutes": minutes,
        "runs_reused": study.kept,
        **result,
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    runs = [
        (arm.label, out / "runs" / arm.slug / f"seed_{k}" / "train")
        for arm in study.methods
        for k in range(study.seeds)
    ]
    plot_runs([d for _, d in runs], out / "plots", labels=[label for label, _ in runs], smooth_window=5)
    return table


def _row(label: str, entry: dict[str, float], seed: dict[str, float] | None) -> str:
    delta = "" if seed is None else f"{100 * (entry['accuracy'] - seed['accuracy']):+.1f}"
    minutes = f"{entry['train_minutes']:.1f}" if "train_minutes" in entry else ""
    return (
        f"| {label} | {_pct(entry['accuracy'])} | {_pct(entry['stderr_across_seeds'])} "
        f"| {_pct(entry['stderr_within_seed'])} | {delta} | {minutes} |"
    )


def _offline_lines(offline: dict[str, object], seed: dict[str, float]) -> list[str]:
    grid = offline["validation_grid"]
    steps = sorted({int(s) for row in grid.values() for s in row})  # type: ignore[attr-defined]
    lines = [
        "",
        f"Offline DPO on the 200 validation problems (seed 0; the seed model: {_pct(offline['seed_model_valid'])}), "  # type: ignore[arg-type]
        "accuracy (%) after each number of steps:",
        "",
        "| lr | " + " | ".join(f"{s} steps" for s in steps) + " |",
        "|---|" + "---|" * len(steps),
    ]
    for lr, row in grid.items():  # type: ignore[attr-defined]
        lines.append(f"| {lr} | " + " | ".join(_pct(row.get(str(s), math.nan)) for s in steps) + " |")
    chosen = offline["chosen"]
    lines += [
        "",
        f"Chosen on validation: lr {chosen['lr']:g}, {chosen['steps']} steps; on test with every seed: "  # type: ignore[index]
        f"{_pct(chosen['accuracy'])} ± {_pct(chosen['stderr_across_seeds'])} across seeds "  # type: ignore[index]
        f"({100 * (chosen['accuracy'] - seed['accuracy']):+.1f} vs seed).",  # type: ignore[index]
    ]
    lp = offline["logprobs"]
    lines += ["", "Policy log-probs of the trained pairs (seed 0; first and last quarter of training):", ""]
    lines += ["| run | chosen: start → end | rejected: start → end |", "|---|---|---|"]
    for name, r in lp.items():  # type: ignore[attr-defined]
        if "chosen_logp" in r:
            lines.append(
                f"| {name} | {r['chosen_logp_start']:.2f} → {r['chosen_logp']:.2f} "
                f"| {r['rejected_logp_start']:.2f} → {r['rejected_logp']:.2f} |"
            )
    return lines


def _plot_sweep(sweep: dict[str, dict[str, float]], seed: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(sweep)
    xs = list(range(len(labels)))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(
        xs,
        [100 * sweep[k]["accuracy"] for k in labels],
        yerr=[
            100 * (sweep[k]["stderr_across_seeds"] if not math.isnan(sweep[k]["stderr_across_seeds"]) else 0)
            for k in labels
        ],
        marker="o",
        capsize=4,
        label="semi-online DPO (mean ± s.e. across seeds)",
    )
    ax.axhline(100 * seed["accuracy"], color="grey", linestyle="--", label="seed model")
    ax.set_xticks(xs, ["∞" if k == "inf" else k for k in labels])
    ax.set_xlabel("sync interval s (steps between weight syncs; ∞ = offline)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Tiny math: accuracy against s under one budget")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, nargs="?", default=Path("study_out"))
    parser.add_argument("--backend", choices=("local", "vllm"), default="local", help="rollout generator")
    parser.add_argument("--seeds", type=int, help="seeds per arm (default 3; --quick: 1)")
    parser.add_argument("--num-samples", type=int, help="samples per test problem (default 8; --quick: 16)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--quick", action="store_true", help="the five methods only: the one-seed table")
    parser.add_argument("--methods", help="comma-separated slugs of the methods to run (default: all five)")
    parser.add_argument("--sweep", default="1,2,4,10,20,inf", help="the values of s against which accuracy is shown")
    parser.add_argument("--offline-lrs", default="1e-4,3e-5", help="offline learning rates tried beside the preset's")
    parser.add_argument("--keep", action="store_true", help="reuse the runs and evaluations already in OUT_DIR")
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 3)
    num_samples = args.num_samples or (16 if args.quick else 8)
    wanted = set(args.methods.split(",")) if args.methods else None
    methods = [a for a in METHODS if wanted is None or a.slug in wanted]
    values = [None if v == "inf" else int(v) for v in args.sweep.split(",")]
    sweep = {s: SWEEP[s] if s in SWEEP else semi_online(s) for s in values}  # type: ignore[arg-type]
    out: Path = args.out_dir
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    start = time.perf_counter()
    lrs = [float(v) for v in args.offline_lrs.split(",") if v]
    study = Study(
        out, seeds, args.steps, num_samples, args.backend, methods=methods, sweep=sweep, offline_lrs=lrs, kept=args.keep
    )
    result = run_study(study, quick=args.quick)
    table = write_outputs(study, result, (time.perf_counter() - start) / 60)
    print()
    print(table, end="")
    print(f"Table, results and curves: {out}")


if __name__ == "__main__":
    main()
