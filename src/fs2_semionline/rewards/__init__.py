"""Rule-based rewards for RL on verifiable tasks.

Kept light on purpose: importing this package must not import Math-Verify,
sympy or torch, because spawned scoring workers import it on start-up.
"""

from fs2_semionline.rewards.math_verify import (
    MAX_ANSWER_CHARS,
    MAX_GOLD_CHARS,
    BatchVerdicts,
    MathVerifyPool,
    Verdict,
    VerdictStatus,
    extract_last_boxed,
    verify_math,
)

__all__ = [
    "BatchVerdicts",
    "MAX_ANSWER_CHARS",
    "MAX_GOLD_CHARS",
    "MathVerifyPool",
    "Verdict",
    "VerdictStatus",
    "extract_last_boxed",
    "verify_math",
]
