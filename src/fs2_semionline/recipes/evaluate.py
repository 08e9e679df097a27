"""``lm evaluate``: the paper's evaluations, math (scored here) and chat (exported).

``dataset.task=math``: N completions per test prompt (temperature 0.6, top-p 0.9,
N = 50 by default, §3), each scored by Math-Verify in a process pool; the result is
the mean accuracy over the N sample sets and its standard error (Table 1), the mean
response length and the number of failed rewards.

``dataset.task=chat``: one answer per prompt by default (Figure 5 template, same
sampling); the answers are exported for AlpacaEval 2.0 and Arena-Hard, whose GPT-4
judges run outside this package (see :mod:`fs2_semionline.eval.chat_eval`). With
``reward.model.name`` set, every answer is also scored by that reward model (in this
process): mean reward ± s.e. over prompts, and the length-normalised reward.

Every entry of ``dataset.paths`` is one eval set (Math500, AMC23, NuminaMath test, ...):
a JSONL file, or for math a dataset name as the Hub spells it (``HuggingFaceH4/MATH-500``,
``NAME:SPLIT``; loaded and cached by ``datasets.load_dataset``) or a folder (``save_to_disk``,
or the set's own parquet/JSONL files), written as JSONL into ``OUT_DIR/eval_sets/`` first,
sampled with the sampler seeded afresh by ``common.seed``, so its numbers equal a run on
that file alone. ``OUT_DIR/results.json`` holds the pooled result at the top level (the
keys a single-file run has always written) and one entry per set under ``sets``;
``OUT_DIR/generations.jsonl`` holds every sample. Chat runs also write
``alpaca_eval.json`` and ``arena_hard.jsonl`` (all sets), and with several files the
same two per set in ``OUT_DIR/sets/<file stem>/``.

    fs2-semionline lm evaluate OUT_DIR --preset eval_tiny_math
    fs2-semionline lm evaluate OUT_DIR --preset eval_math500   # HuggingFaceH4/MATH-500
    fs2-semionline lm evaluate OUT_DIR --preset eval_aime24 --config 'dataset.paths=[aime24.jsonl]'
    python -m fs2_semionline.recipes.evaluate OUT_DIR --config model.name=tiny_math_sft
    fs2-semionline lm evaluate OUT_DIR --preset eval_math500 --config generator.backend=vllm generator.replicas=8

``generator.backend=vllm`` samples with vLLM engines in Ray actors (replicas, tensor
parallelism), started from an HF export of the model; results and files are the same.
Each set's prompts are seeded from ``common.seed`` as a whole, so a set's numbers do not
depend on the number of replicas (vLLM seeds each prompt, not a shared RNG).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

from fairseq2.data.tokenizers import Tokenizer
from fairseq2.logging import log
from fairseq2.models.clm import CausalLM
from fairseq2.recipe.base import Recipe, RecipeContext
from fairseq2.runtime.dependency import DependencyContainer
from fairseq2.task import Task
from typing_extensions import override

from fs2_semionline.config.evaluate import DEFAULT_NUM_SAMPLES, EvaluateConfig
from fs2_semionline.core.errors import ConfigError, UserInputError, check_data_files
from fs2_semionline.data.encoding import fairseq2_text_encoder
from fs2_semionline.data.prepare.common import dataset_name
from fs2_semionline.data.prepare.test_sets import prepare_eval_set
from fs2_semionline.eval.chat_eval import (
    ChatGeneration,
    ChatIds,
    chat_summary,
    generation_records,
    read_chat_ids,
    score_chat,
    write_exports,
)
from fs2_semionline.eval.math_eval import pool_math_results
from fs2_semionline.eval.sets import (
    EvalSet,
    drop_long_prompts,
    evaluate_math_sets,
    generate_chat_sets,
    load_eval_sets,
    pooled_report,
)
from fs2_semionline.generation.local import GeneratorSampler, PolicySampler
from fs2_semionline.generation.protocol import Sampler, SamplingConfig
from fs2_semionline.glue.cli_errors import register_cli_errors
from fs2_semionline.glue.ray_cluster import RayCluster
from fs2_semionline.rewards.math_pool import MathVerifyPool


def _score_chat_sets(per_set: list[list[ChatGeneration]], reward_spec: Any) -> list[list[list[float | None]]] | None:
    """The reward model's rewards of every set's generations (None: no reward model);
    the model is loaded once and freed before the exports are written."""
    if reward_spec is None:
        return None
    from fs2_semionline.rewards.reward_model import RewardModel

    reward_model = RewardModel(reward_spec)
    return [score_chat(gs, reward_model) for gs in per_set]


def _chat_metrics(values: dict[str, Any], num_skipped: int) -> dict[str, Any]:
    """What a chat summary logs to the metric recorders."""
    rewards = ("mean_reward", "reward_stderr", "reward_len_norm", "num_failed_rewards")
    return {
        "mean_response_len": values["mean_response_len"],
        "num_unfinished": values["num_unfinished"],
        "num_skipped_prompts": num_skipped,
        **{k: values[k] for k in rewards if k in values},
    }


def _write_jsonl(path: Path, records: Iterable[dict[str, object]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


class EvalTask(Task):
    """Runs once: load prompts, sample, score or export, write the result files."""

    def __init__(self, context: RecipeContext) -> None:
        self._context = context
        self._config = context.get_config_as(EvaluateConfig)
        self._step_nr = 0

    @property
    def _model_name(self) -> str:
        model = self._config.model
        return model.name or str(model.path)

    @property
    def _num_samples(self) -> int:
        n = self._config.sampling.num_samples
        return DEFAULT_NUM_SAMPLES[self._config.dataset.task] if n is None else n  # >= 1: validated

    @property
    def _sampling(self) -> SamplingConfig:
        s = self._config.sampling
        return SamplingConfig(s.temperature, s.top_p, s.max_gen_len)

    @override
    def run(self) -> None:
        config, context = self._config, self._context
        # Check paths and every data line before the model loads: a typo or a bad line
        # must not cost a model download.
        files = self._eval_files()
        num_samples = self._num_samples
        tokenizer = context.get_tokenizer()
        sets = load_eval_sets(files, task=config.dataset.task, encoder=fairseq2_text_encoder(tokenizer))
        chat_ids: dict[str, ChatIds] = {}
        reward_spec = None
        if config.dataset.task == "chat":
            for s in sets:
                chat_ids.update(read_chat_ids(s.path))
            if config.reward.model.name:  # a wrong name or folder fails now, not after sampling
                from fs2_semionline.rewards.reward_model import reward_model_spec

                reward_spec = reward_model_spec(config.reward.model)
        model = context.get_model_as(CausalLM)
        max_prompt_len = config.dataset.max_prompt_len
        if max_prompt_len is None:
            max_prompt_len = int(getattr(model, "max_seq_len")) - config.sampling.max_gen_len
        for s in sets:
            drop_long_prompts(s, max_prompt_len)
            if not s.examples:
                raise ConfigError(f"dataset.paths: no usable prompts in {s.path} ({s.report.as_dict()})")
            if s.report.num_skipped:
                log.warning(
                    "{}: skipped {} of {} prompts: {}",
                    s.path,
                    s.report.num_skipped,
                    s.report.num_read,
                    dict(s.report.skipped),
                )
        start = time.perf_counter()
        with ExitStack() as stack:  # the generator, then Ray, each even if the other fails
            sample = self._sampler(model, tokenizer, stack)
            if config.dataset.task == "math":
                self._run_math(sample, sets, num_samples, start)
            else:
                self._run_chat(sample, sets, chat_ids, num_samples, start, reward_spec)
        self._step_nr = 1

    def _sampler(self, model: CausalLM, tokenizer: Tokenizer, stack: ExitStack) -> Sampler:
        """fairseq2's sampler on ``model``, or vLLM replicas started from its weights."""
        config = self._config
        if config.generator.backend == "local":
            return PolicySampler(model, tokenizer, batch_size=config.sampling.max_batch_size)
        import torch

        from fs2_semionline.generation.factory import create_generator

        if self._context.gangs.root.size > 1:
            raise ConfigError("generator.backend=vllm evaluates from one process: the replicas do the parallel work")
        stack.enter_context(closing(RayCluster(config.ray))).start()
        dtype = None if config.generator.dtype == "auto" else getattr(torch, config.generator.dtype)
        generator = create_generator(
            config.generator.rollout_section(),
            model,
            tokenizer,
            model_name=config.model.name,
            tokenizer_name=str(config.tokenizer.name),
            work_dir=self._context.output_dir,
            seed=config.common.seed,
            dtype=dtype or next(model.parameters()).dtype,
            family=config.model.family,
            arch=config.model.arch,
        )
        return GeneratorSampler(stack.enter_context(closing(generator)))

    def _eval_files(self) -> list[Path]:
        """``dataset.paths`` as JSONL files: a math set given by dataset name
        (``HuggingFaceH4/MATH-500``, loaded and cached by ``datasets``) or by folder (a
        ``save_to_disk`` one, or the set's parquet/JSONL files) is written as one first,
        into ``OUTPUT_DIR/eval_sets/NAME/``."""
        dataset = self._config.dataset
        work_dir = self._context.output_dir / "eval_sets"
        if self._context.gangs.root.size > 1:
            work_dir = work_dir / f"rank_{self._context.gangs.root.rank}"
        files: list[Path] = []
        for entry in dataset.paths:
            path = Path(entry)
            by_name = not path.exists() and dataset_name(str(entry)) is not None
            if dataset.task == "math" and (path.is_dir() or by_name):
                try:
                    path = prepare_eval_set(entry, work_dir)
                except UserInputError as ex:
                    raise ConfigError(f"dataset.paths: {ex}") from None
                log.info("dataset.paths: {} read as {}", entry, path)
            files.append(path)
        check_data_files("dataset.paths", files)
        return files

    def _common_summary(self, sets: list[EvalSet]) -> dict[str, object]:
        s = self._config.sampling
        return {
            "task": self._config.dataset.task,
            "model": self._model_name,
            "data": [str(p) for p in self._config.dataset.paths],
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_gen_len": s.max_gen_len,
            "seed": self._config.common.seed,
            "sampler": self._config.generator.backend,
            "prompts": pooled_report(sets).as_dict(),
        }

    def _run_math(self, sample: Sampler, sets: list[EvalSet], num_samples: int, start: float) -> None:
        config, context = self._config, self._context
        with MathVerifyPool(num_workers=config.reward.math.num_workers, timeout_s=config.reward.math.timeout_s) as pool:
            results = evaluate_math_sets(
                sample, sets, pool, seed=config.common.seed, num_samples=num_samples, sampling=self._sampling
            )
        overall = pool_math_results(results)
        report = pooled_report(sets)
        summary = {
            **overall.summary(),
            **self._common_summary(sets),
            "sets": [{**s.describe(), **r.summary(), "prompts": s.report.as_dict()} for s, r in zip(sets, results)],
            "seconds": round(time.perf_counter() - start, 2),
        }
        out_dir = context.output_dir
        (out_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
        _write_jsonl(out_dir / "generations.jsonl", overall.records)
        # Pooled under eval/math, and with several sets each under eval/math/<set>.
        named = [("eval/math", overall, report)]
        if len(sets) > 1:
            named += [(f"eval/math/{s.name}", r, s.report) for s, r in zip(sets, results)]
        for category, result, load_report in named:
            context.metric_recorder.record_metric_values(
                category,
                {
                    "accuracy": result.accuracy.mean,
                    "accuracy_stderr": result.accuracy.stderr,
                    "mean_response_len": result.mean_response_len,
                    "num_failed_rewards": result.accuracy.num_failed,
                    "num_skipped_prompts": load_report.num_skipped,
                },
                step_nr=0,
            )
        log.info(
            "Accuracy {} (mean ± s.e. over {} sample sets, {} problems in {} set(s)); mean response length {:.1f} "
            "tokens; {} failed rewards; {} skipped prompts. Results: {}",
            overall.accuracy,
            num_samples,
            overall.num_problems,
            len(sets),
            overall.mean_response_len,
            overall.accuracy.num_failed,
            report.num_skipped,
            out_dir / "results.json",
        )

    def _run_chat(
        self,
        sample: Sampler,
        sets: list[EvalSet],
        chat_ids: dict[str, ChatIds],
        num_samples: int,
        start: float,
        reward_spec: Any,
    ) -> None:
        config, context = self._config, self._context
        name = config.export.model_name or self._model_name
        per_set = generate_chat_sets(
            sample, sets, chat_ids, seed=config.common.seed, num_samples=num_samples, sampling=self._sampling
        )
        generations = [g for gs in per_set for g in gs]
        rewards_per_set = _score_chat_sets(per_set, reward_spec)
        rewards = None if rewards_per_set is None else [r for rs in rewards_per_set for r in rs]
        if num_samples > 1:
            log.warning("alpaca_eval.json holds the first of the {} samples per prompt", num_samples)
        out_dir = context.output_dir
        exports = write_exports(out_dir, generations, name)
        set_entries = []
        for i, (s, gs) in enumerate(zip(sets, per_set)):
            entry = {
                **s.describe(),
                **chat_summary(gs, None if rewards_per_set is None else rewards_per_set[i]),
                "prompts": s.report.as_dict(),
            }
            if len(sets) > 1:
                entry["exports"] = write_exports(out_dir / "sets" / s.name, gs, name)
            set_entries.append(entry)
        report = pooled_report(sets)
        overall = chat_summary(generations, rewards)
        summary = {
            **overall,
            **self._common_summary(sets),
            "generator": name,
            "exports": exports,
            "sets": set_entries,
            "seconds": round(time.perf_counter() - start, 2),
        }
        (out_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
        _write_jsonl(out_dir / "generations.jsonl", generation_records(generations, rewards))
        named = [("eval/chat", overall, report.num_skipped)]
        if len(sets) > 1:
            named += [(f"eval/chat/{s.name}", e, s.report.num_skipped) for s, e in zip(sets, set_entries)]
        for category, values, num_skipped in named:
            context.metric_recorder.record_metric_values(category, _chat_metrics(values, num_skipped), step_nr=0)
        self._log_chat(overall, exports, num_prompts=len(generations), num_samples=num_samples, num_sets=len(sets))

    def _log_chat(
        self, overall: dict[str, Any], exports: dict[str, Any], *, num_prompts: int, num_samples: int, num_sets: int
    ) -> None:
        if "mean_reward" in overall:  # scored by a reward model
            log.info(
                "Reward model {}: mean reward {:.4f} ± {:.4f}, length-normalised {:.5f}, {} failed",
                self._config.reward.model.name,
                overall["mean_reward"],
                overall["reward_stderr"],
                overall["reward_len_norm"],
                overall["num_failed_rewards"],
            )
        log.info(
            "{} answers to {} prompts in {} set(s) (mean length {:.1f} tokens, {} unfinished). "
            "For AlpacaEval 2.0: {}; for Arena-Hard: {}",
            num_prompts * num_samples,
            num_prompts,
            num_sets,
            overall["mean_response_len"],
            overall["num_unfinished"],
            exports["alpaca_eval"],
            exports["arena_hard"],
        )

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
        return EvalTask(context)

    @property
    @override
    def config_kls(self) -> type[object]:
        return EvaluateConfig


def main() -> None:
    """``python -m`` takes what ``fs2-semionline lm evaluate`` takes (``--preset`` too)."""
    import sys

    from fs2_semionline.recipes import run_recipe

    run_recipe("evaluate", sys.argv[1:])


if __name__ == "__main__":
    main()
