"""Each objective's metric table: the config key that turns a term on is read from the
table alone, by ``metric_names()`` and by the unit's writer (the loss computes every term)."""

from __future__ import annotations

import pytest
import torch
from fairseq2.metrics import MetricBag

from fs2_semionline.config.training import (
    DPOConfig,
    DPOTermConfig,
    GroupDPOConfig,
    GroupDPOGRPOConfig,
    GRPOConfig,
    GRPOTermConfig,
)
from fs2_semionline.core.metrics import Metric, MetricWriter, Term, add_metrics, enabled_names, under
from fs2_semionline.objectives import OBJECTIVES, LossSection, all_objective_metrics, build_objective

SIDES = ("chosen_logps", "rejected_logps", "chosen_len", "rejected_len", "reward_accuracy", "reward_margin")


@pytest.mark.parametrize(
    ("name", "config", "expected"),
    [
        ("dpo", DPOConfig(), ("dpo_loss", *SIDES, "num_pairs")),
        (
            "dpo",
            DPOConfig(nll_scale=0.2, importance_sampling="truncated"),
            ("dpo_loss", "nll_loss", *SIDES, "num_pairs", "is_truncated"),
        ),
        ("group_dpo", GroupDPOConfig(nll_scale=0.5), ("dpo_loss", "nll_loss", *SIDES, "num_pairs")),
        ("grpo", GRPOConfig(kl_beta=0.0), ("grpo_loss",)),
        ("grpo", GRPOConfig(importance_sampling="truncated"), ("grpo_loss", "kl", "is_truncated")),
        (
            "group_dpo_grpo",
            GroupDPOGRPOConfig(dpo=DPOTermConfig(nll_scale=0.1), grpo=GRPOTermConfig(kl_beta=0.0)),
            ("dpo_loss", "nll_loss", *SIDES, "num_pairs", "grpo_loss"),
        ),
        ("group_dpo_grpo", GroupDPOGRPOConfig(), ("dpo_loss", *SIDES, "num_pairs", "grpo_loss", "kl")),
    ],
)
def test_the_config_turns_terms_on(name: str, config: object, expected: tuple[str, ...]) -> None:
    assert build_objective(LossSection(name=name, config=config)).metric_names() == expected


def test_every_objective_declares_its_terms_once() -> None:
    for entry in OBJECTIVES.values():
        names = [t.name for t in entry.kls.TERMS]
        assert len(names) == len(set(names)), entry.kls.__name__
    # One metric per name across objectives: "is_truncated" is one term, not two.
    assert all_objective_metrics()["is_truncated"].display == "IS Weights Truncated"


def test_a_nested_key_and_an_unset_one() -> None:
    table = under("grpo", (Term("kl", Metric("KL", 1), when="kl_beta"), Term("loss", Metric("L", 2))))
    assert [t.when for t in table] == ["grpo.kl_beta", None]
    assert enabled_names(table, GroupDPOGRPOConfig(grpo=GRPOTermConfig(kl_beta=0.0))) == ("loss",)


def test_the_writer_logs_enabled_terms_and_refuses_undeclared_ones() -> None:
    specs = all_objective_metrics()
    bag = MetricBag(torch.device("cpu"))
    add_metrics(bag, ["dpo_loss"], specs)
    writer = MetricWriter(bag, specs, ["dpo_loss"])
    writer.update_terms({"dpo_loss": (0.5, 2.0), "nll_loss": (0.0, 2.0)})  # nll_loss: computed, off
    assert float(bag.metrics["dpo_loss"].compute()) == 0.5 and "nll_loss" not in bag.metrics
    with pytest.raises(KeyError, match="no objective's TERMS"):
        writer.update_terms({"dpo_los": (0.5, 2.0)})
