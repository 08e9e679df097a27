"""Sampled accuracy on verifiable prompts: prompts → N completions → Math-Verify → stats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fs2_semionline.data.jsonl import PromptExample
from fs2_semionline.eval.accuracy import AccuracyStats, accuracy_over_sample_sets
from fs2_semionline.generation.protocol import Sampler, SamplingConfig
from fs2_semionline.rewards.math_pool import MathVerifyPool


@dataclass(frozen=True)
class MathEvalResult:
    accuracy: AccuracyStats
    num_problems: int
    num_samples: int
    mean_response_len: float  # in tokens
    num_unfinished: int  # hit max_gen_len before EOS
    records: list[dict[str, object]]  # one per (problem, sample), for the result file
    rewards: list[list[float | None]]  # [problem][sample]: kept so sets can be pooled exactly
    num_response_tokens: int

    def summary(self) -> dict[str, object]:
        return {
            "accuracy": self.accuracy.mean,
            "accuracy_stderr": self.accuracy.stderr,
            "accuracy_per_sample_set": self.accuracy.per_set,
            "num_problems": self.num_problems,
            "num_samples": self.num_samples,
            "mean_response_len": self.mean_response_len,
            "num_failed_rewards": self.accuracy.num_failed,
            "num_unfinished": self.num_unfinished,
        }


def evaluate_math(
    sample: Sampler,
    examples: Sequence[PromptExample],
    pool: MathVerifyPool,
    *,
    num_samples: int,
    sampling: SamplingConfig,
    seed: int,
) -> MathEvalResult:
    if not examples:
        raise ValueError("no prompts to evaluate (all skipped or the files are empty)")
    completions = sample([e.token_ids for e in examples], num_samples, sampling, seed)
    responses = [c.text for cs in completions for c in cs]
    golds = [str(e.answer) for e in examples for _ in range(num_samples)]
    verdicts = pool.score(responses, golds).verdicts
    rewards: list[list[float | None]] = []
    records: list[dict[str, object]] = []
    lengths: list[int] = []
    num_unfinished = 0
    for i, (example, samples) in enumerate(zip(examples, completions)):
        row: list[float | None] = []
        for k, completion in enumerate(samples):
            verdict = verdicts[i * num_samples + k]
            row.append(verdict.reward)
            lengths.append(len(completion.token_ids))
            num_unfinished += not completion.finished
            records.append(
                {
                    "source": example.source,
                    "sample": k,
                    "answer": example.answer,
                    "response": completion.text,
                    "status": verdict.status,
                    "reason": verdict.reason,
                    "extracted": verdict.extracted,
                }
            )
        rewards.append(row)
    return MathEvalResult(
        accuracy=accuracy_over_sample_sets(rewards),
        num_problems=len(examples),
        num_samples=num_samples,
        mean_response_len=sum(lengths) / len(lengths),
        num_unfinished=num_unfinished,
        records=records,
        rewards=rewards,
        num_response_tokens=sum(lengths),
    )


def pool_math_results(results: Sequence[MathEvalResult]) -> MathEvalResult:
    """All eval sets as one: sample set k spans the k-th completion of every problem of
    every set, so the overall accuracy weighs problems, not sets (as one pooled file would)."""
    if not results:
        raise ValueError("no results to pool")
    if len({r.num_samples for r in results}) != 1:
        raise ValueError("the sets to pool were sampled with different num_samples")
    rewards = [row for r in results for row in r.rewards]
    num_tokens = sum(r.num_response_tokens for r in results)
    num_responses = sum(r.num_problems * r.num_samples for r in results)
    return MathEvalResult(
        accuracy=accuracy_over_sample_sets(rewards),
        num_problems=len(rewards),
        num_samples=results[0].num_samples,
        mean_response_len=num_tokens / num_responses,
        num_unfinished=sum(r.num_unfinished for r in results),
        records=[record for r in results for record in r.records],
        rewards=rewards,
        num_response_tokens=num_tokens,
    )
