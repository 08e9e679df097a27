"""Builds the configured rollout generator from the seed model (``generator.backend``)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from fairseq2.assets import AssetStore
from fairseq2.data.tokenizers import Tokenizer
from fairseq2.models.clm import CausalLM
from fairseq2.models.family import ModelFamily, get_model_family_name
from fairseq2.runtime.dependency import get_dependency_resolver

from fs2_semionline.config.training import RolloutGeneratorSection
from fs2_semionline.core.errors import ConfigError
from fs2_semionline.generation.local import LocalGenerator
from fs2_semionline.generation.protocol import Generator

# Of the device's memory, what a colocated engine takes (weights + KV cache) unless
# generator.engine_args says otherwise; the trainer (weights, grads, optimizer states,
# activations) keeps the rest.
COLOCATED_GPU_MEMORY_UTILIZATION = 0.3


def create_generator(
    config: RolloutGeneratorSection,
    seed_model: CausalLM,
    tokenizer: Tokenizer,
    *,
    model_name: str | None,
    tokenizer_name: str,
    work_dir: Path,
    seed: int,
    seed_state: dict[str, torch.Tensor] | None = None,
    dtype: torch.dtype | None = None,
    family: str | None = None,
    arch: str | None = None,
) -> Generator[Any]:
    """``local``: a private copy of the seed model. ``vllm``: exports the seed weights as an
    HF folder in ``dtype`` (what a fresh engine loads) and starts the actors (Ray must be
    up), or with ``colocate`` one engine in this process. ``seed_state``: the seed's full
    weights when ``seed_model`` is sharded. ``model_name``: its asset card, or None for a
    model loaded from a path, described by ``family`` and ``arch``."""
    if config.backend == "local":
        if seed_state is not None:
            raise ConfigError("generator.backend=local cannot start from a sharded policy: use a reference model")
        return LocalGenerator(copy.deepcopy(seed_model), tokenizer, batch_size=config.max_batch_size)

    from fs2_semionline.generation.vllm_engine import cuda_available

    model_dir, to_hf = _export_seed(
        seed_state if seed_state is not None else seed_model.state_dict(),
        tokenizer,
        work_dir / "generator_seed_hf",
        model_name=model_name,
        tokenizer_name=tokenizer_name,
        dtype=dtype,
        family=family,
        arch=arch,
    )
    engine_args = dict(config.engine_args)
    if config.batch_invariant:
        os.environ["VLLM_BATCH_INVARIANT"] = "1"  # read by vLLM at import: before the engine's
    if dtype is not None:
        engine_args.setdefault("dtype", str(dtype).removeprefix("torch."))
    max_model_len = int(getattr(seed_model, "max_seq_len"))
    if config.colocate:
        from fs2_semionline.generation.colocated import ColocatedVLLMGenerator

        if cuda_available():  # the trainer keeps the rest of the device
            engine_args.setdefault("gpu_memory_utilization", COLOCATED_GPU_MEMORY_UTILIZATION)
        return ColocatedVLLMGenerator(
            model_dir, to_hf=to_hf, max_model_len=max_model_len, seed=seed, engine_args=engine_args
        )

    return _replicas(config, model_dir, to_hf, engine_args, max_model_len=max_model_len, seed=seed)


def _replicas(
    config: RolloutGeneratorSection,
    model_dir: Path,
    to_hf: Any,
    engine_args: dict[str, Any],
    *,
    max_model_len: int,
    seed: int,
) -> Generator[Any]:
    """``generator.replicas`` vLLM engines as Ray actors, started from ``model_dir``."""
    from fs2_semionline.generation.vllm_ray import RayVLLMGenerator, ReplicaOptions

    options = ReplicaOptions(
        replicas=config.replicas,
        tensor_parallel_size=config.tensor_parallel_size,
        num_cpus=config.num_cpus_per_replica,
        engine_args=engine_args,
        sync_timeout_s=config.sync_timeout_s,
        generate_timeout_s=config.generate_timeout_s,
        max_restarts=config.max_restarts,
        batch_invariant=config.batch_invariant,
    )
    return RayVLLMGenerator(
        model_dir,
        to_hf=to_hf,
        options=options,
        max_model_len=max_model_len,
        seed=seed,
        sync_bucket_bytes=config.sync_bucket_mb << 20,
    )


def _export_seed(
    source: dict[str, torch.Tensor],
    tokenizer: Tokenizer,
    model_dir: Path,
    *,
    model_name: str | None,
    tokenizer_name: str,
    dtype: torch.dtype | None,
    family: str | None,
    arch: str | None,
) -> tuple[Path, Any]:
    """The seed weights as the HF folder a fresh engine loads (in ``dtype``), and the
    converter that turns later policy weights into the same HF names."""
    from fs2_semionline.glue.hf_export import StreamingHFConverter, export_hf_model

    store = get_dependency_resolver().resolve(AssetStore)
    family_name, model_config = _model_config(store, model_name, family, arch)
    state = {
        k: v.detach().to("cpu", dtype if dtype is not None and v.is_floating_point() else v.dtype)
        for k, v in source.items()
    }
    export_hf_model(
        state,
        model_config,
        tokenizer.vocab_info,
        model_dir,
        tokenizer_dir=tokenizer_folder(store, tokenizer_name),
        family=family_name,
    )
    return model_dir, StreamingHFConverter.of(state, model_config, family_name)


def _model_config(store: AssetStore, model_name: str | None, family: str | None, arch: str | None) -> tuple[str, Any]:
    """The model family and config of the seed: from its asset card, or (a model loaded
    from a path) from ``model.family`` and ``model.arch``."""
    resolver = get_dependency_resolver()
    if model_name is not None:
        card = store.retrieve_card(model_name)
        family_name = get_model_family_name(card)
        return family_name, resolver.resolve(ModelFamily, key=family_name).get_model_config(card)
    if family is None or arch is None:
        raise ConfigError("generator.backend=vllm with model.path needs model.family and model.arch")
    model_config = resolver.resolve(ModelFamily, key=family).maybe_get_arch_config(arch)
    if model_config is None:
        raise ConfigError(f"model.arch {arch!r} is not an architecture of model family {family!r}")
    return family, model_config


def tokenizer_folder(store: AssetStore, tokenizer_name: str) -> Path:
    """The tokenizer card's folder (vLLM and transformers read the HF tokenizer files
    beside the weights)."""
    p = Path(store.retrieve_card(tokenizer_name).field("tokenizer").as_uri().path)
    return p if p.is_dir() else p.parent


def serving_dtype(generator: RolloutGeneratorSection, trainer: Any, model_dtype: torch.dtype) -> torch.dtype:
    """The dtype the generator serves in (``generator.dtype: auto``): the trainer's
    compute dtype, bf16 under static mixed precision, else the policy's dtype."""
    if generator.dtype != "auto":
        return getattr(torch, generator.dtype)  # type: ignore[no-any-return]
    mp = trainer.mixed_precision
    if mp.mode == "static" and mp.dtype is not None:
        return mp.dtype  # type: ignore[no-any-return]
    return model_dtype


class RestoreThreads:
    def __init__(self, threads: int) -> None:
        self._threads = threads

    def close(self) -> None:
        torch.set_num_threads(self._threads)


def share_cpu_with_generator(
    generator: RolloutGeneratorSection, ray_address: str | None, ray_cpus: int | None
) -> RestoreThreads:
    """On a CPU-only machine running its own Ray cluster, the engines' threads and the
    trainer's would otherwise oversubscribe the cores and stall the generator exactly
    when it should work ahead: the trainer keeps the cores the replicas do not hold.
    Closing the result restores the trainer's thread count."""
    import math
    import os

    from fairseq2.logging import log

    restore = RestoreThreads(torch.get_num_threads())
    if torch.cuda.is_available() or ray_address is not None:
        return restore
    cores = ray_cpus or os.cpu_count() or 1
    held = math.ceil(generator.replicas * generator.num_cpus_per_replica)
    threads = max(1, cores - held)
    if threads < torch.get_num_threads():
        log.info("CPU only: the trainer uses {} of {} cores, the generator replicas {}", threads, cores, held)
        torch.set_num_threads(threads)
    return restore
