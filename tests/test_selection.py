"""Pairing rules of arXiv 2506.21495: DPO pairs, GroupDPO sets, GRPO advantages, seeding."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from fs2_semionline.core.seeding import step_rng, step_seed
from fs2_semionline.objectives.selection import (
    SKIP_REASONS,
    Pair,
    PairingStats,
    PairSet,
    grpo_advantages,
    select_dpo_pairs,
    select_pair_sets,
)

NONE_SKIPPED = {r: 0 for r in SKIP_REASONS}


def skipped(stats: PairingStats) -> dict[str, int]:
    return {r: stats.skipped.get(r, 0) for r in SKIP_REASONS}


# ---------------------------------------------------------------------------
# step_rng


def test_step_seed_is_pinned():
    # A changed derivation would silently change the pairs of every resumed run.
    assert step_seed(0, 0) == 16806904857424268966
    assert step_seed(1234, 5) == 9689301978335143393
    assert step_rng(1234, 5).random() == 0.014110234066404326


def test_step_rng_depends_on_seed_and_step():
    a = [step_rng(1, 2).random() for _ in range(3)]
    assert a == [step_rng(1, 2).random() for _ in range(3)]
    assert step_seed(1, 2) != step_seed(1, 3)
    assert step_seed(1, 2) != step_seed(2, 2)
    assert step_seed(12, 3) != step_seed(1, 23)  # separator matters


def test_step_rng_rejects_non_int():
    with pytest.raises(TypeError, match="seed"):
        step_rng("1", 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="step_nr"):
        step_rng(1, 0.5)  # type: ignore[arg-type]


def test_step_rng_same_in_fresh_interpreters_with_different_hash_seeds():
    src = str(Path(__file__).resolve().parents[1] / "src")
    code = (
        "from fs2_semionline.objectives.selection import select_dpo_pairs\nfrom fs2_semionline.core.seeding import step_rng\n"
        "r = step_rng(42, 7)\n"
        "print([r.random() for _ in range(5)])\n"
        "print(select_dpo_pairs([[1, 0, 1, 0, 1, 0]] * 4, 'binary', step_rng(42, 7))[0])\n"
    )
    outs = []
    for hash_seed in ("0", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outs.append(res.stdout)
    r = step_rng(42, 7)
    expected = f"{[r.random() for _ in range(5)]}\n"
    expected += f"{select_dpo_pairs([[1, 0, 1, 0, 1, 0]] * 4, 'binary', step_rng(42, 7))[0]}\n"
    assert outs[0] == outs[1] == expected


# ---------------------------------------------------------------------------
# DPO, binary


def test_binary_pair_from_correct_and_incorrect_sets():
    rewards = [[1.0, 0.0, 1.0, 0.0, 1.0, None, 0.0]]
    chosen_seen, rejected_seen = set(), set()
    for seed in range(200):
        pairs, stats = select_dpo_pairs(rewards, "binary", step_rng(seed, 0))
        (p,) = pairs
        assert p.prompt_idx == 0
        assert p.chosen_idx in {0, 2, 4} and p.chosen_reward == 1.0
        assert p.rejected_idx in {1, 3, 6} and p.rejected_reward == 0.0
        chosen_seen.add(p.chosen_idx)
        rejected_seen.add(p.rejected_idx)
        assert stats.num_used == 1 and stats.num_failed_rewards == 1
    assert chosen_seen == {0, 2, 4}
    assert rejected_seen == {1, 3, 6}


def test_binary_reproducible_and_step_dependent():
    rewards = [[1, 0, 1, 0, 1, 0, 1, 0] for _ in range(16)]
    a, _ = select_dpo_pairs(rewards, "binary", step_rng(3, 10))
    b, _ = select_dpo_pairs(rewards, "binary", step_rng(3, 10))
    c, _ = select_dpo_pairs(rewards, "binary", step_rng(3, 11))
    assert a == b
    assert len(a) == len(c) == 16
    assert a != c


def test_prompt_draws_independent_of_other_prompts_outcome():
    # Each prompt takes one draw whether or not it is skipped, so replacing an
    # earlier prompt by a degenerate one does not shift later prompts' choices.
    later = [1, 0, 1, 0, 1, 0, 1, 0]
    a, _ = select_dpo_pairs([[1, 0, 1, 0], later], "binary", step_rng(5, 1))
    b, sb = select_dpo_pairs([[1, 1, 1, 1], later], "binary", step_rng(5, 1))
    assert sb.skipped["all_correct"] == 1
    assert a[1] == b[0]


def test_binary_failed_excluded():
    for seed in range(20):
        pairs, stats = select_dpo_pairs([[1, None, 0]], "binary", step_rng(seed, 0))
        assert pairs == [Pair(0, 0, 2, 1.0, 0.0)]
        assert stats.num_failed_rewards == 1
        assert stats.num_skipped == 0


def test_binary_skips_with_reasons():
    rewards = [
        [1.0, 1.0, 1.0],  # all_correct
        [0.0, 0.0],  # all_incorrect
        [None, None, 1.0],  # too_few_valid
        [1.0, None, None, 1.0],  # all_correct (two valid, both correct)
        [],  # too_few_valid
        [None, 0.0, 1.0],  # used
        [0.0, None, 0.0, None],  # all_incorrect
    ]
    pairs, stats = select_dpo_pairs(rewards, "binary", step_rng(0, 0))
    assert pairs == [Pair(5, 2, 1, 1.0, 0.0)]
    assert stats.num_prompts == 7
    assert stats.num_used == 1
    assert stats.num_skipped == 6
    assert skipped(stats) == {
        "all_correct": 2,
        "all_incorrect": 2,
        "all_equal": 0,
        "too_few_valid": 2,
    }
    assert stats.num_failed_rewards == 7


@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0, float("nan"), float("inf"), "1"])
def test_invalid_binary_value_raises_naming_prompt_and_rollout(bad):
    with pytest.raises(ValueError, match=r"prompt 1, rollout 2") as exc:
        select_dpo_pairs([[1.0, 0.0], [0.0, 1.0, bad]], "binary", random.Random(0))
    assert repr(bad) in str(exc.value)
    with pytest.raises(ValueError, match=r"prompt 1, rollout 2"):
        select_pair_sets([[1.0, 0.0], [0.0, 1.0, bad]], "binary")


def test_binary_accepts_int_and_bool():
    pairs, _ = select_dpo_pairs([[0, True, False]], "binary", random.Random(0))
    (p,) = pairs
    assert p.chosen_idx == 1 and p.rejected_idx in {0, 2}
    assert isinstance(p.chosen_reward, float)


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="kind"):
        select_dpo_pairs([[1, 0]], "ternary", random.Random(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        select_pair_sets([[1, 0]], "ternary")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# DPO, scalar


def test_scalar_best_vs_worst():
    rewards = [[0.3, -1.5, 2.25, 0.0], [5.0, None, 7.0, 6.0]]
    pairs, stats = select_dpo_pairs(rewards, "scalar", random.Random(0))
    assert pairs == [Pair(0, 2, 1, 2.25, -1.5), Pair(1, 2, 0, 7.0, 5.0)]
    assert stats.num_used == 2 and stats.num_failed_rewards == 1


def test_scalar_ties_random_but_reproducible():
    rewards = [[1.0, 3.0, 0.5, 3.0, 0.5, 2.0]]
    chosen_seen, rejected_seen = set(), set()
    for seed in range(100):
        (p,), _ = select_dpo_pairs(rewards, "scalar", step_rng(seed, 4))
        (q,), _ = select_dpo_pairs(rewards, "scalar", step_rng(seed, 4))
        assert p == q
        assert p.chosen_idx in {1, 3} and p.chosen_reward == 3.0
        assert p.rejected_idx in {2, 4} and p.rejected_reward == 0.5
        chosen_seen.add(p.chosen_idx)
        rejected_seen.add(p.rejected_idx)
    assert chosen_seen == {1, 3}
    assert rejected_seen == {2, 4}


def test_scalar_nan_inf_are_failed():
    rewards = [[float("nan"), 1.0, 2.0], [float("inf"), 0.5, float("-inf")], [0.1, 0.1]]
    pairs, stats = select_dpo_pairs(rewards, "scalar", random.Random(0))
    assert pairs == [Pair(0, 2, 1, 2.0, 1.0)]
    assert stats.num_failed_rewards == 3
    assert skipped(stats) == {**NONE_SKIPPED, "too_few_valid": 1, "all_equal": 1}


def test_scalar_non_number_raises():
    with pytest.raises(ValueError, match=r"prompt 0, rollout 1.*'x'"):
        select_dpo_pairs([[1.0, "x"]], "scalar", random.Random(0))  # type: ignore[list-item]


def test_scalar_skips():
    rewards = [[0.7, 0.7, 0.7], [None, 3.0], [None, None], [2.0, None, 2.0], [1.0, 2.0]]
    pairs, stats = select_dpo_pairs(rewards, "scalar", random.Random(0))
    assert pairs == [Pair(4, 1, 0, 2.0, 1.0)]
    assert skipped(stats) == {**NONE_SKIPPED, "all_equal": 2, "too_few_valid": 2}
    assert stats.num_failed_rewards == 4
    assert (stats.num_prompts, stats.num_used, stats.num_skipped) == (5, 1, 4)


# ---------------------------------------------------------------------------
# GroupDPO


def test_pair_sets_binary():
    rewards = [[1, 0, None, 1, 0, 0], [1, 1], [0, None], [None, 0, 1]]
    sets, stats = select_pair_sets(rewards, "binary")
    assert sets == [PairSet(0, (0, 3), (1, 4, 5)), PairSet(3, (2,), (1,))]
    assert skipped(stats) == {**NONE_SKIPPED, "all_correct": 1, "too_few_valid": 1}
    assert stats.num_failed_rewards == 3
    assert (stats.num_prompts, stats.num_used) == (4, 2)


def test_pair_sets_scalar_mean_split():
    # Strictly above / strictly below the mean of the valid rewards; a reward
    # equal to the mean (prompt 0: indices 1 and 4, mean 2.0) is on neither side.
    rewards = [
        [1.0, 2.0, 3.0, None, 2.0],
        [0.0, 0.0, 0.0, 4.0],  # mean 1.0
        [5.0, 5.0],  # all_equal
        [float("nan"), 1.0],  # too_few_valid (NaN is failed)
        [0.25, 0.5, 0.75],  # mean 0.5 exactly
    ]
    sets, stats = select_pair_sets(rewards, "scalar")
    assert sets == [
        PairSet(0, (2,), (0,)),
        PairSet(1, (3,), (0, 1, 2)),
        PairSet(4, (2,), (0,)),
    ]
    assert skipped(stats) == {**NONE_SKIPPED, "all_equal": 1, "too_few_valid": 1}
    assert stats.num_failed_rewards == 2


def test_pair_sets_binary_equals_scalar_rule():
    rewards = [[1, 0, 1, 1, 0], [0, 1, None, 0]]
    assert select_pair_sets(rewards, "binary")[0] == select_pair_sets(rewards, "scalar")[0]


# ---------------------------------------------------------------------------
# GRPO


def test_grpo_by_hand():
    adv, stats = grpo_advantages([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0]])
    assert adv == [[0.5, -0.5, -0.5, 0.5], [1.0, -1.0, 0.0]]
    assert (stats.num_used, stats.num_skipped, stats.num_failed_rewards) == (2, 0, 0)


def test_grpo_normalize_std():
    eps = 1e-6
    adv, _ = grpo_advantages([[1.0, 0.0, 0.0, 1.0]], normalize_std=True, eps=eps)
    a = 0.5 / (0.5 + eps)  # population std of [1, 0, 0, 1] is 0.5
    assert adv == [[a, -a, -a, a]]
    # [3, 1, 2]: mean 2, population variance 2/3.
    adv, _ = grpo_advantages([[3.0, 1.0, 2.0]], normalize_std=True, eps=0.0)
    s = math.sqrt(2 / 3)
    assert adv[0] == pytest.approx([1 / s, -1 / s, 0.0], rel=1e-12)


def test_grpo_failed_gets_none_and_mean_uses_valid_only():
    adv, stats = grpo_advantages([[1.0, None, 0.0], [2.0, float("nan"), 4.0, float("inf")]])
    assert adv == [[0.5, None, -0.5], [-1.0, None, 1.0, None]]
    assert stats.num_failed_rewards == 3
    assert stats.num_used == 2


def test_grpo_skips_keep_shape_all_none():
    rewards = [[1.0, 1.0, None], [None, None, 0.0], [], [0.0, 0.0], [1.0, 0.0]]
    adv, stats = grpo_advantages(rewards)
    assert adv == [[None, None, None], [None, None, None], [], [None, None], [0.5, -0.5]]
    assert skipped(stats) == {**NONE_SKIPPED, "all_equal": 2, "too_few_valid": 2}
    assert stats.num_failed_rewards == 3
    assert (stats.num_prompts, stats.num_used) == (5, 1)


def test_grpo_non_number_raises():
    with pytest.raises(ValueError, match=r"prompt 1, rollout 0"):
        grpo_advantages([[1.0, 0.0], [object(), 1.0]])  # type: ignore[list-item]


# ---------------------------------------------------------------------------
# Stats


def test_stats_count_prompts_skips_and_failed_rewards():
    _, a = select_dpo_pairs([[1, 1], [0, None, 1]], "binary", random.Random(0))
    _, b = select_dpo_pairs([[0, 0], [None]], "binary", random.Random(0))
    assert (a.num_prompts, a.num_used, a.num_skipped, a.num_failed_rewards) == (2, 1, 1, 1)
    assert skipped(a) == {**NONE_SKIPPED, "all_correct": 1}
    assert (b.num_prompts, b.num_used, b.num_skipped, b.num_failed_rewards) == (2, 0, 2, 1)
    assert skipped(b) == {**NONE_SKIPPED, "all_incorrect": 1, "too_few_valid": 1}
    assert PairingStats().num_skipped == 0


def test_empty_batch():
    assert select_dpo_pairs([], "binary", random.Random(0))[0] == []
    assert select_pair_sets([], "scalar")[0] == []
    adv, stats = grpo_advantages([])
    assert adv == [] and stats.num_prompts == 0


def test_a_mixed_batch_pairs_each_prompt_by_its_own_rule() -> None:
    """Math (binary: random correct vs random incorrect) beside chat (scalar: best vs worst)."""
    rewards = [[1.0, 0.0, 0.0], [0.3, 0.9, 0.1, 0.5]]
    pairs, stats = select_dpo_pairs(rewards, ["binary", "scalar"], step_rng(0, 1))
    assert [(p.prompt_idx, p.chosen_idx) for p in pairs] == [(0, 0), (1, 1)]
    assert pairs[0].rejected_idx in (1, 2) and pairs[1].rejected_idx == 2
    sets, _ = select_pair_sets(rewards, ["binary", "scalar"])
    assert [(s.chosen, s.rejected) for s in sets] == [((0,), (1, 2)), ((1, 3), (0, 2))]
    with pytest.raises(ValueError, match="binary reward must be 0.0, 1.0"):
        select_dpo_pairs(rewards, ["binary", "binary"], step_rng(0, 1))
    with pytest.raises(ValueError, match="1 reward kinds for 2 prompts"):
        select_dpo_pairs(rewards, ["binary"], step_rng(0, 1))
