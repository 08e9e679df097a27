"""Mean accuracy ± standard error over N sample sets, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from fs2_semionline.eval.accuracy import accuracy_over_sample_sets


def test_mean_and_stderr_by_hand() -> None:
    # 4 problems x 3 sample sets. Set accuracies: 3/4, 1/4, 2/4.
    rewards = [[1.0, 0.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    stats = accuracy_over_sample_sets(rewards)
    assert stats.per_set == [0.75, 0.25, 0.5]
    assert stats.mean == pytest.approx(0.5)
    # std (ddof=1) of (0.75, 0.25, 0.5) = 0.25; s.e. = 0.25 / sqrt(3)
    assert stats.stderr == pytest.approx(0.25 / math.sqrt(3))
    assert stats.num_failed == 0
    assert str(stats) == "50.0 ± 14.4"


def test_failed_rewards_are_left_out_and_counted_not_zero() -> None:
    rewards = [[1.0, None], [None, 1.0], [0.0, 1.0]]
    stats = accuracy_over_sample_sets(rewards)
    assert stats.per_set == [0.5, 1.0]  # set 0: 1 of 2 scored; set 1: 2 of 2 scored
    assert stats.num_failed == 2


def test_single_sample_set_has_no_stderr() -> None:
    stats = accuracy_over_sample_sets([[1.0], [0.0]])
    assert stats.mean == 0.5 and math.isnan(stats.stderr)


@pytest.mark.parametrize("rewards", [[], [[1.0, 0.0], [1.0]], [[None], [None]]])
def test_invalid_inputs_raise(rewards) -> None:
    with pytest.raises(ValueError):
        accuracy_over_sample_sets(rewards)
