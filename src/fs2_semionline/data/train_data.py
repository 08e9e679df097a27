"""The data side of ``lm preference_finetune``: prompts (or fixed pairs) and validation
sets read and encoded, math and chat mixed, and the per-rank batch pipeline.

    math_paths + chat_paths ─► PromptExamples (counted skips) ─► mix (chat_fraction)
        ─► shard per rank ─► shuffle ─► batch per step ─► windows of s steps ─► micro-batches
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairseq2.data.data_pipeline import DataPipeline, read_sequence
from fairseq2.logging import log

from fs2_semionline.config.training import PromptDataSection, ValidationSection
from fs2_semionline.core.errors import ConfigError
from fs2_semionline.core.tasks import task_spec
from fs2_semionline.data.batches import PairBatch, PromptBatch
from fs2_semionline.data.encoding import TextEncoder
from fs2_semionline.data.jsonl import LoadReport, PairExample, PromptExample, load_pairs, load_prompts
from fs2_semionline.data.templates import TASK_TEMPLATES, verifiable_prompt


@dataclass
class TrainingData:
    """What a training run reads: prompts or fixed pairs, and the validation prompts."""

    examples: list[PromptExample] = field(default_factory=list)
    pairs: list[PairExample] = field(default_factory=list)
    valid_examples: list[PromptExample] = field(default_factory=list)
    report: LoadReport = field(default_factory=LoadReport)
    """What reading the training files skipped, per reason."""
    valid_report: LoadReport = field(default_factory=LoadReport)

    @property
    def train_tasks(self) -> frozenset[str]:
        return frozenset(e.task for e in self.examples)

    @property
    def valid_tasks(self) -> frozenset[str]:
        return frozenset(e.task for e in self.valid_examples)


def load_training_data(
    dataset: PromptDataSection,
    valid: ValidationSection,
    *,
    encoder: TextEncoder,
    eos_idx: int,
    max_seq_len: int,
    max_gen_len: int,
    seed: int,
) -> TrainingData:
    """Reads and encodes every file; a set with no usable prompt, or fewer than one
    batch of training prompts, is a configuration error naming its key."""
    data = TrainingData()

    def load(paths: list[Path], task: str, gen_len: int, report: LoadReport) -> list[PromptExample]:
        max_prompt_len = max_seq_len - gen_len if dataset.max_prompt_len is None else dataset.max_prompt_len
        return load_prompts(
            paths,
            task=task,
            template=TASK_TEMPLATES[task],
            encoder=encoder,
            max_prompt_len=max_prompt_len,
            require_answer=task_spec(task).needs_answer,
            report=report,
        )

    valid_report = LoadReport()
    valid_gen_len = valid.max_gen_len or max_gen_len
    data.valid_examples = load(valid.math_paths, "math", valid_gen_len, valid_report)
    data.valid_examples += load(valid.chat_paths, "chat", valid_gen_len, valid_report)
    data.valid_report = valid_report
    _log_skips("validation prompts", valid_report)
    if (valid.math_paths or valid.chat_paths) and not data.valid_examples:
        raise ConfigError(f"validation: no usable prompts ({valid_report.as_dict()})")

    if dataset.pairs_path is not None:
        data.pairs, data.report = _fixed_pairs(dataset, encoder=encoder, eos_idx=eos_idx, max_seq_len=max_seq_len)
        return data
    report = LoadReport()
    math = load(dataset.math_paths, "math", max_gen_len, report)
    chat = load(dataset.chat_paths, "chat", max_gen_len, report)
    data.examples = mix_tasks(math, chat, dataset.chat_fraction, seed=seed)
    data.report = report
    _log_skips("training prompts", report)
    if len(data.examples) < dataset.batch_size:
        raise ConfigError(
            f"dataset.math_paths/chat_paths: {len(data.examples)} usable prompts, fewer than one batch ({report.as_dict()})"
        )
    return data


def _fixed_pairs(
    dataset: PromptDataSection, *, encoder: TextEncoder, eos_idx: int, max_seq_len: int
) -> tuple[list[PairExample], LoadReport]:
    """``dataset.pairs_path`` read and encoded; fewer than one batch is an error."""
    assert dataset.pairs_path is not None
    report = LoadReport()
    pairs = load_pairs(
        Path(dataset.pairs_path),
        template=verifiable_prompt,
        encoder=encoder,
        eos_idx=eos_idx,
        max_seq_len=max_seq_len,
        report=report,
    )
    _log_skips("training pairs", report)
    if len(pairs) < dataset.batch_size:
        raise ConfigError(f"dataset.pairs_path: {len(pairs)} usable pairs, fewer than one batch ({report.as_dict()})")
    return pairs, report


def _log_skips(what: str, report: LoadReport) -> None:
    if report.num_skipped:
        log.warning(
            "{}: skipped {} of {}: {} (counted in metrics/data.jsonl)",
            what,
            report.num_skipped,
            report.num_read,
            dict(report.skipped),
        )


def data_metrics(data: TrainingData) -> dict[str, object]:
    """What reading the files used and skipped, for ``metrics/data.jsonl`` (step 0)."""
    values: dict[str, object] = {
        "num_read": data.report.num_read,
        "num_used": len(data.examples) + len(data.pairs),
        "num_skipped": data.report.num_skipped,
    }
    values.update({f"skipped/{reason}": n for reason, n in sorted(data.report.skipped.items())})
    if data.valid_report.num_read:
        values["valid/num_read"] = data.valid_report.num_read
        values["valid/num_skipped"] = data.valid_report.num_skipped
        values.update({f"valid/skipped/{reason}": n for reason, n in sorted(data.valid_report.skipped.items())})
    return values


def mix_tasks(
    math_examples: list[PromptExample], chat_examples: list[PromptExample], chat_fraction: float | None, *, seed: int
) -> list[PromptExample]:
    """Math and chat prompts in one list (the reader shuffles them together); with a
    fraction, the larger side is subsampled (seeded) so chat is that share of the mix."""
    if chat_fraction is not None and math_examples and chat_examples:
        rng = random.Random(seed)
        want_chat = round(len(math_examples) * chat_fraction / (1 - chat_fraction))
        if want_chat <= len(chat_examples):
            chat_examples = rng.sample(chat_examples, want_chat)
        else:
            want_math = round(len(chat_examples) * (1 - chat_fraction) / chat_fraction)
            math_examples = rng.sample(math_examples, want_math)
    return math_examples + chat_examples


def per_rank_batch_size(batch_size: int, dp_size: int, num_micro: int) -> int:
    """``dataset.batch_size`` is the global batch (prompts per optimizer step, the paper's
    64 or 32), split over the data-parallel ranks and the accumulated micro-batches."""
    if batch_size % (dp_size * num_micro) != 0:
        raise ConfigError(
            f"dataset.batch_size={batch_size} (prompts per optimizer step, over all ranks) must be a multiple of "
            f"data-parallel size {dp_size} x trainer.grad_accumulation.num_batches {num_micro} = {dp_size * num_micro}"
        )
    return batch_size // dp_size


def train_pipeline(
    items: list[Any],
    dataset: PromptDataSection,
    *,
    window: int,
    num_micro: int,
    seed: int,
    dp_rank: int,
    dp_size: int,
) -> DataPipeline:
    """Training batches of data-parallel rank ``dp_rank``: its own shard of the items
    (equal sizes, so no rank runs out first), shuffled, its share of the global batch per
    step, in ``num_micro`` micro-batches. Prompt steps come in windows of ``window``
    steps (one generator sync each): the unit hands a whole window to the generator
    right after its sync. Fixed pairs (``PairExample``) need no window."""
    per_rank = per_rank_batch_size(dataset.batch_size, dp_size, num_micro)
    window_size = 1 if items and isinstance(items[0], PairExample) else window
    steps_per_epoch = len(items) // dp_size // per_rank
    if steps_per_epoch < window_size:
        raise ConfigError(
            f"dataset: {len(items)} usable items make {steps_per_epoch} step(s) of dataset.batch_size="
            f"{dataset.batch_size} per pass, fewer than one sync window of {window_size} steps "
            f"(generator.sync_every_n_steps with generator.work_ahead): no full step could be taken; "
            f"give at least {window_size * dataset.batch_size} prompts"
        )
    builder = (
        read_sequence(items)
        .shard(dp_rank, dp_size)
        .shuffle(dataset.shuffle_window, seed=seed)
        .bucket(per_rank, drop_remainder=True)
    )
    if items and isinstance(items[0], PairExample):
        return builder.yield_from(
            lambda pairs: read_sequence([PairBatch(pairs, micro, num_micro) for micro in range(num_micro)]).and_return()
        ).and_return()

    def micro_batches(group: list[list[PromptExample]]) -> DataPipeline:
        batches = [
            PromptBatch(tuple(group), i, micro, num_micro) for i in range(len(group)) for micro in range(num_micro)
        ]
        return read_sequence(batches).and_return()

    return builder.bucket(window, drop_remainder=True).yield_from(micro_batches).and_return()
