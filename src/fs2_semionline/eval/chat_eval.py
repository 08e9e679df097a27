"""Chat (non-verifiable) evaluation: generations only, exported for the paper's judges.

The paper scores chat models with AlpacaEval 2.0 (LC win rate) and Arena-Hard (v0.1),
both judged by GPT-4 outside this package. This module samples the answers (Figure 5
template, temperature 0.6, top-p 0.9) and writes them in the two tools' input formats:

* ``alpaca_eval.json``: a JSON list of ``{"instruction", "output", "generator",
  "dataset"}`` (what ``alpaca_eval --model_outputs FILE`` reads; AlpacaEval pairs
  outputs with its reference outputs by ``instruction``, so it must be the benchmark's
  instruction verbatim). One output per instruction: with ``num_samples`` > 1 the
  first sample is exported, all of them are in ``generations.jsonl``.
* ``arena_hard.jsonl``: one line per question, ``{"question_id", "answer_id",
  "model_id", "choices": [{"index", "turns": [{"content", "token_len"}]}], "tstamp"}``
  (Arena-Hard-Auto v0.1 ``gen_answer.py``; one choice per sample). Arena-Hard names
  a model after its answer file: copy it to
  ``data/arena-hard-v0.1/model_answer/<model_id>.jsonl``.

Input JSONL fields, one line per prompt:

* ``prompt`` (required, string): the instruction, sent as it is in the user turn and
  exported as AlpacaEval's ``instruction``;
* ``question_id`` or else ``id`` (optional, string or integer): Arena-Hard's
  ``question_id``; without one, ``<file stem>:<line>`` is used;
* ``dataset`` (optional, string): AlpacaEval's ``dataset`` column; default: the file stem.

Other fields are ignored, so the benchmarks' own files need one key renamed, e.g.
``jq -c '.[] | {prompt: .instruction, dataset}' alpaca_eval.json`` (AlpacaEval's eval
set), ``jq -c '{question_id, prompt: .turns[0].content}' question.jsonl`` (Arena-Hard
v0.1 as first released) or ``jq -c '{question_id: .uid, prompt}' question.jsonl``
(its 2025 re-release).

``token_len`` counts the model's own tokens (EOS excluded); Arena-Hard counts with
tiktoken, which only changes the average length it prints.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fs2_semionline.core.errors import DataFileError
from fs2_semionline.data.jsonl import PromptExample, iter_jsonl
from fs2_semionline.generation.protocol import Completion, Sampler, SamplingConfig
from fs2_semionline.rewards.routing import RewardModelClient, RewardRouter

ID_FIELDS: tuple[str, ...] = ("question_id", "id")
"""Input fields read, in this order, as Arena-Hard's ``question_id``."""


@dataclass(frozen=True)
class ChatIds:
    """What the judges need back from the input line besides the prompt."""

    question_id: str | int
    dataset: str


def read_chat_ids(path: Path) -> dict[str, ChatIds]:
    """Ids of every line of ``path``, keyed like ``PromptExample.source`` ("file:line").

    A mistyped or repeated id is an error naming file, line and field: two answers with
    one ``question_id`` would silently replace each other in Arena-Hard.
    """
    path = Path(path)
    ids: dict[str, ChatIds] = {}
    first_line: dict[str | int, int] = {}
    for record in iter_jsonl(path):
        question_id: str | int = f"{path.stem}:{record.line_nr}"
        for name in ID_FIELDS:
            if name in record.data:
                value = record.data[name]
                if isinstance(value, bool) or not isinstance(value, (str, int)):
                    raise DataFileError(
                        path, record.line_nr, f"expected a string or an integer, got {type(value).__name__}", name
                    )
                if value in first_line:
                    raise DataFileError(
                        path, record.line_nr, f"duplicate id {value!r} (first on line {first_line[value]})", name
                    )
                first_line[value] = record.line_nr
                question_id = value
                break
        dataset = record.require_str("dataset") if "dataset" in record.data else path.stem
        ids[f"{record.path}:{record.line_nr}"] = ChatIds(question_id, dataset)
    return ids


@dataclass(frozen=True)
class ChatGeneration:
    example: PromptExample
    ids: ChatIds
    completions: list[Completion]


def generate_chat(
    sample: Sampler,
    examples: Sequence[PromptExample],
    ids: dict[str, ChatIds],
    *,
    num_samples: int,
    sampling: SamplingConfig,
    seed: int,
) -> list[ChatGeneration]:
    """``num_samples`` answers per prompt from the same sampler as the math evaluation."""
    completions = sample([e.token_ids for e in examples], num_samples, sampling, seed)
    return [ChatGeneration(e, ids[e.source], cs) for e, cs in zip(examples, completions)]


def chat_summary(
    generations: Sequence[ChatGeneration], rewards: Sequence[Sequence[float | None]] | None = None
) -> dict[str, object]:
    """Counts for results.json, and with ``rewards`` (one per sample, ``None`` = failed)
    the reward model's mean reward ± its standard error over prompts and the
    length-normalised reward of :func:`length_normalised_reward`."""
    completions = [c for g in generations for c in g.completions]
    summary: dict[str, object] = {
        "num_prompts": len(generations),
        "num_samples": len(generations[0].completions) if generations else 0,
        "mean_response_len": sum(len(c.token_ids) for c in completions) / max(len(completions), 1),
        "num_unfinished": sum(not c.finished for c in completions),
    }
    if rewards is not None:
        summary.update(reward_summary(generations, rewards, "mean_ratio"))
    return summary


def length_normalised_reward(mean_reward: float, mean_len: float, mode: str) -> float:
    """``mean_ratio``: mean reward / mean response length (tokens); ``none``: the mean reward."""
    if mode == "none":
        return mean_reward
    if mode != "mean_ratio":
        raise ValueError(f"unknown validation.length_normalize {mode!r}")
    return mean_reward / mean_len if mean_len > 0 else math.nan


def reward_summary(
    generations: Sequence[ChatGeneration], rewards: Sequence[Sequence[float | None]], length_normalization: str
) -> dict[str, object]:
    scored = [
        (r, len(c.token_ids)) for g, rs in zip(generations, rewards) for c, r in zip(g.completions, rs) if r is not None
    ]
    per_prompt = [sum(v) / len(v) for v in ([r for r in rs if r is not None] for rs in rewards) if v]
    num_failed = sum(r is None for rs in rewards for r in rs)
    if not scored:
        return {
            "mean_reward": math.nan,
            "reward_stderr": math.nan,
            "reward_len_norm": math.nan,
            "num_failed_rewards": num_failed,
        }
    mean = sum(r for r, _ in scored) / len(scored)
    mean_len = sum(n for _, n in scored) / len(scored)
    if len(per_prompt) > 1:
        m = sum(per_prompt) / len(per_prompt)
        stderr = math.sqrt(sum((p - m) ** 2 for p in per_prompt) / (len(per_prompt) - 1) / len(per_prompt))
    else:
        stderr = math.nan
    return {
        "mean_reward": mean,
        "reward_stderr": stderr,
        "reward_len_norm": length_normalised_reward(mean, mean_len, length_normalization),
        "num_failed_rewards": num_failed,
    }


def score_chat(generations: Sequence[ChatGeneration], reward_model: RewardModelClient) -> list[list[float | None]]:
    """The reward model's score of every sample (``None`` = failed), [prompt][sample]."""
    return RewardRouter(reward_model=reward_model).score(
        [g.example for g in generations], [[c.text for c in g.completions] for g in generations]
    )


def generation_records(
    generations: Sequence[ChatGeneration], rewards: Sequence[Sequence[float | None]] | None = None
) -> list[dict[str, object]]:
    """``generations.jsonl``: every sample with where it came from (and its reward)."""
    records: list[dict[str, object]] = [
        {
            "source": g.example.source,
            "sample": k,
            "question_id": g.ids.question_id,
            "dataset": g.ids.dataset,
            "prompt": g.example.prompt,
            "response": c.text,
            "num_tokens": len(c.token_ids),
            "finished": c.finished,
        }
        for g in generations
        for k, c in enumerate(g.completions)
    ]
    if rewards is not None:
        for record, reward in zip(records, (r for rs in rewards for r in rs)):
            record["reward"] = reward
    return records


def alpaca_eval_records(generations: Sequence[ChatGeneration], generator: str) -> list[dict[str, object]]:
    """AlpacaEval 2.0 ``model_outputs``: the first sample of every prompt."""
    return [
        {
            "instruction": g.example.prompt,
            "output": g.completions[0].text,
            "generator": generator,
            "dataset": g.ids.dataset,
        }
        for g in generations
    ]


def arena_hard_records(generations: Sequence[ChatGeneration], model_id: str) -> list[dict[str, object]]:
    """Arena-Hard-Auto v0.1 model answers: one line per question, one choice per sample."""
    return [
        {
            "question_id": g.ids.question_id,
            "answer_id": uuid.uuid4().hex,
            "model_id": model_id,
            "choices": [
                {"index": k, "turns": [{"content": c.text, "token_len": len(c.token_ids)}]}
                for k, c in enumerate(g.completions)
            ],
            "tstamp": time.time(),
        }
        for g in generations
    ]


ALPACA_EVAL_FILE = "alpaca_eval.json"
ARENA_HARD_FILE = "arena_hard.jsonl"


def write_exports(out_dir: Path, generations: Sequence[ChatGeneration], model_name: str) -> dict[str, str]:
    """Writes both judges' files into ``out_dir``; returns their paths by judge."""
    out_dir.mkdir(parents=True, exist_ok=True)
    alpaca = out_dir / ALPACA_EVAL_FILE
    alpaca.write_text(json.dumps(alpaca_eval_records(generations, model_name), indent=2) + "\n", encoding="utf-8")
    arena = out_dir / ARENA_HARD_FILE
    with arena.open("w", encoding="utf-8") as f:
        for record in arena_hard_records(generations, model_name):
            f.write(json.dumps(record) + "\n")
    return {"alpaca_eval": str(alpaca), "arena_hard": str(arena)}
