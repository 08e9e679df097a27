"""Rule-based rewards for RL on verifiable tasks.

Kept light on purpose: importing this package must not import Math-Verify,
sympy or torch, because spawned scoring workers import it on start-up.
"""

from fs2_semionline.rewards.boxed import MAX_ANSWER_CHARS, MAX_GOLD_CHARS, extract_final_answer, final_boxes
from fs2_semionline.rewards.math_judge import verify_math
from fs2_semionline.rewards.math_pool import MathVerifyPool
from fs2_semionline.rewards.verdicts import BatchVerdicts, Verdict, VerdictStatus

__all__ = [
    "BatchVerdicts",
    "MAX_ANSWER_CHARS",
    "MAX_GOLD_CHARS",
    "MathVerifyPool",
    "Verdict",
    "VerdictStatus",
    "extract_final_answer",
    "final_boxes",
    "verify_math",
]
