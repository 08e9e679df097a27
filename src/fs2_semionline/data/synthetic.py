"""What the synthetic tasks (tiny math, tiny chat) share: unique seeded splits, JSONL files."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def unique_splits(
    draw: Callable[[random.Random], T], seed: int, num_train: int, num_valid: int, num_test: int
) -> dict[str, list[T]]:
    """Records with distinct ``prompt``s drawn from one seeded RNG, cut into disjoint
    valid / test / train splits (the held-out ones first, so they do not move when the
    training split grows)."""
    rng = random.Random(seed)
    wanted = num_train + num_valid + num_test
    seen: set[str] = set()
    records: list[T] = []
    for _ in range(wanted * 20):
        if len(records) == wanted:
            break
        record = draw(rng)
        prompt = getattr(record, "prompt")
        if prompt not in seen:
            seen.add(prompt)
            records.append(record)
    else:
        raise RuntimeError(f"could not draw {wanted} records with distinct prompts (got {len(records)})")
    return {
        "valid": records[:num_valid],
        "test": records[num_valid : num_valid + num_test],
        "train": records[num_valid + num_test :],
    }


def write_jsonl(path: Path, records: Sequence[Any]) -> None:
    """One dataclass record per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
