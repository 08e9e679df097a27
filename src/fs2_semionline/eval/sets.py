"""Eval sets: every file of ``dataset.paths`` is one set (Math500, AMC23, ...).

Each set is read, checked, sampled and reported on its own, and the sampler is seeded
afresh (``common.seed``) before each set: a set's numbers are then the same whether it
runs alone or beside others, so one command can replace one run per benchmark.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fairseq2.logging import log

from fs2_semionline.core.tasks import TASKS, TaskName
from fs2_semionline.data.encoding import TextEncoder
from fs2_semionline.data.jsonl import LoadReport, PromptExample, load_prompts
from fs2_semionline.data.templates import TASK_TEMPLATES
from fs2_semionline.eval.chat_eval import ChatGeneration, ChatIds, generate_chat
from fs2_semionline.eval.math_eval import MathEvalResult, evaluate_math
from fs2_semionline.generation.protocol import Sampler, SamplingConfig
from fs2_semionline.rewards.math_pool import MathVerifyPool


@dataclass
class EvalSet:
    name: str  # the file stem, made unique (per-set results and export folders)
    path: Path
    examples: list[PromptExample]
    report: LoadReport

    def describe(self) -> dict[str, object]:
        """The keys that say which set a per-set result belongs to."""
        return {"name": self.name, "data": str(self.path)}


def load_eval_sets(paths: Sequence[Path], *, task: TaskName, encoder: TextEncoder) -> list[EvalSet]:
    """Reads every file completely before the model loads, so a bad line anywhere costs
    seconds, not a model load. Length limits come later (:func:`drop_long_prompts`),
    once the model's ``max_seq_len`` is known. Math: Figure 4 template, ``answer``
    required; chat: Figure 5 template, no answer."""
    template = TASK_TEMPLATES[task]
    sets: list[EvalSet] = []
    for name, path in zip(set_names(paths), paths):
        report = LoadReport()
        examples = load_prompts(
            [Path(path)],
            task=task,
            template=template,
            encoder=encoder,
            max_prompt_len=sys.maxsize,
            require_answer=TASKS[task].needs_answer,
            report=report,
        )
        sets.append(EvalSet(name, Path(path), examples, report))
    return sets


def set_names(paths: Sequence[Path]) -> list[str]:
    """File stems; where two collide (``math500/test.jsonl``, ``amc23/test.jsonl``) the
    folder is prefixed (``math500_test``), then a counter if that is not enough."""
    names = [Path(p).stem for p in paths]
    names = [f"{Path(p).parent.name}_{n}" if names.count(n) > 1 else n for p, n in zip(paths, names)]
    return [f"{n}_{i + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def drop_long_prompts(eval_set: EvalSet, max_prompt_len: int) -> None:
    """Prompts longer than ``max_prompt_len`` tokens become counted skips (same key as
    :func:`load_prompts` uses), never truncated prompts."""
    kept = [e for e in eval_set.examples if len(e.token_ids) <= max_prompt_len]
    num_dropped = len(eval_set.examples) - len(kept)
    if num_dropped:
        eval_set.report.skipped["prompt_too_long"] += num_dropped
    eval_set.examples = kept


def pooled_report(sets: Sequence[EvalSet]) -> LoadReport:
    """The load report of all sets together (``prompts`` in results.json)."""
    total = LoadReport()
    for s in sets:
        total.num_read += s.report.num_read
        total.skipped.update(s.report.skipped)
    return total


def evaluate_math_sets(
    sample: Sampler,
    sets: Sequence[EvalSet],
    pool: MathVerifyPool,
    *,
    seed: int,
    num_samples: int,
    sampling: SamplingConfig,
) -> list[MathEvalResult]:
    """One result per set, each sampled with the same seed (see the module doc)."""
    results = []
    for s in sets:
        result = evaluate_math(sample, s.examples, pool, num_samples=num_samples, sampling=sampling, seed=seed)
        log.info("{}: accuracy {} over {} problems", s.name, result.accuracy, result.num_problems)
        results.append(result)
    return results


def generate_chat_sets(
    sample: Sampler,
    sets: Sequence[EvalSet],
    ids: dict[str, ChatIds],
    *,
    seed: int,
    num_samples: int,
    sampling: SamplingConfig,
) -> list[list[ChatGeneration]]:
    """The chat answers of every set, each set sampled with the same seed."""
    return [generate_chat(sample, s.examples, ids, num_samples=num_samples, sampling=sampling, seed=seed) for s in sets]
