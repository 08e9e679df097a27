"""Config sections of ``lm evaluate`` (fairseq2 structures them from YAML/CLI); every key
and default is in docs/configuration.md."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fairseq2.recipe.config import CommonSection, GangSection, ReferenceModelSection, TokenizerSection
from fairseq2.utils.validation import ValidationResult

from fs2_semionline.config import RewardSection, RolloutGeneratorSection
from fs2_semionline.fields import FieldChecks
from fs2_semionline.paths import TINY_MATH_DATA_DIR
from fs2_semionline.ray_cluster import RaySection

DEFAULT_NUM_SAMPLES = {"math": 50, "chat": 1}


@dataclass(kw_only=True)
class EvalDataSection:
    """The eval sets: one JSONL file each, reported one by one and pooled."""

    paths: list[Path] = field(default_factory=lambda: [TINY_MATH_DATA_DIR / "test.jsonl"])
    """One eval set each: JSONL files with ``prompt`` and ``answer`` (math); ``prompt`` and
    optional ``question_id``/``id`` and ``dataset`` (chat). Math sets may also be a dataset
    name as the Hub spells it (``HuggingFaceH4/MATH-500``, ``NAME:SPLIT`` for one split;
    loaded and cached by ``datasets.load_dataset``) or a folder (``save_to_disk``, or the
    set's parquet/JSONL files): problem/question and answer columns are found by name."""
    task: Literal["math", "chat"] = "math"
    """``math``: Figure 4 template, Math-Verify accuracy. ``chat``: Figure 5 template,
    generation only, exported for AlpacaEval 2.0 and Arena-Hard."""
    max_prompt_len: int | None = None
    """Longer prompts are counted skips. Default: the model's max_seq_len − max_gen_len."""

    def validate(self) -> ValidationResult:
        checks = FieldChecks(self)
        checks.at_least("max_prompt_len", 1, optional=True)
        return checks.result


@dataclass(kw_only=True)
class EvalSamplingSection:
    """How answers are sampled (paper §3: temperature 0.6, top-p 0.9)."""

    num_samples: int | None = None
    """Samples per prompt. Default: 50 for math (paper §3), 1 for chat."""
    temperature: float = 0.6
    """Paper §3 evaluation temperature (0 = greedy)."""
    top_p: float = 0.9
    """Paper §3 evaluation nucleus mass."""
    max_gen_len: int = 1024
    """Answer length limit in tokens; an answer cut by it counts in num_unfinished."""
    max_batch_size: int = 32
    """Prompts per sampler call (memory knob). It shapes the RNG stream, so keep it fixed
    when comparing runs sample for sample."""

    def validate(self) -> ValidationResult:
        checks = FieldChecks(self)
        checks.at_least("num_samples", 1, optional=True, note=" (null = 50 for math, 1 for chat)")
        checks.at_least("temperature", 0.0, note=" (0 = greedy)")
        checks.within("top_p", 0.0, 1.0, low_open=True)
        checks.at_least("max_gen_len", 1)
        checks.at_least("max_batch_size", 1)
        return checks.result


@dataclass(kw_only=True)
class EvalExportSection:
    """Chat exports for the external judges."""

    model_name: str | None = None
    """AlpacaEval ``generator`` and Arena-Hard ``model_id``. Default: model.name (or model.path)."""


@dataclass(kw_only=True)
class EvalGeneratorSection:
    """Who samples the answers."""

    backend: Literal["local", "vllm"] = "local"
    """``local``: fairseq2's sampler in this process. ``vllm``: vLLM engines in Ray actors
    (Math500 × 50 samples at 8B: minutes on GPUs instead of GPU-hours)."""
    replicas: int = 1
    """``vllm``: engines; the prompts are split evenly over them."""
    tensor_parallel_size: int = 1
    """``vllm``: GPUs per engine."""
    num_cpus_per_replica: float = 1.0
    """``vllm``: Ray CPUs per actor; on a CPU machine also its threads."""
    engine_args: dict[str, object] = field(default_factory=dict)
    """``vllm``: passed to ``vllm.LLM`` (e.g. gpu_memory_utilization, max_num_seqs)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``vllm``: the serving dtype; ``auto``: model.dtype."""
    generate_timeout_s: float = 1800.0
    """A replica silent for longer is restarted and its prompts re-issued."""

    def validate(self) -> ValidationResult:
        checks = FieldChecks(self)
        checks.at_least("replicas", 1)
        checks.at_least("tensor_parallel_size", 1)
        checks.positive("num_cpus_per_replica")
        checks.positive("generate_timeout_s")
        return checks.result

    def rollout_section(self) -> RolloutGeneratorSection:
        return RolloutGeneratorSection(
            backend=self.backend,
            replicas=self.replicas,
            tensor_parallel_size=self.tensor_parallel_size,
            num_cpus_per_replica=self.num_cpus_per_replica,
            engine_args=dict(self.engine_args),
            generate_timeout_s=self.generate_timeout_s,
        )


@dataclass(kw_only=True)
class EvaluateConfig:
    model: ReferenceModelSection = field(default_factory=lambda: ReferenceModelSection(name="tiny_math_sft"))
    tokenizer: TokenizerSection = field(default_factory=lambda: TokenizerSection(name="tiny_math_tokenizer"))
    dataset: EvalDataSection = field(default_factory=EvalDataSection)
    sampling: EvalSamplingSection = field(default_factory=EvalSamplingSection)
    generator: EvalGeneratorSection = field(default_factory=EvalGeneratorSection)
    ray: RaySection = field(default_factory=RaySection)
    reward: RewardSection = field(default_factory=RewardSection)
    export: EvalExportSection = field(default_factory=EvalExportSection)
    gang: GangSection = field(default_factory=GangSection)
    common: CommonSection = field(default_factory=lambda: CommonSection(no_sweep_dir=True))
