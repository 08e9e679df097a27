"""DDP vs FSDP2 on 2 CPU ranks (Gloo): seconds per DPO step, peak RSS per rank, and the
generator sync under FSDP (full weights gathered from the shards bucket by bucket and
renamed to HF names) with its time and rank-0 peak memory.

    python benchmarks/fsdp_scale.py [--steps 5] [--out benchmarks/results/fsdp_scale.json]

Models: the shipped tiny llama (3.67M) and a random ~100M llama (no training quality
needed). A step = policy forward/backward + reference forward on 8 pairs (16 sequences
of 128 tokens) + AdamW, through fairseq2's own DDP / FSDP2 wrappers and gangs. Every
number comes from one run on this machine; ratios are only meaningful within it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

MODELS = {
    "tiny": {},  # the shipped tiny_math_sft architecture
    "100m": {"model_dim": 768, "num_layers": 24, "num_attn_heads": 12, "num_key_value_heads": 4, "ffn_inner_dim": 2048},
}


class PeakRSS:
    """Samples this process's RSS every millisecond while active."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.001)

    def __enter__(self) -> "PeakRSS":
        self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def worker(model_name: str, parallelism: str, steps: int, bucket_mb: int) -> dict[str, object]:
    import dataclasses

    import psutil
    import torch
    from fairseq2 import init_fairseq2
    from fairseq2.gang import ProcessGroupGang, create_fsdp_gangs, create_parallel_gangs
    from fairseq2.models.llama import get_llama_model_hub
    from fairseq2.nn import BatchLayout
    from fairseq2.nn.ddp import to_ddp
    from fairseq2.nn.fsdp import to_fsdp

    from fs2_semionline.generation.sharding import full_weight_buckets
    from fs2_semionline.glue.extension import tiny_math_config
    from fs2_semionline.glue.hf_export import StreamingHFConverter
    from fs2_semionline.losses import dpo_loss, sequence_logprobs, token_stats

    torch.set_num_threads(1)
    init_fairseq2()
    device = torch.device("cpu")
    root = ProcessGroupGang.create_default_process_group(device)
    gangs = create_parallel_gangs(root)
    if parallelism == "fsdp":
        gangs = create_fsdp_gangs(gangs)
    config = dataclasses.replace(tiny_math_config(), **MODELS[model_name])
    hub = get_llama_model_hub()
    torch.manual_seed(0)
    policy = hub.create_new_model(config, device=device, dtype=torch.float32)
    reference = hub.create_new_model(config, device=device, dtype=torch.float32).requires_grad_(False)
    num_params = sum(p.numel() for p in policy.parameters())
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in policy.state_dict().items()}

    def apply(module, wrap):  # type: ignore[no-untyped-def]
        for layer in module.decoder.layers:
            wrap(layer)
        return wrap(module, reshard_after_forward=False)

    if parallelism == "fsdp":
        model = to_fsdp(policy, gangs, apply, version="v2", broadcast_state=True)
        reference = to_fsdp(reference, gangs, apply, version="v2", broadcast_state=True)
    else:
        model = to_ddp(policy, gangs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)

    batch, seq = 16, 128
    gen = torch.Generator().manual_seed(1)
    seqs = torch.randint(4, config.vocab_size, (batch, seq + 1), generator=gen)
    mask = torch.zeros(batch, seq, dtype=torch.bool)
    mask[:, 32:] = True
    layout = BatchLayout.of(seqs[:, :-1], [seq] * batch)

    def step() -> float:
        logits = model(seqs[:, :-1], layout)
        logps = sequence_logprobs(token_stats(logits, seqs[:, 1:], mask)[0], mask)
        with torch.no_grad():
            ref = sequence_logprobs(token_stats(reference(seqs[:, :-1], layout), seqs[:, 1:], mask)[0], mask)
        out = dpo_loss(logps[:8], logps[8:], ref[:8], ref[8:], beta=0.1)
        out.loss.mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(out.loss.mean())

    step()  # warm-up (allocations, first collectives)
    times = []
    with PeakRSS() as step_rss:
        for _ in range(steps):
            root.barrier()
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    result: dict[str, object] = {
        "model": model_name,
        "parallelism": parallelism,
        "params": num_params,
        "rank": root.rank,
        "seconds_per_step": sorted(times)[len(times) // 2],
        "peak_rss_gb": step_rss.peak / 1e9,
    }

    if parallelism == "fsdp":
        # The generator sync: gather, cast to bf16 (the serving dtype), rename to HF names;
        # against gathering the whole state dict first (what the sync must never do).
        to_hf = StreamingHFConverter(shapes, config)

        def bucketed() -> tuple[int, int]:
            num_buckets, largest = 0, 0
            for bucket in full_weight_buckets(
                policy, bucket_bytes=bucket_mb << 20, dtype=torch.bfloat16, keep=root.rank == 0
            ):
                hf = to_hf(bucket) if bucket else {}
                largest = max(largest, sum(t.numel() * t.element_size() for t in hf.values()))
                num_buckets += bool(bucket)
                del hf, bucket
            return num_buckets, largest

        def whole() -> tuple[int, int]:
            state: dict[str, torch.Tensor] = {}
            for bucket in full_weight_buckets(policy, bucket_bytes=1 << 40, keep=root.rank == 0):
                state.update(bucket)
            hf = to_hf(state) if state else {}
            held = sum(t.numel() * t.element_size() for t in (*state.values(), *hf.values()))
            del state, hf
            return 1, held

        for label, fn in (("sync", bucketed), ("whole_gather", whole)):
            _malloc_trim()
            root.barrier()
            base = psutil.Process().memory_info().rss
            with PeakRSS() as rss:
                start = time.perf_counter()
                num_buckets, largest = fn()
                seconds = time.perf_counter() - start
            result.update(
                {
                    f"{label}_seconds": seconds,
                    f"{label}_buckets": num_buckets,
                    f"{label}_largest_bucket_gb": largest / 1e9,
                    f"{label}_peak_extra_gb": (rss.peak - base) / 1e9,
                }
            )
        result["sync_bucket_mb"] = bucket_mb
    root.close()
    return result


def _malloc_trim() -> None:
    """Returns freed heap to the OS, so that a later allocation shows in the RSS."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def machine() -> dict[str, object]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--bucket-mb", type=int, default=64)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fsdp_scale.json")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "PARALLELISM"))
    args = parser.parse_args()
    if args.worker:
        result = worker(args.worker[0], args.worker[1], args.steps, args.bucket_mb)
        print("RESULT " + json.dumps(result), flush=True)
        return

    from fs2_semionline.generation.pg_sync import free_port

    rows = []
    for model_name in args.models:
        for parallelism in ("ddp", "fsdp"):
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc_per_node=2",
                f"--master_port={free_port()}",
                __file__,
                "--steps",
                str(args.steps),
                "--bucket-mb",
                str(args.bucket_mb),
                "--worker",
                model_name,
                parallelism,
            ]
            run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            found = [json.loads(l.split("RESULT ", 1)[1]) for l in run.stdout.splitlines() if "RESULT " in l]
            if run.returncode != 0 or len(found) != 2:
                raise SystemExit(f"{model_name}/{parallelism} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
            for r in sorted(found, key=lambda r: r["rank"]):
                rows.append(r)
                extra = ""
                if "sync_seconds" in r:
                    extra = (
                        f"  sync {r['sync_seconds']:.3f} s in {r['sync_buckets']} buckets, RSS peak "
                        f"+{r['sync_peak_extra_gb']:.3f} GB (whole state dict first: "
                        f"+{r['whole_gather_peak_extra_gb']:.3f} GB)"
                    )
                print(
                    f"{model_name:>5} {parallelism:>4} rank {r['rank']}: {r['params'] / 1e6:.1f}M params, "
                    f"{r['seconds_per_step']:.3f} s/step, peak RSS {r['peak_rss_gb']:.2f} GB{extra}",
                    flush=True,
                )
    report = {"machine": machine(), "steps": args.steps, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
