"""Supervised fine-tuning of the tiny model on the synthetic tasks, on fairseq2's Trainer.

Math targets are the worked solutions of ``data/math_task.py`` in the Figure 4 format,
so that the model answers "... The final answer is $\\boxed{...}$. I hope it is
correct."; a record with ``"task": "chat"`` (``data/chat_task.py``) is put in the
Figure 5 template instead. The loss is the summed NLL of the response tokens and the
closing ``<|eot_id|>``; fairseq2 normalises gradients by the returned token count.

    python -m fs2_semionline.tiny.sft OUT_DIR --config dataset.path=train.jsonl
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from fairseq2.data.data_pipeline import read_sequence
from fairseq2.datasets import DataPipelineReader
from fairseq2.device import Device, SupportsDeviceTransfer
from fairseq2.metrics import Mean, MetricBag
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
from typing_extensions import override

from fs2_semionline.core.errors import ConfigError, DataFileError
from fs2_semionline.data.encoding import MARKER, fairseq2_text_encoder, fill
from fs2_semionline.data.jsonl import LoadReport, iter_jsonl
from fs2_semionline.data.templates import EOT, TASK_TEMPLATES
from fs2_semionline.glue.cli_errors import register_cli_errors
from fs2_semionline.glue.extension import TINY_MATH_ARCH
from fs2_semionline.recipes import run_cli
from fs2_semionline.runs.export import register_hf_exporter


@dataclass(kw_only=True)
class SFTDataSection:
    path: Path | None = None
    """JSONL with ``prompt`` and ``solution`` fields (``data/math_task.py`` writes them) and
    an optional ``task`` (``math`` by default, or ``chat``: Figure 5 template)."""
    batch_size: int = 64
    max_seq_len: int = 128
    shuffle_window: int = 10_000


@dataclass(kw_only=True)
class TinySFTConfig:
    model: ModelSection = field(default_factory=lambda: ModelSection(family="llama", arch=TINY_MATH_ARCH))
    tokenizer: TokenizerSection = field(default_factory=lambda: TokenizerSection(name="tiny_math_tokenizer"))
    dataset: SFTDataSection = field(default_factory=SFTDataSection)
    trainer: TrainerSection = field(
        default_factory=lambda: TrainerSection(mixed_precision=MixedPrecisionConfig(mode="off"), max_grad_norm=1.0)
    )
    optimizer: OptimizerSection = field(
        default_factory=lambda: OptimizerSection(config=AdamWConfig(lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1))
    )
    lr_scheduler: LRSchedulerSection = field(
        default_factory=lambda: LRSchedulerSection(
            config=CosineAnnealingLRConfig(num_warmup_steps=50, final_lr_scale=0.05)
        )
    )
    regime: RegimeSection = field(
        default_factory=lambda: RegimeSection(
            num_steps=1000,
            checkpoint_every_n_steps=100,
            checkpoint_after_n_steps=400,
            publish_metrics_every_n_steps=20,
            save_model_only=True,
        )
    )
    gang: GangSection = field(default_factory=GangSection)
    common: CommonSection = field(default_factory=lambda: CommonSection(seed=2, no_sweep_dir=True))


@dataclass
class LMBatch(SupportsDeviceTransfer):
    """Right-padded token ids and a mask of the positions that are targets."""

    seqs: torch.Tensor
    target_mask: torch.Tensor
    seq_lens: list[int]

    def to(self, device: Device, *, non_blocking: bool = False) -> None:
        """In place, as fairseq2's Trainer expects (it ignores a returned copy)."""
        self.seqs = self.seqs.to(device, non_blocking=non_blocking)
        self.target_mask = self.target_mask.to(device, non_blocking=non_blocking)


def collate_lm(examples: list[tuple[list[int], int]], pad_idx: int) -> LMBatch:
    """``examples`` are (token ids, prompt length); targets start after the prompt."""
    seq_lens = [len(ids) for ids, _ in examples]
    seqs = torch.full((len(examples), max(seq_lens)), pad_idx, dtype=torch.int64)
    mask = torch.zeros_like(seqs, dtype=torch.bool)
    for i, (ids, prompt_len) in enumerate(examples):
        seqs[i, : len(ids)] = torch.as_tensor(ids)
        mask[i, prompt_len : len(ids)] = True
    return LMBatch(seqs, mask, seq_lens)


class SFTUnit(TrainUnit[LMBatch]):
    def __init__(self, model: CausalLM) -> None:
        self._model = model

    @override
    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        metric_bag.add("nll_loss", Mean())

    @override
    def process_batch(self, batch: LMBatch, metric_bag: MetricBag) -> tuple[torch.Tensor, int]:
        inputs, targets = batch.seqs[:, :-1], batch.seqs[:, 1:]
        target_mask = batch.target_mask[:, 1:]
        layout = BatchLayout.of(inputs, [n - 1 for n in batch.seq_lens])
        loss = self._model(inputs, layout, targets, target_mask=target_mask, reduction="sum")
        num_targets = int(target_mask.sum())
        metric_bag.get("nll_loss", Mean).update(loss.detach() / num_targets, weight=num_targets)
        return loss, num_targets


class TinySFTRecipe(Recipe):
    @override
    def register(self, container: DependencyContainer) -> None:
        register_cli_errors(container)
        register_hf_exporter(container)

    @override
    def create_task(self, context: RecipeContext) -> Task:
        config = context.get_config_as(TinySFTConfig)
        if config.dataset.path is None:
            raise ConfigError("dataset.path must name the SFT JSONL file (prompt, solution)")
        tokenizer = context.get_tokenizer()
        encoder = fairseq2_text_encoder(tokenizer)
        pad_idx = tokenizer.vocab_info.pad_idx
        if pad_idx is None:
            raise ValueError("the tokenizer has no PAD token")
        report = LoadReport()
        examples: list[tuple[list[int], int]] = []
        for record in iter_jsonl(config.dataset.path):
            report.num_read += 1
            task = record.require_str("task") if "task" in record.data else "math"
            if task not in TASK_TEMPLATES:
                raise DataFileError(
                    record.path, record.line_nr, f"expected one of {sorted(TASK_TEMPLATES)}, got {task!r}", "task"
                )
            prompt_ids = encoder.prompt(TASK_TEMPLATES[task], record.require_str("prompt"))
            response_ids = encoder.structured(*fill(MARKER + EOT, [record.require_str("solution")]))
            if len(prompt_ids) + len(response_ids) > config.dataset.max_seq_len:
                report.skipped["too_long"] += 1
                continue
            examples.append((prompt_ids + response_ids, len(prompt_ids)))
        pipeline = (
            read_sequence(examples)
            .shuffle(config.dataset.shuffle_window, seed=config.common.seed)
            .bucket(config.dataset.batch_size, drop_remainder=True)
            .map(lambda chunk: collate_lm(chunk, pad_idx))
            .and_return()
        )
        reader: DataPipelineReader[LMBatch] = DataPipelineReader(pipeline, context.gangs)
        model = context.get_model_as(CausalLM)
        return context.create_trainer(SFTUnit(model), reader)

    @property
    @override
    def config_kls(self) -> type[object]:
        return TinySFTConfig


def main() -> None:
    run_cli(TinySFTRecipe())


if __name__ == "__main__":
    main()
