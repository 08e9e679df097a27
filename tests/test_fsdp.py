"""The trainer at scale, in miniature: 2 torchrun ranks on a real Gloo gang (CPU), fairseq2's
own DDP and FSDP2 (``trainer.data_parallelism``).

- FSDP2 trains what DDP trains (semi-online DPO, reference synced with the generator:
  full weights gathered from the shards bucket by bucket, the reference sharded alike)
  and resumes exactly from a sharded checkpoint;
- a rank with nothing usable on a step still joins every collective (no hang), DDP
  and FSDP alike;
- a non-finite forward pass on one micro-batch of one rank voids the step on every
  rank: weights and optimizer state stay bitwise as they were, and the run goes on;
- the paper presets' precision (fp32 master weights, bf16 compute under FSDP) moves
  every weight at lr 1e-6, where bf16 weights under DDP round almost every update away.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fs2_semionline.core.paths import TINY_MATH_DATA_DIR

from helpers import local_tensors

pytestmark = pytest.mark.slow

BASE = [
    "dataset.batch_size=4",
    "generator.backend=local",
    "generator.num_rollouts=4",
    "generator.max_gen_len=32",
    "reward.math.num_workers=1",
    "common.metric_recorders.tensorboard.enabled=false",
]
COMPARED = (
    "Loss",
    "DPO Loss",
    "Chosen Log-prob",
    "Rejected Log-prob",
    "Reward",
    "Pairs",
    "Skipped Prompts",
    "Gradient Norm",
)


def torchrun(
    out: Path,
    *config: str,
    timeout: float = 600,
    entry: list[str] = ["-m", "fs2_semionline.recipes.preference_finetune"],
    env: dict[str, str] | None = None,
) -> str:
    from fs2_semionline.generation.pg_sync import free_port

    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        *entry,
        str(out),
        "--no-rich",
        "--config",
        *BASE,
        *config,
    ]
    run = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-5000:]
    assert "Running on 2 process(es)" in log
    return log


def rows(out: Path) -> dict[int, dict[str, float]]:
    lines = (out / "metrics" / "train.jsonl").read_text().splitlines()
    return {int(r["Step"]): r for r in map(json.loads, lines)}


def full_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's full weights: DDP saves one file; FSDP2 one dim-0 shard per rank."""
    files = sorted((step_dir / "model" / "pp_00" / "tp_00").glob("sdp_*.pt"))
    shards = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
    shards = [s.get("model", s) for s in shards]
    return {k: torch.cat([s[k] for s in shards]) if len(shards) > 1 else shards[0][k] for k in shards[0]}


def _train_file(tmp_path: Path, n: int = 64) -> Path:
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join((TINY_MATH_DATA_DIR / "train.jsonl").read_text().splitlines()[:n]) + "\n")
    return path


def test_fsdp_trains_what_ddp_trains_and_resumes_exactly(tmp_path: Path) -> None:
    train = _train_file(tmp_path)
    common = [
        f"dataset.math_paths=[{train}]",
        "generator.sync_every_n_steps=2",
        "reference_sync.mode=with_generator",
        "optimizer.config.lr=1e-4",
        "regime.checkpoint_every_n_steps=2",
    ]
    torchrun(tmp_path / "ddp", *common, "regime.num_steps=4", "trainer.data_parallelism=ddp")
    log = torchrun(tmp_path / "fsdp", *common, "regime.num_steps=4", "trainer.data_parallelism=fsdp")
    assert "Wrapping model with FSDP2" in log and "Reference model sharded like the policy" in log
    ddp, fsdp = rows(tmp_path / "ddp"), rows(tmp_path / "fsdp")
    assert sorted(fsdp) == [1, 2, 3, 4] and sum(r["Pairs"] for r in fsdp.values()) > 0
    for step in ddp:
        for key in COMPARED:
            assert fsdp[step][key] == pytest.approx(ddp[step][key], rel=1e-4, abs=1e-5, nan_ok=True), (step, key)
    w_ddp, w_fsdp = (
        full_weights(tmp_path / "ddp" / "checkpoints" / "step_4"),
        full_weights(tmp_path / "fsdp" / "checkpoints" / "step_4"),
    )
    for name, value in w_ddp.items():
        torch.testing.assert_close(w_fsdp[name], value, rtol=1e-4, atol=1e-5)

    # The FSDP run's folder as an interruption after step 4's metrics and before its
    # checkpoint leaves it: resumed from the sharded step-2 checkpoint.
    shutil.copytree(tmp_path / "fsdp", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step_4")
    log = torchrun(tmp_path / "resumed", *common, "regime.num_steps=4", "trainer.data_parallelism=fsdp")
    assert "Restoring training from the last checkpoint at step 2" in log
    resumed = rows(tmp_path / "resumed")
    for step in (3, 4):
        for key in COMPARED:
            assert resumed[step][key] == pytest.approx(fsdp[step][key], rel=1e-6, abs=1e-7, nan_ok=True), (step, key)


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_a_rank_with_nothing_usable_does_not_hang(tmp_path: Path, parallelism: str) -> None:
    """Rank 1 reads every second prompt (fairseq2 shards round-robin); those have a gold
    answer no rollout gives, so rank 1 never has a pair while rank 0 trains."""
    lines = (TINY_MATH_DATA_DIR / "train.jsonl").read_text().splitlines()[:32]
    train = tmp_path / "train.jsonl"
    with train.open("w") as f:
        for i, line in enumerate(lines):
            row = json.loads(line)
            if i % 2 == 1:
                row["answer"] = "-987654321"
            f.write(json.dumps(row) + "\n")
    out = tmp_path / parallelism
    torchrun(
        out,
        f"dataset.math_paths=[{train}]",
        "optimizer.config.lr=1e-4",
        "regime.num_steps=3",
        "regime.checkpoint_every_n_steps=3",
        f"trainer.data_parallelism={parallelism}",
        timeout=300,
    )
    got = rows(out)
    assert sorted(got) == [1, 2, 3]
    for r in got.values():
        assert r["Skipped Prompts"] >= 2  # rank 1's two prompts, every step
        assert r["Pairs"] + r["Skipped Prompts"] == 4  # one DPO pair per usable prompt
    assert sum(r["Pairs"] for r in got.values()) > 0  # rank 0 did train
    assert sum(r["Skipped Steps"] for r in got.values()) == sum(r["Pairs"] == 0 for r in got.values())


def test_a_non_finite_forward_voids_the_step_on_every_rank(tmp_path: Path) -> None:
    """FSDP2 with 2 micro-batches a step: at step 2 a forward hook turns rank 1's first
    micro-batch into NaN (finite weights, as in a bf16 overflow; tests/nan_forward_run.py).
    Before: NaN gradients on every parameter, and AdamW wrote them into the weights."""
    out = tmp_path / "nan"
    torchrun(
        out,
        f"dataset.math_paths=[{_train_file(tmp_path, 32)}]",
        "optimizer.config.lr=1e-4",
        "generator.sync_every_n_steps=1",
        "regime.num_steps=3",
        "regime.checkpoint_every_n_steps=1",
        "trainer.data_parallelism=fsdp",
        "trainer.grad_accumulation.num_batches=2",
        entry=[str(Path(__file__).parent / "nan_forward_run.py")],
        env={"NAN_RANK": "1", "NAN_STEP": "2", "NAN_MICRO": "0"},
    )
    got = rows(out)
    assert sorted(got) == [1, 2, 3]
    assert (got[2]["Non-finite Losses"], got[2]["Skipped Steps"]) == (1, 1)
    assert got[2]["Loss"] != got[2]["Loss"]  # NaN: the voided step trained nothing
    for step in (1, 3):
        assert (got[step]["Non-finite Losses"], got[step]["Skipped Steps"]) == (0, 0)
        assert got[step]["Pairs"] > 0 and got[step]["Loss"] == got[step]["Loss"]
    ckpt = out / "checkpoints"
    for kind in ("model", "optimizer"):
        for shard in ("sdp_00.pt", "sdp_01.pt"):  # rank 0's and rank 1's
            before, voided, after = (
                local_tensors(ckpt / f"step_{n}" / kind / "pp_00" / "tp_00" / shard) for n in (1, 2, 3)
            )
            assert before.keys() == voided.keys() and len(before) > 0
            for name in before:
                assert torch.equal(voided[name], before[name]), (kind, shard, name)
            # ... and the run went on: step 3 trained every weight (and its optimizer state).
            assert sum(not torch.equal(after[name], voided[name]) for name in voided) >= len(voided) - 1, (kind, shard)


@pytest.mark.parametrize(
    ("label", "config"),
    [
        ("grpo", ["loss.name=grpo", "loss.config.kl_beta=0.001", "generator.sync_every_n_steps=1"]),
        (
            "group_dpo_grpo",
            [
                "loss.name=group_dpo_grpo",
                "generator.sync_every_n_steps=2",
                "reference_sync.mode=every_n_steps",
                "reference_sync.every_n_steps=2",
            ],
        ),
        ("offline_dpo", ["loss.name=dpo", "generator.sync_every_n_steps=null"]),
    ],
)
def test_every_objective_and_regime_trains_under_fsdp(tmp_path: Path, label: str, config: list[str]) -> None:
    train = _train_file(tmp_path, 32)
    out = tmp_path / label
    log = torchrun(
        out,
        f"dataset.math_paths=[{train}]",
        "optimizer.config.lr=1e-4",
        "regime.num_steps=2",
        "regime.checkpoint_every_n_steps=2",
        "trainer.data_parallelism=fsdp",
        *config,
    )
    assert "Reference model sharded like the policy" in log
    got = rows(out)
    assert sorted(got) == [1, 2]
    assert all(r["Non-finite Losses"] == 0 for r in got.values())
    assert any(r["Loss"] == r["Loss"] for r in got.values())  # some step trained (not NaN)
    assert (out / "checkpoints" / "step_2" / "model" / "pp_00" / "tp_00" / "sdp_01.pt").exists()
    if label == "offline_dpo":  # `fs2-semionline export` of an FSDP checkpoint: the weights its shards hold
        from safetensors.torch import load_file

        from fs2_semionline.glue.extension import tiny_math_config
        from fs2_semionline.glue.hf_export import to_hf_state_dict
        from fs2_semionline.runs.export import export_checkpoint, find_checkpoint

        hf = export_checkpoint(find_checkpoint(out), tmp_path / "hf")
        expected = to_hf_state_dict(full_weights(out / "checkpoints" / "step_2"), tiny_math_config())
        exported = load_file(hf / "model.safetensors")
        assert exported.keys() == expected.keys()
        assert all(torch.equal(exported[k], expected[k]) for k in exported)


def _preset_precision(name: str) -> list[str]:
    preset = yaml.safe_load(
        (Path(__file__).parents[1] / "src" / "fs2_semionline" / "presets" / f"{name}.yaml").read_text()
    )
    mp = preset["trainer"]["mixed_precision"]
    return [
        f"model.dtype={preset['model']['dtype']}",
        f"reference_model.dtype={preset['reference_model']['dtype']}",
        f"trainer.data_parallelism={preset['trainer']['data_parallelism']}",
        f"trainer.mixed_precision.mode={mp['mode']}",
        f"trainer.mixed_precision.dtype={mp['dtype']}",
    ]


# Rows of the vocabulary matrices whose tokens no sampled sequence holds get an exactly zero
# gradient in any precision (the tiny model's softmax underflows to 0 on them): the
# fraction is taken over the transformer layers, where every weight has a gradient.
_VOCAB = ("decoder_frontend.embed.weight", "final_proj.weight")


def _changed_fraction(out: Path, seed: dict[str, torch.Tensor]) -> float:
    after = full_weights(out / "checkpoints" / "step_3")
    layers = {k: v for k, v in seed.items() if k not in _VOCAB}
    changed = sum(int((after[k].float() != v.float()).sum()) for k, v in layers.items())
    return changed / sum(v.numel() for v in layers.values())


def test_preset_precision_moves_every_weight_at_lr_1e_6(tmp_path: Path, tiny_model) -> None:
    train = _train_file(tmp_path)
    seed = {k: v.detach().clone() for k, v in tiny_model.state_dict().items()}
    common = [
        f"dataset.math_paths=[{train}]",
        "optimizer.config.lr=1e-6",
        "regime.num_steps=3",
        "regime.checkpoint_every_n_steps=3",
    ]
    precision = _preset_precision("math_semi_online_dpo")
    assert "model.dtype=float32" in precision and "trainer.data_parallelism=fsdp" in precision
    torchrun(tmp_path / "preset", *common, *precision)
    assert _changed_fraction(tmp_path / "preset", seed) >= 0.99

    # The settings the presets had before: bf16 weights under DDP (fairseq2 then steps the
    # optimizer in bf16): nearly every lr-1e-6 update rounds to zero.
    torchrun(
        tmp_path / "bf16_ddp",
        *common,
        "model.dtype=bfloat16",
        "reference_model.dtype=bfloat16",
        "trainer.data_parallelism=ddp",
        "trainer.mixed_precision.mode=static",
        "trainer.mixed_precision.dtype=bfloat16",
    )
    seed_bf16 = {k: v.to(torch.bfloat16) for k, v in seed.items()}
    assert _changed_fraction(tmp_path / "bf16_ddp", seed_bf16) < 0.02
