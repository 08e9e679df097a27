"""In-process sampling with fairseq2's own ``SamplingSequenceGenerator`` (KV-cached).

This is the ``local`` generator backend: no Ray, no vLLM. Prompts of different
lengths are right-padded into one batch and described by a ``BatchLayout``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from fairseq2.data.tokenizers import TokenDecoder, Tokenizer
from fairseq2.generation import Hypothesis
from fairseq2.generation.sampling import SamplingSequenceGenerator, TopKSampler, TopPSampler
from fairseq2.models.clm import CausalLM
from fairseq2.nn import BatchLayout

from fs2_semionline.generation.protocol import Completion, SamplingConfig
from fs2_semionline.generation.sharding import WeightBuckets, as_buckets


def text_decoder(tokenizer: Tokenizer) -> TokenDecoder:
    """A decoder that drops special tokens.

    fairseq2 0.8.1's ``HgTokenizer.create_decoder`` caches the first decoder it makes and
    returns it whatever ``skip_special_tokens`` a later call asks for, so after any plain
    ``decode`` the rollouts' text would keep special tokens. Build our own instead.
    """
    from fairseq2.data.tokenizers.hg import HuggingFaceTokenDecoder
    from fairseq2.models.hg.tokenizer import HgTokenizer

    if isinstance(tokenizer, HgTokenizer):
        return HuggingFaceTokenDecoder(tokenizer.model, skip_special_tokens=True)
    return tokenizer.create_decoder(skip_special_tokens=True)


@torch.inference_mode()
def sample_completions(
    model: CausalLM,
    tokenizer: Tokenizer,
    prompts: Sequence[Sequence[int]],
    num_samples: int,
    sampling: SamplingConfig,
    *,
    batch_size: int = 32,
    device: torch.device | None = None,
) -> list[list[Completion]]:
    """``num_samples`` completions for every prompt, in prompt order (temperature 0: greedy).

    Untempered (temperature 1 or greedy), each completion carries the sampler's log-prob
    of every token it drew, as vLLM's do (raw logits); tempered ones carry none
    (fairseq2 scores the tempered distribution)."""
    vocab = tokenizer.vocab_info
    if vocab.eos_idx is None or vocab.pad_idx is None:
        raise ValueError(f"the tokenizer needs EOS and PAD tokens to sample, got {vocab}")
    if sampling.temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {sampling.temperature}")
    greedy = sampling.temperature == 0
    untempered = greedy or sampling.temperature == 1.0
    device = device or next(model.parameters()).device
    generator = SamplingSequenceGenerator(
        model,
        vocab,
        TopKSampler(k=1) if greedy else TopPSampler(p=sampling.top_p),
        num_gens=num_samples,
        max_gen_len=sampling.max_gen_len,
        temperature=1.0 if greedy else sampling.temperature,
        compute_scores=untempered,
    )
    decoder = text_decoder(tokenizer)
    results: list[list[Completion]] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            seq_lens = [len(p) for p in chunk]
            seqs = torch.full((len(chunk), max(seq_lens)), vocab.pad_idx, dtype=torch.int64)
            for i, p in enumerate(chunk):
                seqs[i, : len(p)] = torch.as_tensor(p, dtype=torch.int64)
            seqs = seqs.to(device)
            output = generator(seqs, BatchLayout.of(seqs, seq_lens))
            for hyps in output.hypotheses:
                results.append([_completion(hyp, sampling.max_gen_len, vocab.eos_idx, decoder) for hyp in hyps])
    finally:
        model.train(was_training)
    return results


def _completion(hyp: Hypothesis, max_gen_len: int, eos_idx: int, decoder: TokenDecoder) -> Completion:
    """One hypothesis as a completion: its tokens without the EOS it ended on, its text,
    and the log-probs of its tokens when the sampler scored them."""
    # fairseq2 caps a padded batch at its longest prompt + max_gen_len, so a shorter
    # prompt's completion can run longer: cut it to max_gen_len tokens (EOS included, as
    # vLLM's max_tokens counts it).
    ids = hyp.seq.tolist()[:max_gen_len]
    logprobs = None
    if hyp.step_scores is not None:  # probabilities of the drawn tokens
        logprobs = tuple(hyp.step_scores[: len(ids)].double().log().tolist())
    finished = bool(ids) and ids[-1] == eos_idx
    if finished:
        ids = ids[:-1]
    text = decoder(torch.as_tensor(ids, dtype=torch.int64)) if ids else ""
    return Completion(ids, text, finished, logprobs)


class PolicySampler:
    """``sampler(prompts, num_samples, sampling, seed)`` with fairseq2's sampler on
    ``model``: torch's RNG seeded with ``seed`` for the call, the caller's restored."""

    def __init__(self, model: CausalLM, tokenizer: Tokenizer, *, batch_size: int) -> None:
        self._model, self._tokenizer, self._batch_size = model, tokenizer, batch_size

    def prepare(self, step_nr: int) -> None:
        pass

    def __call__(
        self, prompts: Sequence[Sequence[int]], num_samples: int, sampling: SamplingConfig, seed: int
    ) -> list[list[Completion]]:
        if not prompts:
            return []
        device = next(self._model.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            return sample_completions(
                self._model, self._tokenizer, prompts, num_samples, sampling, batch_size=self._batch_size
            )


class GeneratorSampler:
    """``sampler(prompts, num_samples, sampling, seed)`` through a rollout generator."""

    def __init__(self, generator: Any) -> None:
        self._generator = generator

    def __call__(
        self, prompts: Sequence[Sequence[int]], num_samples: int, sampling: SamplingConfig, seed: int
    ) -> list[list[Completion]]:
        from fs2_semionline.generation.protocol import rollouts

        return rollouts(self._generator, prompts, num_samples, sampling, seed)


class LocalGenerator:
    """``generator.backend=local``: fairseq2's sampler on a private copy of the policy."""

    def __init__(self, model: CausalLM, tokenizer: Tokenizer, *, batch_size: int = 64) -> None:
        self._model = model
        self._model.eval()
        self._model.requires_grad_(False)
        self._tokenizer = tokenizer
        self._batch_size = batch_size
        self._version = 0

    @property
    def version(self) -> int:
        return self._version

    @torch.no_grad()
    def sync(self, weights: Mapping[str, torch.Tensor] | WeightBuckets, version: int) -> None:
        """Loads bucket by bucket; every weight of the model must arrive."""
        expected = set(self._model.state_dict())
        loaded: set[str] = set()
        for bucket in as_buckets(weights):
            result = self._model.load_state_dict(dict(bucket), strict=False)
            if result.unexpected_keys:
                raise KeyError(f"not weights of the generator's model: {result.unexpected_keys[:5]}")
            loaded |= set(bucket)
        if loaded != expected:
            raise KeyError(f"a weight sync missed {sorted(expected - loaded)[:5]}")
        self._version = version

    def submit(
        self, prompts: Sequence[Sequence[int]], num_rollouts: int, sampling: SamplingConfig, seed: int
    ) -> list[list[Completion]]:
        """Runs at once (there is nothing to overlap with in-process): the handle is the result."""
        # The sampler draws from torch's global RNG: seed it per call so a resumed run
        # draws exactly what the uninterrupted run drew, then restore the caller's state.
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            return sample_completions(
                self._model, self._tokenizer, prompts, num_rollouts, sampling, batch_size=self._batch_size
            )
        finally:
            torch.set_rng_state(state)

    def wait(self, pending: list[list[Completion]]) -> list[list[Completion]]:
        return pending

    def close(self) -> None:
        pass
