"""``lm evaluate``: sampled accuracy on verifiable prompts, as the paper reports it.

N completions per test prompt (temperature 0.6, top-p 0.9 by default, §3), each scored
by Math-Verify in a process pool; the result is the mean accuracy over the N sample
sets and its standard error (Table 1), the mean response length and the number of
failed rewards. Writes ``OUT_DIR/results.json`` and ``OUT_DIR/generations.jsonl``.

    fs2-semionline lm evaluate OUT_DIR --preset eval_tiny_math
    python -m fs2_semionline.recipes.evaluate OUT_DIR --config model.name=tiny_math_sft
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from fairseq2.logging import log
from fairseq2.models.clm import CausalLM
from fairseq2.recipe.base import Recipe, RecipeContext
from fairseq2.recipe.config import CommonSection, GangSection, ReferenceModelSection, TokenizerSection
from fairseq2.task import Task
from fairseq2.runtime.dependency import DependencyContainer
from typing_extensions import override

from fs2_semionline.errors import ConfigError, check_data_files, register_cli_errors
from fs2_semionline.recipes import run_cli

from fs2_semionline.config import RewardSection
from fs2_semionline.data.jsonl import LoadReport, load_prompts
from fs2_semionline.data.templates import verifiable_prompt
from fs2_semionline.eval.math_eval import evaluate_math
from fs2_semionline.generation.protocol import SamplingConfig
from fs2_semionline.paths import TINY_MATH_DATA_DIR
from fs2_semionline.rewards.math_verify import MathVerifyPool


@dataclass(kw_only=True)
class EvalDataSection:
    paths: list[Path] = field(default_factory=lambda: [TINY_MATH_DATA_DIR / "test.jsonl"])
    """JSONL files with ``prompt`` and ``answer`` fields."""
    max_prompt_len: int | None = None
    """Longer prompts are counted skips. Default: the model's max_seq_len − max_gen_len."""


@dataclass(kw_only=True)
class EvalSamplingSection:
    num_samples: int = 50
    temperature: float = 0.6
    top_p: float = 0.9
    max_gen_len: int = 1024
    batch_size: int = 32


@dataclass(kw_only=True)
class EvaluateConfig:
    model: ReferenceModelSection = field(
        default_factory=lambda: ReferenceModelSection(name="tiny_math_sft")
    )
    tokenizer: TokenizerSection = field(
        default_factory=lambda: TokenizerSection(name="tiny_math_tokenizer")
    )
    dataset: EvalDataSection = field(default_factory=EvalDataSection)
    sampling: EvalSamplingSection = field(default_factory=EvalSamplingSection)
    reward: RewardSection = field(default_factory=RewardSection)
    gang: GangSection = field(default_factory=GangSection)
    common: CommonSection = field(default_factory=lambda: CommonSection(no_sweep_dir=True))


class MathEvalTask(Task):
    """Runs once: load prompts, sample, score, write the result files."""

    def __init__(self, context: RecipeContext) -> None:
        self._context = context
        self._config = context.get_config_as(EvaluateConfig)
        self._step_nr = 0

    @override
    def run(self) -> None:
        config, context = self._config, self._context
        # Check the data before the model loads: a typo must not cost a model download.
        check_data_files("dataset.paths", config.dataset.paths)
        model = context.get_model_as(CausalLM)
        tokenizer = context.get_tokenizer()
        encoder = tokenizer.create_raw_encoder()
        max_prompt_len = config.dataset.max_prompt_len
        if max_prompt_len is None:
            max_prompt_len = int(getattr(model, "max_seq_len")) - config.sampling.max_gen_len
        report = LoadReport()
        examples = load_prompts(
            config.dataset.paths,
            task="math",
            template=verifiable_prompt,
            encode=lambda text: encoder(text).tolist(),
            max_prompt_len=max_prompt_len,
            require_answer=True,
            report=report,
        )
        if not examples:
            raise ConfigError(f"dataset.paths: no usable prompts in {config.dataset.paths} ({report.as_dict()})")
        if report.num_skipped:
            log.warning("Skipped {} of {} prompts: {}", report.num_skipped, report.num_read, dict(report.skipped))
        s = config.sampling
        torch.manual_seed(config.common.seed)
        start = time.perf_counter()
        with MathVerifyPool(num_workers=config.reward.num_workers, timeout_s=config.reward.math_timeout_s) as pool:
            result = evaluate_math(
                model,
                tokenizer,
                examples,
                pool,
                num_samples=s.num_samples,
                sampling=SamplingConfig(s.temperature, s.top_p, s.max_gen_len),
                batch_size=s.batch_size,
            )
        summary = {
            **result.summary(),
            "model": config.model.name or str(config.model.path),
            "data": [str(p) for p in config.dataset.paths],
            "temperature": s.temperature,
            "top_p": s.top_p,
            "prompts": report.as_dict(),
            "seconds": round(time.perf_counter() - start, 2),
        }
        out_dir = context.output_dir
        (out_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
        with (out_dir / "generations.jsonl").open("w", encoding="utf-8") as f:
            for record in result.records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        context.metric_recorder.record_metric_values(
            "eval/math",
            {
                "accuracy": result.accuracy.mean,
                "accuracy_stderr": result.accuracy.stderr,
                "mean_response_len": result.mean_response_len,
                "num_failed_rewards": result.accuracy.num_failed,
                "num_skipped_prompts": report.num_skipped,
            },
            step_nr=0,
        )
        log.info(
            "Accuracy {} (mean ± s.e. over {} sample sets, {} problems); mean response length {:.1f} tokens; "
            "{} failed rewards; {} skipped prompts. Results: {}",
            result.accuracy, s.num_samples, result.num_problems, result.mean_response_len,
            result.accuracy.num_failed, report.num_skipped, out_dir / "results.json",
        )  # fmt: skip
        self._step_nr = 1

    @override
    def request_stop(self) -> None:
        pass

    @property
    @override
    def step_nr(self) -> int:
        return self._step_nr

    @override
    def close(self) -> None:
        pass


class EvaluateRecipe(Recipe):
    @override
    def register(self, container: DependencyContainer) -> None:
        register_cli_errors(container)

    @override
    def create_task(self, context: RecipeContext) -> Task:
        return MathEvalTask(context)

    @property
    @override
    def config_kls(self) -> type[object]:
        return EvaluateConfig


def main() -> None:
    run_cli(EvaluateRecipe())


if __name__ == "__main__":
    main()
