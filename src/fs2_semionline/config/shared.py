"""Sections both recipes read: how answers are sampled, who samples them (the engine),
the rewards, and the Ray cluster. Rollouts (``generator``), validation (``validation``)
and evaluation (``sampling``, ``generator``) extend these, so each key is declared and
checked once; a subclass only changes a default (and says why in its docstring)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fairseq2.utils.validation import ValidationResult

from fs2_semionline.config.fields import FieldChecks


@dataclass(kw_only=True)
class SamplingSection:
    """How answers are sampled (paper §3 evaluation: temperature 0.6, top-p 0.9)."""

    temperature: float = 0.6
    """Sampling temperature (paper §3 evaluation: 0.6; 0 = greedy)."""
    top_p: float = 0.9
    """Nucleus sampling mass (paper §3 evaluation: 0.9)."""
    max_batch_size: int = 32
    """At most this many prompts per sampler call (a memory knob, not a hyperparameter;
    fairseq2's sampler draws its RNG stream per call, so keep it fixed when comparing
    runs sample for sample)."""

    def check_sampling(self, checks: FieldChecks) -> FieldChecks:
        checks.at_least("temperature", 0.0, note=" (0 = greedy)")
        checks.within("top_p", 0.0, 1.0, low_open=True)
        checks.at_least("max_batch_size", 1)
        return checks

    def validate(self) -> ValidationResult:
        return self.check_sampling(FieldChecks(self)).result


@dataclass(kw_only=True)
class EngineSection:
    """Who samples: fairseq2's sampler in this process, or vLLM engines in Ray actors."""

    backend: Literal["local", "vllm"] = "local"
    """``local``: fairseq2's sampler in this process; ``vllm``: vLLM engines as Ray actors."""
    replicas: int = 1
    """``vllm``: engines (Ray actors); the prompts are split evenly over them."""
    tensor_parallel_size: int = 1
    """``vllm``: GPUs per engine (one placement per actor)."""
    num_cpus_per_replica: float = 1.0
    """``vllm``: Ray CPUs per actor; on a CPU machine also its torch threads."""
    engine_args: dict[str, object] = field(default_factory=dict)
    """``vllm``: passed to ``vllm.LLM`` (e.g. gpu_memory_utilization, max_num_seqs)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``vllm``: the dtype the engines serve in; ``auto``: model.dtype."""
    generate_timeout_s: float = 1800.0
    """A replica silent for longer is restarted and its prompts re-issued."""

    def check_engine(self, checks: FieldChecks) -> FieldChecks:
        checks.at_least("replicas", 1)
        checks.at_least("tensor_parallel_size", 1)
        checks.positive("num_cpus_per_replica")
        checks.positive("generate_timeout_s")
        return checks

    def validate(self) -> ValidationResult:
        return self.check_engine(FieldChecks(self)).result


@dataclass(kw_only=True)
class MathRewardSection:
    """Math-Verify, for math prompts: a process pool whose SIGALRM timeouts work."""

    timeout_s: float = 5.0
    """Time per response; past it the reward fails (counted, never 0)."""
    num_workers: int | None = None
    """Worker processes (default: the machine's cores)."""

    def validate(self) -> ValidationResult:
        checks = FieldChecks(self)
        checks.positive("timeout_s")
        checks.at_least("num_workers", 1, optional=True, note=" (null = the machine's cores)")
        return checks.result


@dataclass(kw_only=True)
class RewardModelSection:
    """The reward model, for chat prompts: HF sequence-classification models in Ray actors."""

    name: str | None = None
    """An asset card (e.g. ``athene_rm_8b``) or a local HF sequence-classification folder."""
    replicas: int = 1
    """Actors; a step's items are split over them."""
    num_cpus: float = 1.0
    """Ray CPUs per actor (also its torch threads)."""
    device: str = "cpu"
    """``cuda``: each replica gets one GPU from Ray."""
    max_batch_size: int = 8
    """At most this many texts per forward pass (a memory knob)."""
    max_length: int | None = None
    """Longer prompt+response texts get no reward (a counted failure), never a truncated one."""
    timeout_s: float = 300.0
    """A call slower than this fails its items (counted, never read as 0)."""

    def validate(self) -> ValidationResult:
        checks = FieldChecks(self)
        checks.at_least("replicas", 1)
        checks.positive("num_cpus")
        checks.one_of("device", ("cpu", "cuda"))
        checks.at_least("max_batch_size", 1)
        checks.at_least("max_length", 1, optional=True)
        checks.positive("timeout_s")
        return checks.result


@dataclass(kw_only=True)
class RewardSection:
    """Math-Verify (math prompts) and the reward model (chat prompts)."""

    math: MathRewardSection = field(default_factory=MathRewardSection)
    model: RewardModelSection = field(default_factory=RewardModelSection)


@dataclass(kw_only=True)
class RaySection:
    """Where the generator and reward-model actors run."""

    address: str | None = None
    """null: start a local cluster on loopback; ``auto`` or ``ray://host:port``: join one."""
    num_cpus: int | None = None
    """CPUs of a local cluster (default: all of the machine's)."""
    num_gpus: int | None = None
    """GPUs of a local cluster (default: all of the machine's, or of ``gpu_ids``)."""
    gpu_ids: list[int] | None = None
    """GPUs a local cluster may give its actors, as ``nvidia-smi`` numbers them (e.g.
    ``[4, 5, 6, 7]`` beside 4 trainer ranks on GPUs 0-3). Default: every GPU of the node,
    which overlaps the trainer's and is refused (``generator.colocate`` shares on purpose)."""

    def validate(self) -> ValidationResult:
        checks = FieldChecks(self)
        checks.at_least("num_cpus", 1, optional=True, note=" (null = all of the machine's)")
        checks.at_least("num_gpus", 0, optional=True, note=" (null = all of the machine's)")
        if self.address is not None and not self.address.strip():
            checks.fail("address", "must be null (a local cluster), 'auto' or 'ray://host:port'")
        if self.gpu_ids is not None:
            if self.address is not None:
                checks.fail("gpu_ids", "applies to a local cluster (ray.address: null); a joined cluster's nodes say")
            elif not self.gpu_ids or any(i < 0 for i in self.gpu_ids) or len(set(self.gpu_ids)) != len(self.gpu_ids):
                checks.fail("gpu_ids", f"must be distinct GPU ids >= 0, got {self.gpu_ids}")
            elif self.num_gpus is not None and self.num_gpus != len(self.gpu_ids):
                checks.fail("num_gpus", f"must be null or len(ray.gpu_ids) = {len(self.gpu_ids)}, got {self.num_gpus}")
        return checks.result
