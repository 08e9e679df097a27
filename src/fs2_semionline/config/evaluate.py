"""Config sections of ``lm evaluate`` (fairseq2 structures them from YAML/CLI); every key
and default is in docs/configuration.md."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from fairseq2.recipe.config import CommonSection, GangSection, ReferenceModelSection, TokenizerSection
from fairseq2.utils.validation import ValidationResult

from fs2_semionline.config.fields import FieldChecks
from fs2_semionline.config.shared import EngineSection, RaySection, RewardSection, SamplingSection
from fs2_semionline.config.training import RolloutGeneratorSection
from fs2_semionline.core.paths import TINY_MATH_DATA_DIR
from fs2_semionline.core.tasks import TaskName

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
    task: TaskName = "math"
    """``math``: Figure 4 template, Math-Verify accuracy. ``chat``: Figure 5 template,
    generation only, exported for AlpacaEval 2.0 and Arena-Hard."""
    max_prompt_len: int | None = None
    """Longer prompts are counted skips. Default: the model's max_seq_len − max_gen_len."""

    def validate(self) -> ValidationResult:
        checks = FieldChecks(self)
        checks.at_least("max_prompt_len", 1, optional=True)
        return checks.result


@dataclass(kw_only=True)
class EvalSamplingSection(SamplingSection):
    """How answers are sampled (paper §3: temperature 0.6, top-p 0.9)."""

    num_samples: int | None = None
    """Samples per prompt. Default: 50 for math (paper §3), 1 for chat."""
    max_gen_len: int = 1024
    """Answer length limit in tokens; an answer cut by it counts in num_unfinished."""

    def validate(self) -> ValidationResult:
        checks = self.check_sampling(FieldChecks(self))
        checks.at_least("num_samples", 1, optional=True, note=" (null = 50 for math, 1 for chat)")
        checks.at_least("max_gen_len", 1)
        return checks.result


@dataclass(kw_only=True)
class EvalExportSection:
    """Chat exports for the external judges."""

    model_name: str | None = None
    """AlpacaEval ``generator`` and Arena-Hard ``model_id``. Default: model.name (or model.path)."""


@dataclass(kw_only=True)
class EvalGeneratorSection(EngineSection):
    """Who samples the answers: the shared engine keys (``config/shared.py``).

    ``vllm``: Math500 × 50 samples at 8B take minutes on GPUs instead of GPU-hours."""

    def rollout_section(self) -> RolloutGeneratorSection:
        """The rollout generator's section with these engine keys (the rest are unused)."""
        engine = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(EngineSection)}
        return RolloutGeneratorSection(**engine)


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
