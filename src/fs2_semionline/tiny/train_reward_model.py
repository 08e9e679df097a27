"""Trains the tiny chat reward model on preference pairs, on fairseq2's Trainer.

The reward model is the tiny policy itself (a fairseq2 llama, initialised from the
SFT model, so it starts out knowing the language) whose reward is the logit of one
token, :data:`REWARD_TOKEN`, at the last position of ``prompt + response + <|eot_id|>``.
That row of the output projection is the value head; it starts at zero, so every
reward starts at 0. The loss is Bradley–Terry, −log σ(r(x, y_c) − r(x, y_r)), summed
over pairs (fairseq2 divides the gradients by the number of pairs). Validation on
held-out pairs reports ``pair_accuracy``, the checkpoint selection metric.

:func:`fs2_semionline.glue.hf_export.export_hf_model` with ``reward_token`` writes the result
as a ``LlamaForSequenceClassification`` folder whose score is the same number, which
:class:`~fs2_semionline.rewards.reward_model.RewardModel` (and the reward-model Ray
actors) load like any Hugging Face reward model.

Pairs are JSONL ``{"prompt", "chosen", "rejected"}`` (raw instruction and responses);
``tiny/build_chat_assets.py`` writes them from the synthetic preference of
:mod:`fs2_semionline.data.chat_task`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import fairseq2.recipe  # noqa: F401  (fairseq2 0.8.1: before fairseq2.evaluator, see fs2_semionline.units)
import torch
import torch.nn.functional as F
from fairseq2.data.data_pipeline import read_sequence
from fairseq2.datasets import DataPipelineReader
from fairseq2.device import Device, SupportsDeviceTransfer
from fairseq2.evaluator import EvalUnit
from fairseq2.metrics import Mean, MetricBag
from fairseq2.metrics.formatters import format_as_float
from fairseq2.metrics.recorders import MetricDescriptor
from fairseq2.models.clm import CausalLM
from fairseq2.nn import BatchLayout
from fairseq2.recipe.base import Recipe, RecipeContext
from fairseq2.recipe.config import (
    AdamWConfig,
    CommonSection,
    CosineAnnealingLRConfig,
    GangSection,
    LRSchedulerSection,
    MixedPrecisionConfig,
    ModelSection,
    OptimizerSection,
    RegimeSection,
    TokenizerSection,
    TrainerSection,
)
from fairseq2.runtime.dependency import DependencyContainer
from fairseq2.task import Task
from fairseq2.trainer import TrainUnit
from torch import Tensor
from torch.nn import Module
from typing_extensions import override

from fs2_semionline.core.errors import ConfigError
from fs2_semionline.data.encoding import CONVERSATION, TextEncoder, fairseq2_text_encoder, fill
from fs2_semionline.data.jsonl import LoadReport, iter_jsonl
from fs2_semionline.glue.cli_errors import register_cli_errors
from fs2_semionline.recipes import run_cli

#: The token whose logit is the reward: ``<|finetune_right_pad_id|>``, which no
#: response ever contains, so its output row is free to become the value head.
REWARD_TOKEN = 5


@dataclass(kw_only=True)
class PairDataSection:
    train_path: Path | None = None
    """JSONL of ``prompt``, ``chosen``, ``rejected`` (the chosen response is preferred)."""
    valid_path: Path | None = None
    """Held-out pairs for ``pair_accuracy`` (checkpoint selection)."""
    batch_size: int = 32
    """Pairs per step."""
    max_seq_len: int = 192
    """Longer pairs are counted skips."""
    shuffle_window: int = 0
    """Pairs shuffled together; 0: the whole file (pairs of one prompt must not come in a
    row, or the model learns those prompts instead of the preference)."""


@dataclass(kw_only=True)
class RewardModelTrainConfig:
    model: ModelSection = field(default_factory=lambda: ModelSection(name="tiny_math_sft"))
    tokenizer: TokenizerSection = field(default_factory=lambda: TokenizerSection(name="tiny_math_tokenizer"))
    dataset: PairDataSection = field(default_factory=PairDataSection)
    trainer: TrainerSection = field(
        default_factory=lambda: TrainerSection(mixed_precision=MixedPrecisionConfig(mode="off"), max_grad_norm=1.0)
    )
    optimizer: OptimizerSection = field(
        default_factory=lambda: OptimizerSection(config=AdamWConfig(lr=3e-4, betas=(0.9, 0.95), weight_decay=0.0))
    )
    lr_scheduler: LRSchedulerSection = field(
        default_factory=lambda: LRSchedulerSection(
            config=CosineAnnealingLRConfig(num_warmup_steps=50, final_lr_scale=0.05)
        )
    )
    regime: RegimeSection = field(
        default_factory=lambda: RegimeSection(
            num_steps=1000,
            validate_every_n_steps=200,
            checkpoint_every_n_steps=200,
            publish_metrics_every_n_steps=20,
            score_metric="pair_accuracy",
            save_model_only=True,
        )
    )
    gang: GangSection = field(default_factory=GangSection)
    common: CommonSection = field(default_factory=lambda: CommonSection(seed=2, no_sweep_dir=True))


@dataclass
class PairTokens(SupportsDeviceTransfer):
    """Chosen sequences first, then the rejected ones, right-padded."""

    seqs: Tensor
    seq_lens: list[int]

    def to(self, device: Device, *, non_blocking: bool = False) -> None:
        """In place, as fairseq2's Trainer expects (it ignores a returned copy)."""
        self.seqs = self.seqs.to(device, non_blocking=non_blocking)


def collate_pairs(pairs: list[tuple[list[int], list[int]]], pad_idx: int) -> PairTokens:
    rows = [c for c, _ in pairs] + [r for _, r in pairs]
    seq_lens = [len(r) for r in rows]
    seqs = torch.full((len(rows), max(seq_lens)), pad_idx, dtype=torch.int64)
    for i, ids in enumerate(rows):
        seqs[i, : len(ids)] = torch.as_tensor(ids)
    return PairTokens(seqs, seq_lens)


def sequence_rewards(model: Module, batch: PairTokens) -> Tensor:
    """The reward of every row: the :data:`REWARD_TOKEN` logit at its last token."""
    logits = model(batch.seqs, BatchLayout.of(batch.seqs, batch.seq_lens))
    last = torch.tensor([n - 1 for n in batch.seq_lens], device=batch.seqs.device)
    return logits[torch.arange(len(last), device=last.device), last, REWARD_TOKEN]


class _PairScoring:
    """What training and validation share: the model and the pair metrics."""

    def __init__(self, model: Module) -> None:
        """``model``: the data-parallel facade of the tiny causal LM."""
        self._model = model

    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        for name in ("bt_loss", "pair_accuracy", "reward_margin"):
            metric_bag.add(name, Mean())

    def pair_losses(self, batch: PairTokens, metric_bag: MetricBag) -> Tensor:
        """−log σ(r_c − r_r) of every pair, with the pair metrics updated."""
        rewards = sequence_rewards(self._model, batch)
        n = len(rewards) // 2
        chosen, rejected = rewards[:n], rewards[n:]
        loss = -F.logsigmoid(chosen - rejected)
        metric_bag.get("bt_loss", Mean).update(loss.detach().mean(), weight=n)
        metric_bag.get("pair_accuracy", Mean).update((chosen > rejected).float().mean(), weight=n)
        metric_bag.get("reward_margin", Mean).update((chosen - rejected).detach().mean(), weight=n)
        return loss


class BradleyTerryUnit(_PairScoring, TrainUnit[PairTokens]):
    @override
    def process_batch(self, batch: PairTokens, metric_bag: MetricBag) -> tuple[Tensor, int]:
        loss = self.pair_losses(batch, metric_bag)
        return loss.sum(), len(loss)


class PairAccuracyUnit(_PairScoring, EvalUnit[PairTokens]):
    """Held-out pairs: the same metrics, no loss."""

    @override
    def process_batch(self, batch: PairTokens, metric_bag: MetricBag) -> None:
        self.pair_losses(batch, metric_bag)


def load_pair_tokens(path: Path, encoder: TextEncoder, max_seq_len: int) -> list[tuple[list[int], list[int]]]:
    """Token ids of ``prompt + response + <|eot_id|>`` for both sides of every pair: the
    exact text and encoding :meth:`RewardModel.conversation` builds at scoring time."""
    report = LoadReport()
    pairs = []
    for record in iter_jsonl(Path(path)):
        report.num_read += 1
        prompt = record.require_str("prompt")
        chosen, rejected = (
            encoder.structured(*fill(CONVERSATION, [prompt, record.require_str(k)])) for k in ("chosen", "rejected")
        )
        if max(len(chosen), len(rejected)) > max_seq_len:
            report.skipped["too_long"] += 1
            continue
        pairs.append((chosen, rejected))
    if report.num_skipped:
        from fairseq2.logging import log

        log.warning("{}: skipped {} of {} pairs: {}", path, report.num_skipped, report.num_read, dict(report.skipped))
    return pairs


class RewardModelTrainRecipe(Recipe):
    @override
    def register(self, container: DependencyContainer) -> None:
        register_cli_errors(container)
        for name, display in (("bt_loss", "Bradley-Terry Loss"), ("reward_margin", "Reward Margin")):
            container.collection.register_instance(
                MetricDescriptor, MetricDescriptor(name, display, 90, format_as_float)
            )
        container.collection.register_instance(
            MetricDescriptor,
            MetricDescriptor("pair_accuracy", "Pair Accuracy", 91, format_as_float, higher_better=True),
        )

    @override
    def create_task(self, context: RecipeContext) -> Task:
        config = context.get_config_as(RewardModelTrainConfig)
        data = config.dataset
        if data.train_path is None or data.valid_path is None:
            raise ConfigError(
                "dataset.train_path and dataset.valid_path must name pair JSONL files (prompt, chosen, rejected)"
            )
        tokenizer = context.get_tokenizer()
        encoder = fairseq2_text_encoder(tokenizer)
        pad_idx = tokenizer.vocab_info.pad_idx
        assert pad_idx is not None

        model = context.get_model_as(CausalLM)
        with torch.no_grad():  # the value head starts at zero: every reward starts at 0
            getattr(model, "final_proj").weight[REWARD_TOKEN].zero_()

        def reader(path: Path, shuffle: bool) -> DataPipelineReader[PairTokens]:
            builder = read_sequence(load_pair_tokens(path, encoder, data.max_seq_len))
            if shuffle:
                builder = builder.shuffle(data.shuffle_window, seed=config.common.seed)
            builder = builder.bucket(data.batch_size, drop_remainder=shuffle).map(lambda b: collate_pairs(b, pad_idx))
            return DataPipelineReader(builder.and_return(), context.gangs)

        dp_model = context.get_data_parallel_model()
        return context.create_trainer(
            BradleyTerryUnit(dp_model),
            reader(data.train_path, True),
            [PairAccuracyUnit(dp_model)],
            [reader(data.valid_path, False)],
        )

    @property
    @override
    def config_kls(self) -> type[object]:
        return RewardModelTrainConfig


def main() -> None:
    run_cli(RewardModelTrainRecipe())


if __name__ == "__main__":
    main()
