"""Reward-model scoring: the tiny RM locally, an Athene-layout RM, and Ray actors.

Every reward here is checked against a number computed independently with
transformers, and every failure must come back as ``None``, never as 0.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors import safe_open
from transformers import AutoTokenizer, LlamaForSequenceClassification, LlamaModel

from fs2_semionline.core.paths import ASSETS_DIR
from fs2_semionline.data.templates import EOT, non_verifiable_prompt
from fs2_semionline.rewards.athene import AtheneForSequenceClassification
from fs2_semionline.rewards.reward_model import (
    RewardModel,
    RewardModelSpec,
    resolve_reward_model,
)
from fs2_semionline.tiny.build_reward_model import (
    PAD_ID,
    build_tiny_reward_model,
    copy_tiny_tokenizer,
    tiny_reward_model_config,
)

PROMPTS = [  # the user's text: the reward model builds the conversation itself
    "Write a short poem about the sea.",
    "What is the capital of France?",
    "Give me three tips for learning a new language.",
    "Thank you!",
    "Explain why the sky is blue in two sentences.",
    "Please answer in one word.",
]
RESPONSES = [
    "The sea is wide and blue, it sings to me and you.",
    "Paris.",
    "Practice every day. Speak with people. Read short stories in the language.",
    "You are welcome!",
    "Sunlight scatters off air molecules. Blue light scatters the most, so the sky looks blue.",
    "Yes",
]

# Meta-Llama-3-8B-Instruct's chat template (the one Athene-RM-8B's tokenizer ships).
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
ATHENE_CLS = "<|reserved_special_token_1|>"


@pytest.fixture(scope="module")
def tiny_rm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_reward_model(tmp_path_factory.mktemp("tiny_rm"))


@pytest.fixture(scope="module")
def rm(tiny_rm_dir: Path) -> RewardModel:
    return RewardModel(RewardModelSpec(path=str(tiny_rm_dir), batch_size=4))


def build_tiny_athene(out_dir: Path, seed: int = 0) -> Path:
    """Athene-RM-8B's layout at toy size: ``model.*`` + ``v_head.*`` safetensors,
    a tokenizer with a CLS token and the Llama-3 chat template."""
    copy_tiny_tokenizer(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
    tokenizer.add_special_tokens({"cls_token": ATHENE_CLS})
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)
    config = tiny_reward_model_config()
    config.vocab_size = len(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        AtheneForSequenceClassification(config).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


@pytest.fixture(scope="module")
def athene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_athene(tmp_path_factory.mktemp("tiny_athene"))


# --------------------------------------------------------------------------- tiny RM


def test_build_is_deterministic_and_self_contained(tmp_path: Path, tiny_rm_dir: Path) -> None:
    again = build_tiny_reward_model(tmp_path / "again", seed=0)
    other = build_tiny_reward_model(tmp_path / "other", seed=1)
    assert sorted(p.name for p in again.iterdir()) == [
        "config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    weights = "model.safetensors"
    with safe_open(tiny_rm_dir / weights, "pt") as a, safe_open(again / weights, "pt") as b:
        assert set(a.keys()) == set(b.keys())
        assert "score.weight" in a.keys()
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
    with safe_open(other / weights, "pt") as c, safe_open(again / weights, "pt") as b:
        assert not torch.equal(c.get_tensor("score.weight"), b.get_tensor("score.weight"))
    config = json.loads((again / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (64, 2)
    assert config["pad_token_id"] == PAD_ID


def test_scores_are_deterministic_finite_and_distinct(rm: RewardModel) -> None:
    first = rm.score(PROMPTS, RESPONSES)
    second = rm.score(PROMPTS, RESPONSES)
    assert first == second
    assert all(isinstance(s, float) and math.isfinite(s) for s in first)
    assert len({round(s, 6) for s in first if s is not None}) == len(first)


def test_padding_does_not_change_a_score(rm: RewardModel) -> None:
    short_p, short_r = PROMPTS[1], RESPONSES[1]
    long_p, long_r = PROMPTS[4], RESPONSES[4] * 3
    short_ids, long_ids = rm._encode(short_p, short_r), rm._encode(long_p, long_r)
    assert isinstance(short_ids, list) and isinstance(long_ids, list)
    assert len(short_ids) + 20 < len(long_ids)
    (alone,) = rm.score([short_p], [short_r])
    batched = rm.score([long_p, short_p], [long_r, short_r])  # one batch, short row right-padded
    assert alone is not None and batched[1] is not None
    assert abs(alone - batched[1]) < 1e-5


def test_score_is_the_head_at_the_last_real_token(rm: RewardModel, tiny_rm_dir: Path) -> None:
    """Recomputed with plain transformers: ``score`` head on the last token's hidden state."""
    hf = LlamaForSequenceClassification.from_pretrained(tiny_rm_dir, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_rm_dir, local_files_only=True)
    expected = []
    for prompt, response in zip(PROMPTS[:3], RESPONSES[:3]):
        text = non_verifiable_prompt(prompt) + response + EOT
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        assert ids[0, 0].item() == tokenizer.bos_token_id
        assert ids[0, -1].item() == tokenizer.eos_token_id
        with torch.no_grad():
            hidden = hf.model(ids).last_hidden_state[0, -1]
            expected.append(hf.score(hidden).item())
    got = rm.score(PROMPTS[:3], RESPONSES[:3])
    assert got == pytest.approx(expected, abs=1e-5)


def test_special_token_spellings_in_prompt_and_response_are_text(rm: RewardModel) -> None:
    """A prompt or an answer that spells the template's tokens cannot close a turn or open
    one: only the conversation's own structure is special; the text decodes back."""
    tokenizer = rm.tokenizer
    specials = {t: tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    spelled = "".join(specials) + " <|start_header_id|>assistant<|end_header_id|>\n\n"
    ids = rm._encode("Say hi. " + spelled, "Hi! " + spelled)
    assert isinstance(ids, list)
    plain = rm._encode("Say hi.", "Hi!")
    assert isinstance(plain, list)
    for token, token_id in specials.items():
        assert ids.count(token_id) == plain.count(token_id), token
    assert tokenizer.decode(ids) == rm.conversation_text("Say hi. " + spelled, "Hi! " + spelled)


def test_unscorable_items_are_none_and_the_rest_is_scored(tiny_rm_dir: Path, rm: RewardModel) -> None:
    short = RewardModel(RewardModelSpec(path=str(tiny_rm_dir), batch_size=8, max_length=64))
    prompts = [PROMPTS[0], PROMPTS[1], "  ", PROMPTS[3]]
    # fine, too long, empty prompt, empty answer
    responses = [RESPONSES[0], "word " * 200, "orphan answer", ""]
    got = short.score(prompts, responses)
    assert got[1] is None and got[2] is None  # never 0.0
    assert got[0] == pytest.approx(rm.score(PROMPTS[:1], RESPONSES[:1])[0], abs=1e-5)
    assert isinstance(got[3], float)  # an empty answer is a real answer: it is scored


def _raising_forward(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("simulated forward failure")


def test_a_failed_forward_gives_none_for_its_batch(rm: RewardModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rm.model, "forward", _raising_forward)
    assert rm.score(PROMPTS[:5], RESPONSES[:5]) == [None] * 5


def test_a_non_finite_score_is_none(rm: RewardModel, monkeypatch: pytest.MonkeyPatch) -> None:
    real_forward = rm.model.forward

    def nan_in_first_row_forward(*args: Any, **kwargs: Any) -> Any:
        out = real_forward(*args, **kwargs)
        out.logits[0] = torch.nan
        return out

    monkeypatch.setattr(rm.model, "forward", nan_in_first_row_forward)
    got = rm.score([PROMPTS[0]], [RESPONSES[0]])  # a batch of one: its only row is NaN
    assert got == [None]


def test_bad_spec_raises_clearly(tmp_path: Path, rm: RewardModel) -> None:
    missing = tmp_path / "no_such_rm"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        RewardModel(RewardModelSpec(path=str(missing)))
    with pytest.raises(ValueError, match="head"):
        RewardModelSpec(path=str(missing), head="pairwise")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        rm.score(PROMPTS[:2], RESPONSES[:1])


# --------------------------------------------------------------------------- Athene


def test_athene_reads_v_head_at_the_cls_token(athene_dir: Path) -> None:
    rm = RewardModel(RewardModelSpec(path=str(athene_dir), head="athene", batch_size=4))
    assert rm.cls_token == ATHENE_CLS
    cls_id = rm.tokenizer.convert_tokens_to_ids(ATHENE_CLS)
    assert rm.model.CLS_ID == cls_id == 1024

    # The model card's computation by hand: chat template + CLS; v_head on hidden_states[-1] at CLS.
    tokenizer = AutoTokenizer.from_pretrained(athene_dir, local_files_only=True)
    backbone = LlamaModel.from_pretrained(athene_dir, local_files_only=True).eval()
    with safe_open(athene_dir / "model.safetensors", "pt") as f:
        assert {k.split(".")[0] for k in f.keys()} == {"model", "v_head"}
        v_head = f.get_tensor("v_head.weight")
    users = ["What is the capital of France?", "Write a short poem about the sea."]
    answers = ["Paris.", RESPONSES[0]]
    expected = []
    for user, answer in zip(users, answers):
        chat = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
        text = tokenizer.apply_chat_template(chat, tokenize=False) + tokenizer.cls_token
        ids = tokenizer(text, return_tensors="pt").input_ids
        assert ids[0, -1].item() == cls_id
        with torch.no_grad():
            hidden = backbone(ids, output_hidden_states=True).hidden_states[-1]
        expected.append((hidden[0, -1] @ v_head[0]).item())
        before_cls = (hidden[0, -2] @ v_head[0]).item()  # <|eot_id|>: not where Athene reads
        assert abs(before_cls - expected[-1]) > 1e-4

    got = rm.score(users, answers)  # raw user text: built with the chat template
    assert got == pytest.approx(expected, abs=1e-5)
    # Padding: the short item in a batch with a longer one keeps its reward.
    batched = rm.score([users[1], users[0]], [answers[1] * 3, answers[0]])
    assert batched[1] == pytest.approx(expected[0], abs=1e-5)


def test_athene_head_refuses_a_checkpoint_without_v_head(tiny_rm_dir: Path) -> None:
    with pytest.raises(ValueError, match="v_head"):
        RewardModel(RewardModelSpec(path=str(tiny_rm_dir), head="athene"))


# --------------------------------------------------------------------------- asset card


def test_resolve_reward_model_from_folder_and_card(tmp_path: Path, tiny_rm_dir: Path) -> None:
    """The shipped card through fairseq2's own store, without and with a user override."""
    from fairseq2.assets import StandardAssetStore, load_in_memory_asset_metadata

    local = resolve_reward_model(str(tiny_rm_dir))
    assert local == RewardModelSpec(path=str(tiny_rm_dir.resolve()))

    shipped = list(yaml.safe_load_all((ASSETS_DIR / "cards" / "reward_models.yaml").read_text()))
    package = load_in_memory_asset_metadata("package", shipped)
    with pytest.raises(ValueError, match="'athene_rm_8b': field 'reward_model_path' is not set"):
        resolve_reward_model("athene_rm_8b", store=StandardAssetStore([package]))

    override = {"name": "athene_rm_8b@user", "reward_model_path": str(tmp_path / "athene")}
    user = load_in_memory_asset_metadata("user", [override])
    spec = resolve_reward_model("athene_rm_8b", store=StandardAssetStore([package, user]))
    assert spec == RewardModelSpec(path=str(tmp_path / "athene"), head="athene")
    with pytest.raises(ValueError, match="neither a local reward model folder nor"):
        resolve_reward_model("Nexusflow/Athene-RM-8B", store=StandardAssetStore([package, user]))


# --------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def ray_session(ray_cluster) -> Any:
    """The shared local cluster (conftest)."""
    import ray

    return ray


def _wait_until_dead(ray: Any, actor: Any, timeout_s: float = 60) -> None:
    """``ray.kill`` is asynchronous: a call made right after it may still run."""
    from ray.exceptions import RayActorError

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.ready.remote(), timeout=timeout_s)
        except RayActorError:
            return
        time.sleep(0.05)
    pytest.fail(f"{actor} still alive {timeout_s} s after ray.kill")


def test_ray_scorer_matches_local_scores_and_replaces_a_killed_actor(
    ray_session: Any, rm: RewardModel, caplog: pytest.LogCaptureFixture
) -> None:
    from fs2_semionline.rewards.reward_model_actor import RayRewardScorer

    local = rm.score(PROMPTS, RESPONSES)
    scorer = RayRewardScorer(rm.spec, replicas=2, num_cpus=1, timeout_s=120, start_timeout_s=120)
    try:
        assert scorer.score(PROMPTS, RESPONSES) == pytest.approx(local, abs=1e-5)
        assert scorer.num_failed_calls == 0

        victim = scorer.actors[0]
        ray_session.kill(victim)
        _wait_until_dead(ray_session, victim)

        with caplog.at_level(logging.WARNING, logger="fs2_semionline.rewards.reward_model_actor"):
            degraded = scorer.score(PROMPTS, RESPONSES)
        assert f"replica 0 ({victim!r})" in caplog.text
        assert "replacing it" in caplog.text
        assert degraded[:3] == [None, None, None]  # replica 0's items: failed, not 0.0
        assert degraded[3:] == pytest.approx(local[3:], abs=1e-5)
        assert scorer.num_failed_calls == 1
        assert scorer.actors[0] is not victim

        # The replacement actor scores again.
        assert scorer.score(PROMPTS, RESPONSES) == pytest.approx(local, abs=1e-5)
        assert scorer.num_failed_calls == 1
    finally:
        scorer.close()


def test_ray_scorer_with_a_bad_spec_raises_at_start(ray_session: Any, tmp_path: Path) -> None:
    from fs2_semionline.rewards.reward_model_actor import RayRewardScorer

    missing = tmp_path / "no_such_rm"
    with pytest.raises(RuntimeError, match="no_such_rm"):
        RayRewardScorer(RewardModelSpec(path=str(missing)), start_timeout_s=120)
