"""Every random draw of a run is a pure function of (common.seed, step): resuming needs
no saved RNG state. Rollout sampling, DPO pairing and validation sampling all derive
their seeds here."""

from __future__ import annotations

import hashlib
import numbers
import random

__all__ = ["step_seed", "step_rng"]


def step_seed(seed: int, step_nr: int) -> int:
    """The 64-bit seed of step ``step_nr`` of a run seeded with ``seed``.

    ``int.from_bytes(sha256(f"fs2_semionline.pairing:{seed}:{step_nr}")[:8], "big")``.
    SHA-256 instead of ``hash()`` because ``hash()`` of str/tuples is salted per
    interpreter (``PYTHONHASHSEED``), which would make a resumed run draw
    different pairs. Changing this formula (its "pairing" tag included) changes every
    draw of old runs.
    """
    seed, step_nr = _as_int(seed, "seed"), _as_int(step_nr, "step_nr")
    digest = hashlib.sha256(f"fs2_semionline.pairing:{seed}:{step_nr}".encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big")


def step_rng(seed: int, step_nr: int) -> random.Random:
    """A fresh RNG for one training step, a pure function of ``(seed, step_nr)``."""
    return random.Random(step_seed(seed, step_nr))


def _as_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    return int(value)
