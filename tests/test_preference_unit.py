"""``PreferenceUnit`` driven one step at a time, every objective against hand-computed numbers.

Real: the shipped tiny model (policy, and a perturbed copy as the reference), its
tokenizer, Math-Verify in its process pool, fairseq2's metric bag. Fake, and only this:
the generator (``FixedGenerator``), which returns fixed completions, so that the rewards
(Math-Verify on known answers) and therefore the selection are known in advance. Every
expected value is computed here from scratch: one unpadded sequence at a time, a float64
log-softmax over the full vocabulary, the paper's equations written out.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import pytest
import torch
from fairseq2.gang import FakeGang
from fairseq2.metrics import MetricBag
from fairseq2.nn import BatchLayout

from fs2_semionline.config.training import (
    DPOConfig,
    DPOTermConfig,
    GroupDPOConfig,
    GroupDPOGRPOConfig,
    GRPOConfig,
    GRPOTermConfig,
    ReferenceSyncSection,
    RolloutGeneratorSection,
)
from fs2_semionline.data.batches import PairBatch, PromptBatch
from fs2_semionline.data.jsonl import PairExample, PromptExample
from fs2_semionline.data.templates import verifiable_prompt
from fs2_semionline.generation.protocol import Completion, SamplingConfig
from fs2_semionline.objectives import LossSection, build_objective
from fs2_semionline.rewards import MathVerifyPool
from fs2_semionline.rewards.routing import RewardRouter
from fs2_semionline.units.preference import PreferenceUnit
from fs2_semionline.units.schedule import RolloutSchedule

CPU = torch.device("cpu")
GOLDS = ["3", "7", "12", "20"]
RIGHT, WRONG = True, False


class FixedGenerator:
    """A generator whose completions are fixed in advance: ``table[prompt_ids]``."""

    def __init__(self, table: Mapping[tuple[int, ...], list[Completion]]) -> None:
        self.table = table
        self.version = 0
        self.syncs: list[int] = []

    def sync(self, weights: Mapping[str, torch.Tensor] | Iterable[Mapping[str, torch.Tensor]], version: int) -> None:
        self.version = version
        self.syncs.append(version)

    def submit(
        self, prompts: Sequence[Sequence[int]], num_rollouts: int, sampling: SamplingConfig, seed: int
    ) -> object:
        return [self.table[tuple(p)][:num_rollouts] for p in prompts]

    def wait(self, pending: object) -> list[list[Completion]]:
        return pending  # type: ignore[return-value]

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def pool():
    with MathVerifyPool(num_workers=1, timeout_s=5.0) as p:
        yield p


@pytest.fixture(scope="module")
def models(tiny_model):
    """The policy, and a reference that differs from it (so DPO's margins are not 0)."""
    policy = copy.deepcopy(tiny_model).train()
    reference = copy.deepcopy(tiny_model).eval().requires_grad_(False)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for p in reference.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.02)
    return policy, reference


@dataclass
class Case:
    unit: PreferenceUnit
    examples: list[PromptExample]
    completions: list[list[Completion]]
    eos: int


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.create_raw_encoder()(text).tolist()


def make_case(
    tokenizer, models, pool, pattern: list[list[bool]], loss: LossSection, *, logprob_shift: float | None = None
) -> Case:
    """``pattern[i][j]``: whether rollout j of prompt i is right. ``logprob_shift``: the
    generator's log-probs are the true ones minus this per token (None: none returned)."""
    policy, reference = models
    eos = tokenizer.vocab_info.eos_idx
    examples, completions, table = [], [], {}
    for i, row in enumerate(pattern):
        text = verifiable_prompt(f"What is {GOLDS[i]} plus 0?")
        ids = encode(tokenizer, text)
        examples.append(PromptExample(text, text, ids, GOLDS[i], "math", f"case:{i}"))
        cs = []
        for j, right in enumerate(row):
            answer = "so " * (i + j) + f"it is \\boxed{{{GOLDS[i] if right else 900 + j}}}"  # lengths differ
            tokens = encode(tokenizer, answer)
            finished = j % 2 == 0  # an unfinished response trains no EOS
            logprobs = None
            if logprob_shift is not None:
                response = [*tokens, eos] if finished else tokens
                logprobs = tuple(x - logprob_shift for x in token_logps(policy, ids, response))
            cs.append(Completion(tokens, answer, finished, logprobs))
        completions.append(cs)
        table[tuple(ids)] = cs
    schedule = RolloutSchedule(
        FixedGenerator(table),  # type: ignore[arg-type]
        policy,
        reference,
        config=RolloutGeneratorSection(num_rollouts=len(pattern[0]), sync_every_n_steps=1),
        reference_sync=ReferenceSyncSection(),
        seed=0,
        dp_gang=FakeGang(CPU),
    )
    unit = PreferenceUnit(
        policy,
        build_objective(loss),
        tokenizer,
        reference=reference,
        schedule=schedule,
        rewards=RewardRouter(pool),
        tasks=frozenset({"math"}),
        entropy_coef=loss.entropy_coef,
        seed=0,
        device=CPU,
        rollout_logprobs=logprob_shift is not None,
    )
    return Case(unit, examples, completions, eos)


def token_logps(model, prompt: list[int], response: list[int]) -> list[float]:
    """log π(y_t | x, y_<t) of each response token, one unpadded sequence, float64."""
    with torch.no_grad():
        seq = torch.tensor([[*prompt, *response]])
        logits = model(seq[:, :-1], BatchLayout.of(seq[:, :-1])).double()
        logps = torch.log_softmax(logits, dim=-1)[0]
    start = len(prompt) - 1
    return [float(logps[start + t, tok]) for t, tok in enumerate(response)]


def token_entropies(model, prompt: list[int], response: list[int]) -> list[float]:
    with torch.no_grad():
        seq = torch.tensor([[*prompt, *response]])
        logits = model(seq[:, :-1], BatchLayout.of(seq[:, :-1])).double()
        p = torch.softmax(logits, dim=-1)[0]
    ent = -(p * p.clamp_min(1e-300).log()).sum(-1)
    start = len(prompt) - 1
    return [float(ent[start + t]) for t in range(len(response))]


def response_ids(case: Case, i: int, j: int) -> list[int]:
    c = case.completions[i][j]
    return [*c.token_ids, case.eos] if c.finished else list(c.token_ids)


def seq_logp(model, case: Case, i: int, j: int) -> float:
    return sum(token_logps(model, case.examples[i].token_ids, response_ids(case, i, j)))


def run_step(case: Case, num_micro: int = 1) -> tuple[float, dict[str, float]]:
    """One step of ``num_micro`` calls; returns what fairseq2 would optimise (Σ loss / Σ n)
    and every metric's value."""
    bag = MetricBag(CPU)
    case.unit.prepare_metric_bag(bag)
    case.unit.set_step_nr(1)
    total, n = 0.0, 0
    for micro in range(num_micro):
        loss, count = case.unit.process_batch(PromptBatch((case.examples,), 0, micro, num_micro), bag)
        total, n = total + float(loss), n + count
    return total / n, {name: float(metric.compute()) for name, metric in bag.metrics.items()}


def dpo_z(case: Case, models, i: int, c: int, r: int, beta: float) -> float:
    """z of one pair, Eq. 3: the chosen response's implicit reward minus the rejected one's."""
    policy, reference = models
    pc, pr = seq_logp(policy, case, i, c), seq_logp(policy, case, i, r)
    rc, rr = seq_logp(reference, case, i, c), seq_logp(reference, case, i, r)
    return beta * (pc - rc) - beta * (pr - rr)


def dpo_term(case: Case, models, i: int, c: int, r: int, beta: float) -> tuple[float, float, float]:
    """(−log σ(z), log π(y_c), log π(y_r)) of one pair, Eq. 3."""
    policy = models[0]
    z = dpo_z(case, models, i, c, r, beta)
    return math.log1p(math.exp(-z)), seq_logp(policy, case, i, c), seq_logp(policy, case, i, r)


def mean_entropy(case: Case, models, rows: list[tuple[int, int]]) -> float:
    ents = [
        e for i, j in rows for e in token_entropies(models[0], case.examples[i].token_ids, response_ids(case, i, j))
    ]
    return sum(ents) / len(ents)


def _loss(name: str, config: object, entropy_coef: float = 0.0) -> LossSection:
    return LossSection(name=name, config=config, entropy_coef=entropy_coef)


APPROX = {"rel": 1e-5, "abs": 1e-6}

# Prompt 0: right, wrong → pair (0, 1). Prompt 1: wrong, right → pair (1, 0).
# Prompt 2: all right and prompt 3: all wrong → counted skips.
PAIRS = [[RIGHT, WRONG], [WRONG, RIGHT], [RIGHT, RIGHT], [WRONG, WRONG]]


def test_dpo_step_loss_n_and_every_metric(tiny_tokenizer, models, pool) -> None:
    beta = 0.5
    case = make_case(tiny_tokenizer, models, pool, PAIRS, _loss("dpo", DPOConfig(beta=beta)))
    loss, m = run_step(case)

    t0, pc0, pr0 = dpo_term(case, models, 0, 0, 1, beta)
    t1, pc1, pr1 = dpo_term(case, models, 1, 1, 0, beta)
    z = [dpo_z(case, models, 0, 0, 1, beta), dpo_z(case, models, 1, 1, 0, beta)]
    assert loss == pytest.approx((t0 + t1) / 2, **APPROX)
    lens = {(i, j): len(response_ids(case, i, j)) for i in range(2) for j in range(2)}
    rollout_lens = [len(c.token_ids) for cs in case.completions for c in cs]
    expected = {
        "loss": (t0 + t1) / 2,
        "dpo_loss": (t0 + t1) / 2,
        "chosen_logps": (pc0 + pc1) / 2,
        "rejected_logps": (pr0 + pr1) / 2,
        "chosen_len": (lens[0, 0] + lens[1, 1]) / 2,
        "rejected_len": (lens[0, 1] + lens[1, 0]) / 2,
        "reward_accuracy": sum(v > 0 for v in z) / 2,
        "reward_margin": sum(z) / 2,
        "num_pairs": 2,
        "num_prompts": 2,
        "entropy": mean_entropy(case, models, [(0, 0), (1, 1), (0, 1), (1, 0)]),
        "reward": 4 / 8,
        "reward/math": 4 / 8,
        "rollout_len": sum(rollout_lens) / len(rollout_lens),
        "skipped_prompts": 2,
        "skipped/all_correct": 1,
        "skipped/all_incorrect": 1,
        "skipped/too_few_valid": 0,
        "failed_rewards": 0,
        "skipped_steps": 0,
        "nonfinite_losses": 0,
        "version_lag": 0,
    }
    timings = {"generate_seconds", "reward_seconds", "forward_seconds", "sync_seconds"}
    assert set(m) == set(expected) | timings  # nothing registered that is not computed
    for name, value in expected.items():
        assert m[name] == pytest.approx(value, **APPROX), name
    assert all(m[t] >= 0.0 for t in timings)


def test_two_micro_batches_give_the_one_batch_loss(tiny_tokenizer, models, pool) -> None:
    whole, _ = run_step(make_case(tiny_tokenizer, models, pool, PAIRS, _loss("dpo", DPOConfig(beta=0.5))))
    split, m = run_step(make_case(tiny_tokenizer, models, pool, PAIRS, _loss("dpo", DPOConfig(beta=0.5))), num_micro=2)
    assert split == pytest.approx(whole, rel=1e-6)
    assert m["num_pairs"] == 2 and m["skipped_prompts"] == 2  # counted once per step, not per call


def test_dpo_nll_term_is_logged(tiny_tokenizer, models, pool) -> None:
    beta, scale = 0.5, 0.3
    case = make_case(tiny_tokenizer, models, pool, PAIRS, _loss("dpo", DPOConfig(beta=beta, nll_scale=scale)))
    loss, m = run_step(case)
    t0, pc0, _ = dpo_term(case, models, 0, 0, 1, beta)
    t1, pc1, _ = dpo_term(case, models, 1, 1, 0, beta)
    nll = scale * -(pc0 + pc1) / 2
    assert m["nll_loss"] == pytest.approx(nll, **APPROX)
    assert m["dpo_loss"] == pytest.approx((t0 + t1) / 2, **APPROX)
    assert loss == pytest.approx((t0 + t1) / 2 + nll, **APPROX)


# Prompt 0: 2 right, 2 wrong (4 pairs); prompt 1: 1 right, 3 wrong (3 pairs); prompt 2 all right.
GROUPS = [[RIGHT, RIGHT, WRONG, WRONG], [WRONG, RIGHT, WRONG, WRONG], [RIGHT] * 4]


def group_dpo_terms(case: Case, models, beta: float) -> list[float]:
    per_prompt = []
    for i, row in enumerate(GROUPS[:2]):
        right = [j for j, ok in enumerate(row) if ok]
        wrong = [j for j, ok in enumerate(row) if not ok]
        terms = [dpo_term(case, models, i, c, r, beta)[0] for c in right for r in wrong]
        per_prompt.append(sum(terms) / len(terms))
    return per_prompt


def test_group_dpo_step(tiny_tokenizer, models, pool) -> None:
    beta = 0.5
    case = make_case(tiny_tokenizer, models, pool, GROUPS, _loss("group_dpo", GroupDPOConfig(beta=beta, nll_scale=0.2)))
    loss, m = run_step(case)
    per_prompt = group_dpo_terms(case, models, beta)
    policy = models[0]
    nll = [
        0.2 * -sum(seq_logp(policy, case, i, j) for j in right) / len(right) * 1.0
        for i, right in ((0, [0, 1]), (1, [1]))
    ]
    # Eq. 4 averages DPO + NLL over the prompt's |Y_c||Y_r| pairs: prompt 0 has each right
    # response in 2 pairs, prompt 1 its one right response in 3.
    assert m["num_pairs"] == 4 + 3  # DPO pairs, not responses
    assert m["num_prompts"] == 2
    assert m["dpo_loss"] == pytest.approx(sum(per_prompt) / 2, **APPROX)
    assert m["nll_loss"] == pytest.approx(sum(nll) / 2, **APPROX)  # trained, and shown
    assert loss == pytest.approx((per_prompt[0] + nll[0] + per_prompt[1] + nll[1]) / 2, **APPROX)
    assert m["skipped/all_correct"] == 1
    zs = [
        dpo_z(case, models, i, c, r, beta)
        for i, row in enumerate(GROUPS[:2])
        for c in (j for j, ok in enumerate(row) if ok)
        for r in (j for j, ok in enumerate(row) if not ok)
    ]
    assert m["reward_margin"] == pytest.approx(sum(zs) / 7, **APPROX)  # over every pair
    assert m["reward_accuracy"] == pytest.approx(sum(v > 0 for v in zs) / 7, **APPROX)


def grpo_terms(case: Case, models, pattern: list[list[bool]], kl_beta: float) -> tuple[list[float], list[float]]:
    """Per prompt with a signal: Σ over its rollouts of (−A·T + β Σ k3); and every rollout's Σ k3."""
    policy, reference = models
    per_prompt, kls = [], []
    for i, row in enumerate(pattern):
        rewards = [1.0 if ok else 0.0 for ok in row]
        if len(set(rewards)) < 2:
            continue
        mean = sum(rewards) / len(rewards)
        total = 0.0
        for j, r in enumerate(rewards):
            ids = response_ids(case, i, j)
            lp = token_logps(policy, case.examples[i].token_ids, ids)
            ref = token_logps(reference, case.examples[i].token_ids, ids)
            k3 = sum(math.exp(b - a) - (b - a) - 1.0 for a, b in zip(lp, ref))
            kls.append(k3)
            total += -(r - mean) * len(ids) + kl_beta * k3  # ρ_t = 1 in value: −A per token
        per_prompt.append(total)
    return per_prompt, kls


def test_grpo_step(tiny_tokenizer, models, pool) -> None:
    kl_beta = 0.05
    case = make_case(tiny_tokenizer, models, pool, GROUPS, _loss("grpo", GRPOConfig(kl_beta=kl_beta)))
    loss, m = run_step(case)
    per_prompt, kls = grpo_terms(case, models, GROUPS, kl_beta)
    assert loss == pytest.approx(sum(per_prompt) / 2, **APPROX)
    assert m["grpo_loss"] == pytest.approx(sum(per_prompt) / 2, **APPROX)
    assert m["kl"] == pytest.approx(sum(kls) / len(kls), **APPROX)
    assert "num_pairs" not in m and "dpo_loss" not in m  # GRPO trains no pairs
    assert m["skipped/all_equal"] == 1 and "skipped/all_correct" not in m


def test_group_dpo_grpo_step_logs_both_terms_and_the_kl(tiny_tokenizer, models, pool) -> None:
    beta, alpha, kl_beta = 0.5, 0.1, 0.05
    loss_config = _loss(
        "group_dpo_grpo",
        GroupDPOGRPOConfig(dpo=DPOTermConfig(beta=beta), grpo=GRPOTermConfig(kl_beta=kl_beta), alpha=alpha),
    )
    case = make_case(tiny_tokenizer, models, pool, GROUPS, loss_config)
    loss, m = run_step(case)
    dpo = group_dpo_terms(case, models, beta)
    grpo, kls = grpo_terms(case, models, GROUPS, kl_beta)
    assert m["dpo_loss"] == pytest.approx(sum(dpo) / 2, **APPROX)
    assert m["grpo_loss"] == pytest.approx(sum(grpo) / 2, **APPROX)
    assert m["kl"] == pytest.approx(sum(kls) / len(kls), **APPROX)
    assert loss == pytest.approx((dpo[0] + alpha * grpo[0] + dpo[1] + alpha * grpo[1]) / 2, **APPROX)


def test_entropy_regulariser_is_added_for_any_objective(tiny_tokenizer, models, pool) -> None:
    coef = 0.3
    plain, _ = run_step(make_case(tiny_tokenizer, models, pool, PAIRS, _loss("dpo", DPOConfig(beta=0.5))))
    case = make_case(tiny_tokenizer, models, pool, PAIRS, _loss("dpo", DPOConfig(beta=0.5), entropy_coef=coef))
    loss, m = run_step(case)
    assert loss == pytest.approx(plain - coef * m["entropy"], **APPROX)


def test_truncated_is_and_mismatch_metrics(tiny_tokenizer, models, pool) -> None:
    beta, shift, cap = 0.5, 0.01, 1.05
    loss_config = _loss("dpo", DPOConfig(beta=beta, importance_sampling="truncated", importance_cap=cap))
    case = make_case(tiny_tokenizer, models, pool, PAIRS, loss_config, logprob_shift=shift)
    loss, m = run_step(case)
    weighted, over = [], 0
    for i, (c, r) in enumerate([(0, 1), (1, 0)]):
        term = dpo_term(case, models, i, c, r, beta)[0]
        log_rho = shift * (len(response_ids(case, i, c)) + len(response_ids(case, i, r)))  # δ = shift per token
        weighted.append(min(math.exp(log_rho), cap) * term)
        over += log_rho > math.log(cap)
    assert loss == pytest.approx(sum(weighted) / 2, **APPROX)
    assert m["is_truncated"] == pytest.approx(over / 2)
    assert m["logprob_diff"] == pytest.approx(shift, abs=2e-5)  # fp32 trainer log-probs against fp64
    assert m["logprob_diff_max"] == pytest.approx(shift, abs=2e-5)  # fp32 trainer log-probs against fp64
    seq = [shift * len(response_ids(case, i, j)) for i in range(2) for j in range(2)]
    assert m["log_is_ratio"] == pytest.approx(sum(seq) / 4, abs=2e-4)
    assert m["log_is_ratio_max"] == pytest.approx(max(seq), abs=2e-4)
    assert m["log_is_ratio_min"] == pytest.approx(min(seq), abs=2e-4)


def test_fixed_pairs_are_a_dpo_selection(tiny_tokenizer, models) -> None:
    policy, reference = models
    beta = 0.5
    eos = tiny_tokenizer.vocab_info.eos_idx
    pairs = [
        PairExample(
            encode(tiny_tokenizer, verifiable_prompt(f"What is {g}?")),
            encode(tiny_tokenizer, f"\\boxed{{{g}}}") + [eos],
            encode(tiny_tokenizer, "\\boxed{0}") + [eos],
            f"pairs:{k}",
        )
        for k, g in enumerate(GOLDS[:2])
    ]
    unit = PreferenceUnit(
        policy,
        build_objective(_loss("dpo", DPOConfig(beta=beta))),
        tiny_tokenizer,
        reference=reference,
        schedule=None,
        seed=0,
        device=CPU,
    )
    bag = MetricBag(CPU)
    unit.prepare_metric_bag(bag)
    unit.set_step_nr(1)
    loss, n = unit.process_batch(PairBatch(pairs), bag)
    terms = []
    for p in pairs:
        pc, pr = (
            sum(token_logps(policy, p.prompt_ids, p.chosen_ids)),
            sum(token_logps(policy, p.prompt_ids, p.rejected_ids)),
        )
        rc = sum(token_logps(reference, p.prompt_ids, p.chosen_ids))
        rr = sum(token_logps(reference, p.prompt_ids, p.rejected_ids))
        z = beta * (pc - rc) - beta * (pr - rr)
        terms.append(math.log1p(math.exp(-z)))
    assert n == 1 and float(loss) == pytest.approx(sum(terms) / 2, **APPROX)
    names = set(bag.metrics)
    assert "num_pairs" in names and not names & {"reward", "rollout_len", "skipped_prompts", "generate_seconds"}


def test_a_step_with_no_signal_anywhere_is_skipped(tiny_tokenizer, models, pool) -> None:
    case = make_case(tiny_tokenizer, models, pool, [[RIGHT, RIGHT], [WRONG, WRONG]], _loss("dpo", DPOConfig(beta=0.5)))
    bag = MetricBag(CPU)
    case.unit.prepare_metric_bag(bag)
    case.unit.set_step_nr(1)
    loss, n = case.unit.process_batch(PromptBatch((case.examples,)), bag)
    assert n == 0 and float(loss) == 0.0 and loss.grad_fn is None  # no path to the model
    assert float(bag.metrics["skipped_steps"].compute()) == 1
    assert math.isnan(float(bag.metrics["loss"].compute()))  # nothing trained: NaN, not 0
