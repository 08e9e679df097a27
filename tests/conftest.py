"""Shared fixtures. The tiny assets are package data, so tests need no downloads."""

from __future__ import annotations

import os
from collections import Counter

# Make a failing fairseq2 extension raise instead of only logging a warning.
os.environ.setdefault("FAIRSEQ2_EXTENSION_TRACE", "1")
# One OpenMP thread: with Ray actors and Math-Verify workers busy on the same 2 cores, a
# second thread made sampling about 40x slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from fairseq2.models.hg.tokenizer import HgTokenizerConfig, load_hg_tokenizer

    from fs2_semionline.core.paths import TINY_MATH_DIR

    return load_hg_tokenizer(TINY_MATH_DIR / "tokenizer", HgTokenizerConfig())


@pytest.fixture(scope="session")
def tiny_model():
    """The shipped SFT model, loaded by name through fairseq2's asset store."""
    import torch
    from fairseq2.models.llama import get_llama_model_hub

    model = get_llama_model_hub().load_model("tiny_math_sft", device=torch.device("cpu"))
    model.eval()
    return model


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every test that needs one (start-up costs ~5 s).

    Recipes run inside find Ray up and join it instead of starting their own. 4 logical
    CPUs: a 2-replica generator plus one more actor fit beside each other.
    """
    from fs2_semionline.glue.ray_cluster import RayCluster, RaySection

    cluster = RayCluster(RaySection(num_cpus=4))
    cluster.start()
    yield cluster
    cluster.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with the most ``slow`` tests run first. ``make test`` hands whole files to two
    workers in collection order (``--dist loadfile --no-loadscope-reorder``): the long
    files start early and the short ones fill the gaps, instead of one worker running a
    long file alone at the end (xdist's default order puts files of few tests last)."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow") is not None)
    items.sort(key=lambda item: -slow[item.path])
