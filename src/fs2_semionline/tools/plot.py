"""``fs2-semionline plot RUN_DIR [RUN_DIR ...]``: training curves as PNG, one figure per
metric with one line per run, read from fairseq2's metric files
(``RUN_DIR/metrics/train.jsonl``), as in the paper's Figures 2, 3 and 6–10 (reward,
rollout length, entropy over steps).

    fs2-semionline plot runs/offline runs/s10 runs/online --out plots --smooth 5
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

from fs2_semionline.core.errors import UserInputError, check_output_dir, exit_with

DEFAULT_METRICS = ("Reward", "Rollout Length", "Rollout Entropy")


def read_series(run_dir: Path, metric: str, split: str = "train") -> tuple[list[int], list[float]]:
    """(steps, values) of one metric; steps without it are left out, NaN stays NaN (a gap)."""
    path = run_dir / "metrics" / f"{split}.jsonl"
    if not path.is_file():
        raise UserInputError(f"{run_dir}: no fairseq2 metric file {path.relative_to(run_dir)} (is it a run directory?)")
    steps, values = [], []
    by_step: dict[int, float] = {}
    for line_nr, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserInputError(f"{path}:{line_nr}: not JSON ({err.msg})") from None
        if metric in row and "Step" in row:
            by_step[int(row["Step"])] = float(row[metric])  # a resumed run rewrites steps: keep the last
    for step in sorted(by_step):
        steps.append(step)
        values.append(by_step[step])
    return steps, values


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average over the finite values of the last ``window`` steps."""
    if window <= 1:
        return list(values)
    out = []
    for i in range(len(values)):
        recent = [v for v in values[max(0, i - window + 1) : i + 1] if math.isfinite(v)]
        out.append(sum(recent) / len(recent) if recent else math.nan)
    return out


def _across_runs(runs: Sequence[tuple[list[int], list[float]]]) -> tuple[list[int], list[float], list[float]]:
    """Mean and standard error across runs at the steps every run has (one run: itself, 0)."""
    common = sorted(set.intersection(*(set(steps) for steps, _ in runs)))
    by_run = [dict(zip(steps, values)) for steps, values in runs]
    mean, stderr = [], []
    for step in common:
        xs = [r[step] for r in by_run]
        m = sum(xs) / len(xs)
        var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0
        mean.append(m)
        stderr.append(math.sqrt(var / len(xs)))
    return common, mean, stderr


def plot_runs(
    run_dirs: Sequence[Path],
    out_dir: Path,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    labels: Sequence[str] | None = None,
    smooth_window: int = 1,
) -> list[Path]:
    """Writes ``out_dir/<metric>.png`` for every metric some run has; returns the files.
    Runs that share a label (one method's seeds) are drawn as their mean over the steps
    all of them have, with a band of ± one standard error across them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(labels) if labels else [d.name for d in run_dirs]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for metric in metrics:
        groups: dict[str, list[tuple[list[int], list[float]]]] = {}
        for label, d in zip(labels, run_dirs):
            steps, values = read_series(d, metric)
            if steps:
                groups.setdefault(label, []).append((steps, smooth(values, smooth_window)))
        if not groups:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, runs in groups.items():
            steps, mean, stderr = _across_runs(runs)
            (line,) = ax.plot(steps, mean, label=label if len(runs) == 1 else f"{label} ({len(runs)} seeds)")
            if len(runs) > 1:
                low = [m - e for m, e in zip(mean, stderr)]
                high = [m + e for m, e in zip(mean, stderr)]
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.set_title(metric + (f" (moving average, {smooth_window} steps)" if smooth_window > 1 else ""))
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / (re.sub(r"[^A-Za-z0-9]+", "_", metric).strip("_").lower() + ".png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="fs2-semionline plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    parser.add_argument("--out", type=Path, default=Path("plots"), help="folder for the PNGs (default: plots)")
    parser.add_argument(
        "--metric", action="append", dest="metrics", help=f"repeatable; default: {', '.join(DEFAULT_METRICS)}"
    )
    parser.add_argument("--label", action="append", dest="labels", help="one per RUN_DIR (default: folder names)")
    parser.add_argument("--smooth", type=int, default=1, help="moving-average window in steps")
    args = parser.parse_args(argv)
    if args.labels and len(args.labels) != len(args.run_dirs):
        parser.error(f"{len(args.labels)} --label for {len(args.run_dirs)} RUN_DIRs")
    try:
        check_output_dir(args.out, "--out")
        written = plot_runs(
            args.run_dirs,
            args.out,
            metrics=args.metrics or DEFAULT_METRICS,
            labels=args.labels,
            smooth_window=args.smooth,
        )
    except UserInputError as err:
        exit_with(err)
    if not written:
        exit_with(f"none of the runs has any of the metrics {args.metrics or list(DEFAULT_METRICS)}")
    for path in written:
        print(path)
