"""Two data-parallel trainer processes (a real Gloo gang) share rank 0's generator."""

from __future__ import annotations

import json
import os

import torch
import torch.multiprocessing as mp

from fs2_semionline.generation.protocol import SamplingConfig

SAMPLING = SamplingConfig(temperature=1.0, top_p=1.0, max_gen_len=16)


def _rank_main(rank: int, port: int, queue: mp.Queue) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE="2",
    )
    torch.set_num_threads(1)
    import fairseq2
    from fairseq2.gang import ProcessGroupGang
    from fairseq2.models.hg.tokenizer import HgTokenizerConfig, load_hg_tokenizer
    from fairseq2.models.llama import get_llama_model_hub

    from fs2_semionline.core.paths import TINY_MATH_DATA_DIR, TINY_MATH_DIR
    from fs2_semionline.data.templates import verifiable_prompt
    from fs2_semionline.generation.gang import GangGenerator
    from fs2_semionline.generation.local import LocalGenerator
    from fs2_semionline.generation.protocol import rollouts

    fairseq2.init_fairseq2()
    gang = ProcessGroupGang.create_default_process_group(torch.device("cpu"))
    tokenizer = load_hg_tokenizer(TINY_MATH_DIR / "tokenizer", HgTokenizerConfig())
    rows = [json.loads(l) for l in (TINY_MATH_DATA_DIR / "valid.jsonl").read_text().splitlines()[:5]]
    prompts = [tokenizer.create_raw_encoder()(verifiable_prompt(r["prompt"])).tolist() for r in rows]
    mine = prompts[:3] if rank == 0 else prompts[3:]  # ranks hold different numbers of prompts
    owner = None
    if rank == 0:
        model = get_llama_model_hub().load_model("tiny_math_sft", device=torch.device("cpu"))
        owner = LocalGenerator(model, tokenizer)
    shared = GangGenerator(gang, owner)
    shared.sync({} if owner is None else owner._model.state_dict(), version=3)
    got = rollouts(shared, mine, 2, SAMPLING, seed=5)
    expected = rollouts(owner, prompts, 2, SAMPLING, seed=5) if owner is not None else None
    queue.put(
        (
            rank,
            shared.version,
            [[c.token_ids for c in cs] for cs in got],
            None if expected is None else [[c.token_ids for c in cs] for cs in expected],
        )
    )
    gang.close()


def test_ranks_get_their_slice_of_one_generation() -> None:
    from fs2_semionline.generation.pg_sync import free_port

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(rank, port, queue)) for rank in range(2)]
    for p in procs:
        p.start()
    results = {r[0]: r for r in (queue.get(timeout=180) for _ in procs)}
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    expected = results[0][3]
    assert results[0][1] == results[1][1] == 3  # every rank knows the generator's version
    assert results[0][2] == expected[:3]
    assert results[1][2] == expected[3:]
    assert results[1][2] != results[0][2][:2]
