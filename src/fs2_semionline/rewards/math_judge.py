"""The math reward's judge: Math-Verify with our own (fractional, whole-item) timeout.

Math-Verify (sympy + an ANTLR LaTeX parser) can take unbounded time on
adversarial answers (``\\boxed{10^{10^{10^{10}}}}``, ``\\boxed{1000000!}``,
deeply nested brackets). Its own timeout uses ``signal.alarm``, which only
works on a process's main thread and only in whole seconds. We therefore
disable Math-Verify's timeout and enforce our own per-item budget with
``signal.setitimer`` (fractional seconds) around gold parse + answer parse +
comparison. :func:`verify_math` judges one item in this process (main thread
only); batch scoring runs the same judge in worker processes, where it always
runs on the main thread (:mod:`~fs2_semionline.rewards.math_pool`).

Math-Verify is imported lazily, on the first judged item, so that importing
this module stays cheap.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from itertools import product
from types import ModuleType
from typing import Any

from fs2_semionline.rewards.boxed import MAX_ANSWER_CHARS, _Job, _prepare
from fs2_semionline.rewards.verdicts import Verdict

__all__ = [
    "verify_math",
]


class _ItemTimeout(BaseException):
    """Raised by our SIGALRM handler. A BaseException so that the many
    ``except Exception`` blocks in sympy/Math-Verify cannot swallow it."""


_mv: ModuleType | None = None
_mv_configs: list[Any] = []


def _math_verify() -> ModuleType:
    """Import Math-Verify lazily (0.75 s) so that importing this module, e.g.
    in the trainer process that only uses the pool, stays cheap."""
    global _mv, _mv_configs
    if _mv is None:
        import math_verify
        import math_verify.grader
        import math_verify.parser

        # We pass timeout=None and time out ourselves; silence the one-off
        # "timeout is disabled" warning that Math-Verify would log.
        math_verify.parser.TIMEOUT_WARNING_SHOWN = True  # type: ignore[attr-defined]
        math_verify.grader.TIMEOUT_WARNING_SHOWN = True  # type: ignore[attr-defined]
        _mv_configs = [math_verify.LatexExtractionConfig(), math_verify.ExprExtractionConfig()]
        _mv = math_verify
    return _mv


def _parse_boxed(expr: str) -> list[Any]:
    """Parse one bare expression by wrapping it as ``\\boxed{...}``: this makes
    both LaTeX ("\\frac{1}{2}", "\\{1,2\\}") and plain ("7/2", "[1, 3)")
    forms parse, and nothing outside the box can be picked up."""
    mv = _math_verify()
    return list(
        mv.parse(
            "\\boxed{" + expr + "}",
            extraction_config=_mv_configs,
            parsing_timeout=None,  # type: ignore[arg-type]  # our own timer
            raise_on_error=True,
        )
    )


@lru_cache(maxsize=256)
def _parse_gold_cached(gold: str) -> tuple[Any, ...]:
    """Golds repeat across the samples of a prompt; parse each once per process.
    (Exceptions, including timeouts, are not cached.)"""
    return tuple(_parse_boxed(gold))


# After the first alarm, re-fire this often until the item ends: a signal that
# lands in a finaliser or a GC callback is printed and dropped by Python, so a
# one-shot timer can silently let a slow item run to completion (seen: 22 s
# against a 1 s budget).
_ALARM_REPEAT_S = 0.05


def _let_pending_signals_run() -> None:
    """A Python call: the interpreter runs any handler whose signal already arrived
    at its next check, which this call's entry is."""


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise ``_ItemTimeout`` in the main thread after ``seconds`` (and again
    every ``_ALARM_REPEAT_S`` until the block ends); restores any previously
    armed real-time timer and SIGALRM handler afterwards.

    Whatever the budget, the timer is armed only inside the ``try`` whose
    ``finally`` disarms it, so an alarm that fires at once (a budget of 1e-6 s)
    can never leave it armed; and the handler is restored only after any alarm
    already delivered has run (as a no-op), so none reaches the old one (for SIG_DFL
    Python would print "Signal 14 ignored due to race condition")."""
    armed = [True]

    def _on_alarm(signum: int, frame: object) -> None:
        if armed[0]:
            raise _ItemTimeout()

    old_handler = signal.signal(signal.SIGALRM, _on_alarm)
    old_delay, old_interval = 0.0, 0.0
    started = time.monotonic()
    try:
        old_delay, old_interval = signal.getitimer(signal.ITIMER_REAL)
        signal.setitimer(signal.ITIMER_REAL, seconds, _ALARM_REPEAT_S)
        yield
    finally:
        # A repeated alarm may land here; retry until the flag is down so the
        # clean-up below always runs.
        while armed[0]:
            try:
                armed[0] = False
            except _ItemTimeout:
                pass
        signal.setitimer(signal.ITIMER_REAL, 0)
        _let_pending_signals_run()
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:
            remaining = max(old_delay - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, old_interval)


def _exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


#: Golds this process found unusable (parse error, unparseable, timed out), with the
#: reason: every later sample of such a gold fails at once instead of paying for the
#: same parse (or the same timeout) again.
_BAD_GOLDS: dict[str, str] = {}
_MAX_BAD_GOLDS = 10_000


def _judge_inner(job: _Job, phase: list[str]) -> Verdict:
    mv = _math_verify()
    try:
        gold_parsed = _parse_gold_cached(job.gold)
    except Exception as exc:  # noqa: BLE001 - any Math-Verify error is ours
        return Verdict(
            "failed", f"gold parse error: {_exc_text(exc)}", job.extracted if job.answer is None else job.answer
        )
    # A gold that only yields Math-Verify's raw-string fallback (e.g. "???") is
    # bad data: comparing against it would hand out silent, wrong zeros.
    if not any(not isinstance(x, str) for x in gold_parsed):
        return Verdict("failed", "gold unparseable", job.extracted if job.answer is None else job.answer)
    phase[0] = "answer"
    if job.answer is None:  # no usable boxed answer: the gold was all there was to check
        return Verdict("incorrect", job.why, job.extracted)
    try:
        pred_parsed = _parse_boxed(job.answer)
    except Exception as exc:  # noqa: BLE001
        return Verdict("failed", f"parse error: {_exc_text(exc)}", job.answer)
    if not pred_parsed:
        return Verdict("incorrect", "unparseable answer", job.answer)
    # Compare pair by pair (as Math-Verify's verify does internally), so that an
    # exception in one pair neither hides a match in another nor reads as 0.
    error: Exception | None = None
    for g, p in product(gold_parsed, pred_parsed):
        try:
            if mv.verify(g, p, timeout_seconds=None, raise_on_error=True):
                return Verdict("correct", "equivalent", job.answer)
        except Exception as exc:  # noqa: BLE001
            error = exc
    if error is not None:
        return Verdict("failed", f"verify error: {_exc_text(error)}", job.answer)
    return Verdict("incorrect", "not equivalent", job.answer)


def _judge(job: _Job, timeout_s: float) -> Verdict:
    """Judge one prepared item within ``timeout_s`` (main thread only)."""
    extracted = job.extracted if job.answer is None else job.answer
    known = _BAD_GOLDS.get(job.gold)
    if known is not None:
        return Verdict("failed", known, extracted)
    phase = ["gold"]
    try:
        with _deadline(timeout_s):
            verdict = _judge_inner(job, phase)
    except _ItemTimeout:
        verdict = Verdict("failed", "gold timeout" if phase[0] == "gold" else "timeout", extracted)
    except Exception as exc:  # noqa: BLE001 - e.g. RecursionError, MemoryError
        return Verdict("failed", f"error: {_exc_text(exc)}", extracted)
    if is_gold_failure(verdict) and len(_BAD_GOLDS) < _MAX_BAD_GOLDS:
        _BAD_GOLDS[job.gold] = verdict.reason
    return verdict


def is_gold_failure(verdict: Verdict) -> bool:
    """A failure of the gold itself: the same for every sample of that gold."""
    return verdict.status == "failed" and verdict.reason.startswith("gold ")


def _check_timeout(timeout_s: float) -> None:
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")


def verify_math(
    response: str,
    gold: str,
    *,
    timeout_s: float = 5.0,
    max_answer_chars: int = MAX_ANSWER_CHARS,
) -> Verdict:
    """Score one response in this process.

    ``timeout_s`` bounds gold parse + answer parse + comparison together. The
    timeout is a signal, so this must run on the main thread; use
    :class:`MathVerifyPool` from threads, Ray actors' executor threads, etc.
    """
    _check_timeout(timeout_s)
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "verify_math() must be called on the main thread: its timeout uses "
            "SIGALRM, which Python only delivers to the main thread. Use "
            "MathVerifyPool (worker processes) from other threads."
        )
    prepared = _prepare(response, gold, max_answer_chars)
    if isinstance(prepared, Verdict):
        return prepared
    return _judge(prepared, timeout_s)
