"""The losses of arXiv 2506.21495 (Eq. 1, 3, 4, §4.2) against numbers worked out by
hand with ``math`` from the inputs listed in each test, values and gradients alike."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from fs2_semionline.losses import (
    DPOOutput,
    GroupDPOOutput,
    GRPOOutput,
    dpo_loss,
    group_dpo_loss,
    grpo_loss,
    masked_mean,
    sequence_logprobs,
    sum_by_group,
    token_stats,
)

F64 = torch.float64
TIGHT = {"rtol": 1e-12, "atol": 1e-12}
F32 = {"rtol": 1e-6, "atol": 1e-6}


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log π of each target, as the unit reads it from ``token_stats``."""
    return token_stats(logits, targets)[0]


def negative_entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean Σ p log p over the masked tokens, as the unit computes the §4.2 term."""
    targets = torch.zeros(mask.shape, dtype=torch.long)
    return masked_mean(token_stats(logits, targets, mask)[1], mask)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def dpo_by_hand(pc: float, pr: float, rc: float, rr: float, beta: float) -> tuple[float, float]:
    """(loss, z) of Eq. 3 from four summed log-probs."""
    z = beta * (pc - rc) - beta * (pr - rr)
    return -math.log(sigmoid(z)), z


def leaf(values: list, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, requires_grad=True)


def t64(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


# --------------------------------------------------------------------------- logprobs


def test_token_logprobs_is_log_softmax_gathered_by_hand() -> None:
    logits = leaf([[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]], dtype=torch.float32)
    targets = torch.tensor([[1, 2]])
    out = token_logprobs(logits, targets)

    z1 = [1.0, 2.0, 0.5]
    z2 = [0.0, -1.0, 3.0]
    lse1 = math.log(sum(math.exp(v) for v in z1))
    lse2 = math.log(sum(math.exp(v) for v in z2))
    assert out.shape == (1, 2)
    assert out.dtype == torch.float32
    assert out[0, 0].item() == pytest.approx(2.0 - lse1, rel=1e-6)
    assert out[0, 1].item() == pytest.approx(3.0 - lse2, rel=1e-6)

    # d log p_target / d logit_k = 1[k = target] − p_k
    out.sum().backward()
    p1 = [math.exp(v - lse1) for v in z1]
    p2 = [math.exp(v - lse2) for v in z2]
    expected = [[[-p1[0], 1 - p1[1], -p1[2]], [-p2[0], -p2[1], 1 - p2[2]]]]
    assert_close(logits.grad, torch.tensor(expected, dtype=torch.float32), **F32)


def test_token_logprobs_computes_in_float32_from_bf16() -> None:
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0]]], dtype=torch.bfloat16)
    out = token_logprobs(logits, torch.tensor([[3]]))
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(-math.log(4.0), rel=1e-6)


def test_token_logprobs_reads_negative_ignore_index_as_token_zero() -> None:
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    out = token_logprobs(logits, torch.tensor([[-100]]))
    assert out.item() == pytest.approx(math.log(0.25), rel=1e-6)


def test_sequence_logprobs_ignores_padded_positions() -> None:
    token_logps = leaf(
        [
            [-1.0, -2.0, 1e30, -1e30],
            [-0.5, float("nan"), float("inf"), float("-inf")],
            [7.0, 1e30, float("nan"), -3.0],
        ]
    )
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    out = sequence_logprobs(token_logps, mask)
    assert_close(out, t64([-3.0, -0.5, 0.0]), **TIGHT)

    out.sum().backward()
    assert_close(token_logps.grad, mask.to(F64), **TIGHT)


# --------------------------------------------------------------------------- DPO (Eq. 3)


def test_dpo_value_and_gradient_by_hand() -> None:
    beta = 0.1
    pc_v, pr_v, rc_v, rr_v = [-5.0, -2.0], [-7.0, -1.0], [-6.0, -3.0], [-6.5, -4.0]
    pc, pr = leaf(pc_v), leaf(pr_v)
    out = dpo_loss(pc, pr, t64(rc_v), t64(rr_v), beta=beta)
    assert isinstance(out, DPOOutput)

    hand = [dpo_by_hand(pc_v[i], pr_v[i], rc_v[i], rr_v[i], beta) for i in range(2)]
    # Pair 0: z = 0.1·1 − 0.1·(−0.5) = 0.15; pair 1: z = 0.1·1 − 0.1·3 = −0.2.
    assert hand[0][1] == pytest.approx(0.15)
    assert hand[1][1] == pytest.approx(-0.2)
    assert_close(out.loss, t64([h[0] for h in hand]), **TIGHT)
    assert_close(out.dpo_loss, out.loss, **TIGHT)
    assert_close(out.nll_loss, t64([0.0, 0.0]), **TIGHT)
    assert_close(out.chosen_rewards, t64([0.1 * 1.0, 0.1 * 1.0]), **TIGHT)
    assert_close(out.rejected_rewards, t64([0.1 * -0.5, 0.1 * 3.0]), **TIGHT)
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad

    out.loss.sum().backward()
    g = [beta * (1.0 - sigmoid(h[1])) for h in hand]
    assert_close(pc.grad, t64([-g[0], -g[1]]), **TIGHT)
    assert_close(pr.grad, t64([g[0], g[1]]), **TIGHT)


def test_dpo_is_stable_for_large_margins() -> None:
    pc = leaf([-1000.0])
    out = dpo_loss(pc, t64([0.0]), t64([0.0]), t64([0.0]), beta=1.0)  # z = −1000
    assert out.loss.item() == pytest.approx(1000.0, rel=1e-12)
    out.loss.sum().backward()
    assert pc.grad.item() == pytest.approx(-1.0, rel=1e-12)


def test_dpo_length_normalised_by_hand() -> None:
    beta = 0.5
    pc, pr = leaf([-6.0]), leaf([-8.0])
    rc, rr = t64([-4.5]), t64([-10.0])
    lc, lr = torch.tensor([3]), torch.tensor([4])
    out = dpo_loss(pc, pr, rc, rr, beta=beta, chosen_lens=lc, rejected_lens=lr, length_normalize=True)

    # Chosen: −6/3 − (−4.5/3) = −0.5; rejected: −8/4 − (−10/4) = 0.5; z = 0.5·(−0.5 − 0.5).
    z = beta * (-6.0 / 3 + 4.5 / 3) - beta * (-8.0 / 4 + 10.0 / 4)
    assert z == pytest.approx(-0.5)
    assert out.loss.item() == pytest.approx(math.log(1.0 + math.exp(0.5)), rel=1e-12)
    assert out.chosen_rewards.item() == pytest.approx(-0.25, rel=1e-12)
    assert out.rejected_rewards.item() == pytest.approx(0.25, rel=1e-12)

    out.loss.sum().backward()
    g = beta * (1.0 - sigmoid(z))
    assert pc.grad.item() == pytest.approx(-g / 3, rel=1e-12)
    assert pr.grad.item() == pytest.approx(g / 4, rel=1e-12)


def test_dpo_normalisation_without_lengths_raises() -> None:
    x = t64([-1.0])
    with pytest.raises(ValueError):
        dpo_loss(x, x, x, x, beta=0.1, length_normalize=True)
    with pytest.raises(ValueError):
        dpo_loss(x, x, x, x, beta=0.1, chosen_lens=torch.tensor([2]), length_normalize=True)
    with pytest.raises(ValueError):
        dpo_loss(x, x, x, x, beta=0.1, nll_scale=1.0, nll_length_normalize=True)


@pytest.mark.parametrize("normalised", [False, True])
def test_dpo_nll_term_on_chosen_by_hand(normalised: bool) -> None:
    beta, scale = 0.1, 0.2
    pc, pr = leaf([-6.0]), leaf([-7.0])
    rc, rr = t64([-5.0]), t64([-8.0])
    out = dpo_loss(
        pc,
        pr,
        rc,
        rr,
        beta=beta,
        chosen_lens=torch.tensor([3]),
        nll_scale=scale,
        nll_length_normalize=normalised,
    )
    dpo, z = dpo_by_hand(-6.0, -7.0, -5.0, -8.0, beta)  # the DPO term is never normalised here
    nll = scale * 6.0 / (3 if normalised else 1)  # 0.4 or 1.2
    assert out.dpo_loss.item() == pytest.approx(dpo, rel=1e-12)
    assert out.nll_loss.item() == pytest.approx(nll, rel=1e-12)
    assert out.loss.item() == pytest.approx(dpo + nll, rel=1e-12)

    out.loss.sum().backward()
    g = beta * (1.0 - sigmoid(z))
    assert pc.grad.item() == pytest.approx(-g - scale / (3 if normalised else 1), rel=1e-12)
    assert pr.grad.item() == pytest.approx(g, rel=1e-12)


# --------------------------------------------------------------------------- GroupDPO (Eq. 4)

POLICY = [-3.0, -4.5, -6.0, -5.0, -7.5, -2.0, -2.5, -9.0]
REF = [-3.5, -4.0, -5.5, -5.5, -7.0, -2.2, -2.0, -8.0]


def test_group_dpo_is_mean_of_its_six_pairs() -> None:
    beta = 0.3
    policy = leaf(POLICY[:5])
    out = group_dpo_loss(policy, t64(REF[:5]), [([0, 1], [2, 3, 4])], beta=beta)
    assert isinstance(out, GroupDPOOutput)

    pairs = [(c, r) for c in (0, 1) for r in (2, 3, 4)]
    hand = {(c, r): dpo_by_hand(POLICY[c], POLICY[r], REF[c], REF[r], beta) for c, r in pairs}
    assert out.loss.shape == (1,)
    assert out.loss.item() == pytest.approx(sum(h[0] for h in hand.values()) / 6, rel=1e-12)
    assert out.num_pairs.tolist() == [6]
    assert_close(out.chosen_rewards, t64([beta * (POLICY[c] - REF[c]) for c, _ in pairs]), **TIGHT)
    assert_close(out.rejected_rewards, t64([beta * (POLICY[r] - REF[r]) for _, r in pairs]), **TIGHT)

    out.loss.sum().backward()
    g = {k: beta * (1.0 - sigmoid(z)) for k, (_, z) in hand.items()}
    expected = [
        -sum(g[(0, r)] for r in (2, 3, 4)) / 6,
        -sum(g[(1, r)] for r in (2, 3, 4)) / 6,
        *[sum(g[(c, r)] for c in (0, 1)) / 6 for r in (2, 3, 4)],
    ]
    assert_close(policy.grad, t64(expected), **TIGHT)


def test_group_dpo_two_prompts_are_independent() -> None:
    beta = 0.3
    groups = [([0, 1], [2, 3, 4]), ([5], [6, 7])]
    policy = leaf(POLICY)
    out = group_dpo_loss(policy, t64(REF), groups, beta=beta)
    alone = group_dpo_loss(t64(POLICY[:5]), t64(REF[:5]), groups[:1], beta=beta)

    assert out.num_pairs.tolist() == [6, 2]
    assert out.loss[0].item() == pytest.approx(alone.loss.item(), rel=1e-12)
    h6 = dpo_by_hand(POLICY[5], POLICY[6], REF[5], REF[6], beta)
    h7 = dpo_by_hand(POLICY[5], POLICY[7], REF[5], REF[7], beta)
    assert out.loss[1].item() == pytest.approx((h6[0] + h7[0]) / 2, rel=1e-12)

    # Prompt 1's loss has no gradient into prompt 0's responses.
    out.loss[1].backward()
    g6, g7 = beta * (1 - sigmoid(h6[1])), beta * (1 - sigmoid(h7[1]))
    assert_close(policy.grad, t64([0, 0, 0, 0, 0, -(g6 + g7) / 2, g6 / 2, g7 / 2]), **TIGHT)


def test_group_dpo_length_normalised_and_nll_by_hand() -> None:
    beta, scale = 0.5, 0.1
    policy = leaf([-6.0, -8.0, -3.0])
    ref = t64([-4.5, -10.0, -2.0])
    lens = torch.tensor([3, 4, 1])
    out = group_dpo_loss(
        policy,
        ref,
        [([0], [1, 2])],
        beta=beta,
        lens=lens,
        length_normalize=True,
        nll_scale=scale,
        nll_length_normalize=True,
    )
    z1 = beta * (-6.0 / 3 + 4.5 / 3) - beta * (-8.0 / 4 + 10.0 / 4)
    z2 = beta * (-6.0 / 3 + 4.5 / 3) - beta * (-3.0 / 1 + 2.0 / 1)
    dpo = (-math.log(sigmoid(z1)) - math.log(sigmoid(z2))) / 2
    nll = scale * 6.0 / 3
    assert out.dpo_loss.item() == pytest.approx(dpo, rel=1e-12)
    assert out.nll_loss.item() == pytest.approx(nll, rel=1e-12)
    assert out.loss.item() == pytest.approx(dpo + nll, rel=1e-12)


def test_group_dpo_rejects_bad_groups() -> None:
    x = t64([-1.0, -2.0, -3.0])
    with pytest.raises(ValueError):
        group_dpo_loss(x, x, [([0, 1], [])], beta=0.1)
    with pytest.raises(ValueError):
        group_dpo_loss(x, x, [([], [2])], beta=0.1)
    with pytest.raises(ValueError):
        group_dpo_loss(x, x, [], beta=0.1)
    with pytest.raises(ValueError):
        group_dpo_loss(x, x, [([0], [3])], beta=0.1)
    with pytest.raises(ValueError):
        group_dpo_loss(x, x, [([0, 1], [1, 2])], beta=0.1)
    with pytest.raises(ValueError):
        group_dpo_loss(x, x, [([0], [1])], beta=0.1, length_normalize=True)


# --------------------------------------------------------------------------- GRPO (Eq. 1)

NEG_INF = float("-inf")


def test_grpo_on_policy_value_and_gradient() -> None:
    # Padding holds -inf: it must reach neither value nor gradient.
    logps = leaf([[-1.0, -0.5, -2.0], [-0.3, -1.5, NEG_INF]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    out = grpo_loss(logps, mask, t64([0.5, -1.0]))
    assert isinstance(out, GRPOOutput)

    # ρ = 1 in value: L_i = −Σ_t A_i.
    assert_close(out.loss, t64([-3 * 0.5, -2 * -1.0]), **TIGHT)
    assert_close(out.policy_loss, out.loss, **TIGHT)
    assert_close(out.kl, t64([0.0, 0.0]), **TIGHT)

    out.loss.sum().backward()
    assert_close(logps.grad, t64([[-0.5, -0.5, -0.5], [1.0, 1.0, 0.0]]), **TIGHT)


def k3_by_hand(ref: float, logp: float) -> float:
    d = ref - logp
    return math.exp(d) - d - 1.0


def test_grpo_k3_kl_value_and_gradient() -> None:
    beta = 0.04
    lp = [[-1.0, -0.5, -2.0], [-0.3, -1.5, 0.0]]
    rf = [[-1.2, -0.4, -2.5], [-0.3, -1.0, 5.0]]
    adv = [0.5, -1.0]
    valid = [[1, 1, 1], [1, 1, 0]]
    logps = leaf(lp)
    out = grpo_loss(logps, torch.tensor(valid), t64(adv), beta=beta, ref_token_logps=t64(rf))

    kl = [sum(k3_by_hand(rf[s][t], lp[s][t]) for t in range(3) if valid[s][t]) for s in range(2)]
    # e.g. first token: exp(−0.2) + 0.2 − 1
    assert k3_by_hand(-1.2, -1.0) == pytest.approx(math.exp(-0.2) - 0.8)
    assert_close(out.kl, t64(kl), **TIGHT)
    n = [3, 2]
    assert_close(out.loss, t64([-n[s] * adv[s] + beta * kl[s] for s in range(2)]), **TIGHT)

    out.loss.sum().backward()
    grad = [
        [(-adv[s] + beta * (1 - math.exp(rf[s][t] - lp[s][t]))) if valid[s][t] else 0.0 for t in range(3)]
        for s in range(2)
    ]
    assert_close(logps.grad, t64(grad), **TIGHT)

    # d k3 / d logp = 1 − exp(ref − logp), on the kl output itself.
    logps2 = leaf(lp)
    out2 = grpo_loss(logps2, torch.tensor(valid), t64(adv), beta=beta, ref_token_logps=t64(rf))
    out2.kl.sum().backward()
    dk3 = [[(1 - math.exp(rf[s][t] - lp[s][t])) if valid[s][t] else 0.0 for t in range(3)] for s in range(2)]
    assert_close(logps2.grad, t64(dk3), **TIGHT)


def test_grpo_length_normalize_divides_by_token_count() -> None:
    beta = 0.1
    lp = [[-1.0, -0.5, -2.0, 0.0], [-0.3, -1.5, 0.0, 0.0]]
    rf = [[-1.2, -0.4, -2.5, 0.0], [-0.1, -1.0, 0.0, 0.0]]
    valid = [[1, 1, 1, 0], [1, 1, 0, 0]]
    adv = [0.5, -1.0]
    logps = leaf(lp)
    out = grpo_loss(logps, torch.tensor(valid), t64(adv), beta=beta, ref_token_logps=t64(rf), length_normalize=True)
    n = [3, 2]
    kl = [sum(k3_by_hand(rf[s][t], lp[s][t]) for t in range(n[s])) / n[s] for s in range(2)]
    assert_close(out.policy_loss, t64([-0.5, 1.0]), **TIGHT)
    assert_close(out.kl, t64(kl), **TIGHT)
    assert_close(out.loss, t64([-0.5 + beta * kl[0], 1.0 + beta * kl[1]]), **TIGHT)

    out.loss.sum().backward()
    grad = [
        [((-adv[s] + beta * (1 - math.exp(rf[s][t] - lp[s][t]))) / n[s]) if valid[s][t] else 0.0 for t in range(4)]
        for s in range(2)
    ]
    assert_close(logps.grad, t64(grad), **TIGHT)


def test_grpo_beta_without_reference_raises() -> None:
    x = torch.zeros(1, 2, dtype=F64)
    with pytest.raises(ValueError):
        grpo_loss(x, torch.ones(1, 2), t64([1.0]), beta=0.1)
    # β = 0 needs no reference forward pass.
    assert grpo_loss(x, torch.ones(1, 2), t64([1.0]), beta=0.0).loss.item() == pytest.approx(-2.0)


# --------------------------------------------------------------------------- advantages


# --------------------------------------------------------------------------- entropy (§4.2)


def test_negative_entropy_uniform_and_masked_by_hand() -> None:
    logits = torch.tensor([[[0.3, 0.3, 0.3, 0.3], [9.0, -4.0, 1.0, 2.0]], [[5.0, 5.0, 5.0, 5.0], [0.0, 1.0, 2.0, 3.0]]])
    mask = torch.tensor([[1, 0], [1, 0]])
    assert negative_entropy(logits, mask).item() == pytest.approx(-math.log(4.0), rel=1e-6)


def test_negative_entropy_non_uniform_value_and_gradient() -> None:
    # Token 0: p = (1/4, 3/4); token 1: uniform over 2; token 2: masked garbage.
    logits = leaf([[[0.0, math.log(3.0)], [1.0, 1.0], [50.0, -50.0]]], dtype=torch.float32)
    mask = torch.tensor([[True, True, False]])
    out = negative_entropy(logits, mask)
    f0 = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    f1 = math.log(0.5)
    assert out.item() == pytest.approx((f0 + f1) / 2, rel=1e-6)

    # d(Σ p log p)/d z_k = p_k (log p_k − Σ p log p), averaged over 2 valid tokens.
    out.backward()
    expected = [[[0.25 * (math.log(0.25) - f0) / 2, 0.75 * (math.log(0.75) - f0) / 2], [0.0, 0.0], [0.0, 0.0]]]
    assert_close(logits.grad, torch.tensor(expected), **F32)


def test_negative_entropy_with_minus_inf_logit_has_no_nan() -> None:
    logits = leaf([[[0.0, NEG_INF, 0.0]]], dtype=torch.float32)
    out = negative_entropy(logits, torch.ones(1, 1))
    assert out.item() == pytest.approx(math.log(0.5), rel=1e-6)
    out.backward()
    assert torch.isfinite(logits.grad).all()


# --------------------------------------------------------------------------- combined (§4.2)


def test_sum_by_group_by_hand() -> None:
    per_seq = t64([1.0, -2.0, 0.5, 4.0, -1.0])
    prompt_ids = torch.tensor([0, 0, 1, 1, 1])
    assert_close(sum_by_group(per_seq, prompt_ids, 2), t64([-1.0, 3.5]), **TIGHT)


def test_combined_gradient_is_groupdpo_plus_alpha_grpo() -> None:
    beta, alpha = 0.3, 0.01
    # Prompt with 1 correct (reward 1) and 2 incorrect rollouts, token log-probs [3, 2].
    tok = leaf([[-1.0, -2.0], [-0.5, NEG_INF], [-1.5, -0.25]])
    mask = torch.tensor([[1, 1], [1, 0], [1, 1]])
    ref_seq = t64([-2.5, -1.0, -2.0])
    seq = sequence_logprobs(tok, mask)
    gdpo = group_dpo_loss(seq, ref_seq, [([0], [1, 2])], beta=beta)
    adv = t64([2 / 3, -1 / 3, -1 / 3])  # rewards (1, 0, 0) minus their mean
    grpo = grpo_loss(tok, mask, adv)
    loss = gdpo.loss + alpha * sum_by_group(grpo.loss, torch.tensor([0, 0, 0]), 1)

    z1 = beta * (-3.0 + 2.5) - beta * (-0.5 + 1.0)
    z2 = beta * (-3.0 + 2.5) - beta * (-1.75 + 2.0)
    value = (-math.log(sigmoid(z1)) - math.log(sigmoid(z2))) / 2 + alpha * -(2 * (2 / 3) + 1 * (-1 / 3) + 2 * (-1 / 3))
    assert loss.item() == pytest.approx(value, rel=1e-12)

    loss.sum().backward()
    g1, g2 = beta * (1 - sigmoid(z1)), beta * (1 - sigmoid(z2))
    a = [2 / 3, -1 / 3, -1 / 3]
    expected = [
        [-(g1 + g2) / 2 - alpha * a[0]] * 2,
        [g1 / 2 - alpha * a[1], 0.0],
        [g2 / 2 - alpha * a[2]] * 2,
    ]
    assert_close(tok.grad, t64(expected), **TIGHT)


# --------------------------------------------------------------------------- degenerate cases


def test_empty_response_gives_zeros_and_no_nan() -> None:
    logits = leaf([[[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]], [[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]]], dtype=torch.float32)
    targets = torch.tensor([[2, 0], [0, 0]])
    mask = torch.tensor([[1, 1], [0, 0]])  # response 1 is empty
    tok = token_logprobs(logits, targets).double()
    seq = sequence_logprobs(tok, mask)
    assert seq[1].item() == 0.0

    ref = tok.detach() - 0.1
    out = grpo_loss(tok, mask, t64([0.5, -0.5]), beta=0.1, ref_token_logps=ref, length_normalize=True)
    assert out.loss[1].item() == 0.0 and out.kl[1].item() == 0.0
    ent = negative_entropy(logits[1:], mask[1:])
    assert ent.item() == 0.0
    (out.loss.sum() + ent + seq.sum()).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[1].abs().max().item() == 0.0

    # A length-normalised DPO pair with an empty response stays finite.
    pc = leaf([0.0])
    d = dpo_loss(
        pc,
        t64([-2.0]),
        t64([0.0]),
        t64([-3.0]),
        beta=0.1,
        chosen_lens=torch.tensor([0]),
        rejected_lens=torch.tensor([2]),
        length_normalize=True,
        nll_scale=1.0,
        nll_length_normalize=True,
    )
    # z = 0.1·0 − 0.1·(−1 + 1.5) = −0.05
    assert d.loss.item() == pytest.approx(-math.log(sigmoid(-0.05)), rel=1e-12)
    d.loss.sum().backward()
    assert torch.isfinite(pc.grad).all()


def test_negative_entropy_empty_mask_is_zero_without_nan() -> None:
    logits = leaf([[[1.0, 2.0], [3.0, -1.0]]], dtype=torch.float32)
    out = negative_entropy(logits, torch.zeros(1, 2, dtype=torch.bool))
    assert out.item() == 0.0
    out.backward()
    assert logits.grad.abs().max().item() == 0.0


def test_token_stats_in_chunks_equals_one_pass_value_and_gradient() -> None:
    """The fp32 softmax runs a chunk of tokens at a time under checkpointing: same values
    and gradients as one pass, and masked-out positions are 0 and get no gradient."""
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7, dtype=torch.bfloat16, requires_grad=True)
    targets = torch.randint(0, 7, (3, 5))
    mask = torch.rand(3, 5) > 0.3
    weights = torch.randn(3, 5)
    grads = []
    for chunk in (2, 1000):
        lp, ne = token_stats(logits, targets, mask, chunk_tokens=chunk)
        ((lp * weights).sum() + ne.sum()).backward()
        grads.append(logits.grad.clone())
        logits.grad = None
        full = torch.log_softmax(logits.detach().float(), dim=-1)
        assert_close(lp, torch.where(mask, full.gather(-1, targets.unsqueeze(-1)).squeeze(-1), 0.0), **F32)
        assert_close(ne, torch.where(mask, (full.exp() * full).sum(-1), 0.0), **F32)
    assert_close(grads[0], grads[1], rtol=1e-2, atol=1e-3)  # bf16 gradients
    assert grads[0][~mask].abs().max().item() == 0.0


def test_mismatch_statistics_by_hand() -> None:
    from fs2_semionline.losses import mismatch

    train = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.25, 9.0]])
    gen = torch.tensor([[-1.5, -2.0, -1.0], [-0.5, -1.25, -7.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    off = mismatch(train, gen, mask)
    # δ = [0.5, 0, -2] and [0, 1] (the padded 9 vs -7 is ignored)
    assert off.num_tokens == 5
    assert off.mean_abs == pytest.approx((0.5 + 0 + 2 + 0 + 1) / 5)
    assert off.max_abs == pytest.approx(2.0)
    assert off.seq_log_ratio.tolist() == pytest.approx([-1.5, 1.0])


def test_truncated_weights_cap_the_ratio_without_overflow() -> None:
    from fs2_semionline.losses import truncated_weights

    w = truncated_weights(torch.tensor([math.log(0.5), math.log(3.0), 1000.0], requires_grad=True), cap=2.0)
    assert w.tolist() == pytest.approx([0.5, 2.0, 2.0])
    assert not w.requires_grad
    with pytest.raises(ValueError, match="cap must be > 0"):
        truncated_weights(torch.zeros(1), cap=0.0)


def test_grpo_token_weights_scale_each_tokens_gradient() -> None:
    logps = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    mask = torch.tensor([[True, True, False]])
    weights = torch.tensor([[0.5, 2.0, 7.0]])
    out = grpo_loss(logps, mask, torch.tensor([3.0]), token_weights=weights)
    out.loss.sum().backward()
    # d/dlogp_t of −w_t·A·exp(logp_t − sg(logp_t)) = −w_t·A at the sampled tokens; 0 on padding.
    assert logps.grad[0].tolist() == pytest.approx([-1.5, -6.0, 0.0])
    assert out.loss.item() == pytest.approx(-(0.5 + 2.0) * 3.0)
