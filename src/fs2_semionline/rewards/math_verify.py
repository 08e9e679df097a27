"""Rule-based math reward: compare the last ``\\boxed{...}`` answer of a response
with a gold answer using HuggingFace Math-Verify.

Why this module looks the way it does:

* Math-Verify (sympy + an ANTLR LaTeX parser) can take unbounded time on
  adversarial answers (``\\boxed{10^{10^{10^{10}}}}``, ``\\boxed{1000000!}``,
  deeply nested brackets). Its own timeout uses ``signal.alarm``, which only
  works on a process's main thread and only in whole seconds. We therefore
  disable Math-Verify's timeout and enforce our own per-item budget with
  ``signal.setitimer`` (fractional seconds) around gold parse + answer parse +
  comparison, and run batch scoring in worker *processes* (fresh interpreters,
  never ``fork``: the trainer has torch/CUDA/Ray loaded), where the scoring
  code always runs on the main thread.
* A budget enforced with a signal cannot interrupt a long C call (e.g. a giant
  integer power). The parent therefore also applies a hard wall-clock limit per
  item; a worker that exceeds it is killed and replaced, and only its item is
  reported as failed.
* Only the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) is ever
  given to Math-Verify, so the length of the response only costs a linear scan
  in the parent, and an earlier (abandoned) boxed answer can never score.

Verdicts separate the model's faults from ours: "incorrect" (reward 0.0) is
the model's fault (wrong value, no/unbalanced/empty/too long/unparseable boxed
answer); "failed" (reward ``None``, to be masked out, never treated as 0) is
ours (timeout, Math-Verify exception, unusable gold, worker crash).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from itertools import product
from multiprocessing.connection import Connection, wait
from types import ModuleType
from typing import Any, Literal

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

log = logging.getLogger(__name__)

VerdictStatus = Literal["correct", "incorrect", "failed"]

#: Boxed answers longer than this are "incorrect" ("answer too long") without
#: being parsed: no real answer is that long, parse time grows super-linearly
#: with length, and treating them as "failed" would let a policy escape a 0
#: reward by rambling inside the box.
MAX_ANSWER_CHARS = 1_000

#: Gold answers longer than this are "failed" ("gold too long"). This also
#: bounds one job message to well below a pipe buffer, so sending a job to a
#: stuck worker can never block the parent.
MAX_GOLD_CHARS = 10_000


# --------------------------------------------------------------------------- #
# Verdicts
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Verdict:
    """Outcome of scoring one response against one gold answer.

    ``status`` says whose fault a non-correct outcome is: "incorrect" is the
    model's (a real 0 reward), "failed" is ours (no reward: mask the sample).
    """

    status: VerdictStatus
    reason: str
    #: Content of the last boxed answer as found in the response (``None`` when
    #: there is none, it is unbalanced or too long).
    extracted: str | None = None

    @property
    def reward(self) -> float | None:
        """1.0 / 0.0, or ``None`` for "failed": a failure must never read as 0."""
        if self.status == "correct":
            return 1.0
        if self.status == "incorrect":
            return 0.0
        return None


@dataclass
class BatchVerdicts:
    """Verdicts of one batch, in input order, with counts for logging."""

    verdicts: list[Verdict]

    def __len__(self) -> int:
        return len(self.verdicts)

    def __iter__(self) -> Iterator[Verdict]:
        return iter(self.verdicts)

    def __getitem__(self, index: int) -> Verdict:
        return self.verdicts[index]

    @property
    def num_correct(self) -> int:
        return sum(v.status == "correct" for v in self.verdicts)

    @property
    def num_incorrect(self) -> int:
        return sum(v.status == "incorrect" for v in self.verdicts)

    @property
    def num_failed(self) -> int:
        return sum(v.status == "failed" for v in self.verdicts)

    @property
    def rewards(self) -> list[float | None]:
        """Per-item rewards; ``None`` marks items to mask out."""
        return [v.reward for v in self.verdicts]

    def reason_counts(self) -> dict[str, int]:
        """How often each reason occurs, to monitor failure modes."""
        return dict(Counter(v.reason for v in self.verdicts))


# --------------------------------------------------------------------------- #
# Boxed-answer extraction (pure Python, no Math-Verify needed)
# --------------------------------------------------------------------------- #


def _last_marker(text: str) -> int:
    """Index of the ``{`` that opens the last ``\\boxed{`` / ``\\fbox{`` (spaces
    allowed before the brace), or -1. Linear: each marker is searched
    backwards once over disjoint stretches of ``text``."""
    n = len(text)
    boxed = text.rfind("\\boxed")
    fbox = text.rfind("\\fbox")
    while boxed >= 0 or fbox >= 0:
        if boxed > fbox:
            pos, i = boxed, boxed + 6
        else:
            pos, i = fbox, fbox + 5
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i < n and text[i] == "{":
            return i
        # "\\boxedfoo", "\\fboxsep", "\\boxed 5": not a boxed{...} answer; look
        # further left.
        if boxed > fbox:
            boxed = text.rfind("\\boxed", 0, pos)
        else:
            fbox = text.rfind("\\fbox", 0, pos)
    return -1


def _scan_last_boxed(text: str, max_chars: int | None) -> tuple[str | None, str]:
    """Find the last boxed answer; returns (content, "ok") or (None, reason).

    Brace matching is a hand-written linear scan: ``\\{`` / ``\\}`` (and any
    other backslash escape) do not count as braces. With ``max_chars`` the scan
    stops as soon as the content is known to be longer, so a huge unbalanced
    answer costs O(max_chars), not O(len(text)).
    """
    brace = _last_marker(text)
    if brace < 0:
        return None, "no boxed answer"
    start = brace + 1
    limit = len(text) if max_chars is None else min(len(text), start + max_chars + 1)
    depth = 1
    i = start
    while i < limit:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start:i], "ok"
        i += 1
    if limit < len(text):
        return None, "answer too long"
    return None, "unbalanced boxed answer"


def extract_last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``.

    Only the last one counts, so a model cannot hedge with several answers.
    Returns ``None`` when there is none or when the last one is unbalanced
    (e.g. a response truncated inside its answer). Linear time, no regex.
    """
    content, _ = _scan_last_boxed(text, max_chars=None)
    return content


def _balanced(s: str) -> bool:
    """Whether the unescaped braces of ``s`` balance (so ``\\boxed{s}`` is one box)."""
    depth = 0
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth < 0:
                return False
        i += 1
    # i > len(s): a trailing lone backslash, which would escape the box's "}".
    return depth == 0 and i == len(s)


def _unwrap_gold(gold: str) -> str:
    """Strip math delimiters / a boxed wrapper so that golds such as "55",
    "$\\frac{1}{2}$" or "\\boxed{7}" all end up as a bare expression."""
    g = gold.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(g) >= len(left) + len(right) and g.startswith(left) and g.endswith(right):
            g = g[len(left) : len(g) - len(right)].strip()
            break
    if "\\boxed" in g or "\\fbox" in g:
        inner, _ = _scan_last_boxed(g, max_chars=None)
        if inner is not None:
            g = inner.strip()
    return g


@dataclass(frozen=True)
class _Job:
    """What a worker needs to judge one item: the boxed content and the gold."""

    answer: str
    gold: str


def _prepare(response: str, gold: str, max_answer_chars: int) -> Verdict | _Job:
    """Resolve everything that needs no Math-Verify (cheap, runs in the parent).

    Gold problems come first: without a usable gold nothing can be scored, and
    that is our failure whatever the response looks like.
    """
    content, why = _scan_last_boxed(response, max_chars=max_answer_chars)
    g = _unwrap_gold(gold)
    if not g:
        return Verdict("failed", "empty gold", content)
    if len(g) > MAX_GOLD_CHARS:
        return Verdict("failed", "gold too long", content)
    if not _balanced(g):
        return Verdict("failed", "gold unparseable", content)
    if content is None:
        return Verdict("incorrect", why)
    if not content.strip():
        return Verdict("incorrect", "empty answer", content)
    return _Job(answer=content, gold=g)


# --------------------------------------------------------------------------- #
# Math-Verify call with our own (fractional, whole-item) timeout
# --------------------------------------------------------------------------- #


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


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise ``_ItemTimeout`` in the main thread after ``seconds`` (and again
    every ``_ALARM_REPEAT_S`` until the block ends); restores any previously
    armed real-time timer and SIGALRM handler afterwards."""
    armed = [True]

    def _on_alarm(signum: int, frame: object) -> None:
        if armed[0]:
            raise _ItemTimeout()

    old_handler = signal.signal(signal.SIGALRM, _on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds, _ALARM_REPEAT_S)
    started = time.monotonic()
    try:
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
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:
            remaining = max(old_delay - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, old_interval)


def _exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _judge_inner(job: _Job) -> Verdict:
    mv = _math_verify()
    try:
        gold_parsed = _parse_gold_cached(job.gold)
    except Exception as exc:  # noqa: BLE001 - any Math-Verify error is ours
        return Verdict("failed", f"gold parse error: {_exc_text(exc)}", job.answer)
    # A gold that only yields Math-Verify's raw-string fallback (e.g. "???") is
    # bad data: comparing against it would hand out silent, wrong zeros.
    if not any(not isinstance(x, str) for x in gold_parsed):
        return Verdict("failed", "gold unparseable", job.answer)
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
    try:
        with _deadline(timeout_s):
            return _judge_inner(job)
    except _ItemTimeout:
        return Verdict("failed", "timeout", job.answer)
    except Exception as exc:  # noqa: BLE001 - e.g. RecursionError, MemoryError
        return Verdict("failed", f"error: {_exc_text(exc)}", job.answer)


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


# --------------------------------------------------------------------------- #
# Worker process
# --------------------------------------------------------------------------- #


def _worker_main(jobs: Connection, results: Connection, timeout_s: float) -> None:
    """Worker loop: receive ``(job_id, answer, gold)``, send back
    ``(job_id, status, reason)``. Runs on the worker's main thread."""
    # Ctrl-C goes to the whole process group; let the parent decide what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _math_verify()
        _judge(_Job("1/2", "0.5"), timeout_s)  # warm up sympy/antlr lazily-built state
    except BaseException:  # noqa: BLE001 - report anything, then exit
        try:
            results.send(("error", traceback.format_exc()))
        except OSError:
            pass
        return
    results.send(("ready", os.getpid()))
    while True:
        try:
            msg = jobs.recv()
        except (EOFError, OSError):
            return  # parent went away
        if msg is None:
            return
        job_id, answer, gold = msg
        verdict = _judge(_Job(answer, gold), timeout_s)
        try:
            results.send((job_id, verdict.status, verdict.reason))
        except OSError:
            return


def _worker_entry() -> None:
    """Entry point of ``python -c`` workers: argv = [jobs fd, results fd, timeout_s]."""
    jobs_fd, results_fd, timeout_s = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    _worker_main(
        Connection(jobs_fd, writable=False),
        Connection(results_fd, readable=False),
        timeout_s,
    )


class _Batch:
    """State of one ``score`` call: results land here by job id, so a late
    result from an interrupted earlier call can never be misattributed."""

    def __init__(self, size: int) -> None:
        self.verdicts: list[Verdict | None] = [None] * size
        self.answers: list[str | None] = [None] * size
        self.in_flight: dict[int, int] = {}  # job id -> item index

    def resolve(self, job_id: int, status: VerdictStatus, reason: str) -> None:
        index = self.in_flight.pop(job_id, None)
        if index is not None:
            self.verdicts[index] = Verdict(status, reason, self.answers[index])


@dataclass
class _Worker:
    """Parent-side handle of one worker process."""

    proc: subprocess.Popen[bytes]
    jobs: Connection  # parent -> worker
    results: Connection  # worker -> parent; EOF when the worker dies
    started: float
    ready: bool = False
    job: int | None = None  # id of the job being judged
    job_started: float = 0.0


# --------------------------------------------------------------------------- #
# Pool
# --------------------------------------------------------------------------- #


class MathVerifyPool:
    """Batch scorer over worker processes; use as a context manager.

    Why processes: Math-Verify can only be timed out on a main thread, and the
    caller (trainer, Ray actor) may score from any thread. Each item gets
    ``timeout_s`` inside its worker, plus a hard wall-clock limit
    ``hard_timeout_s`` enforced here: a worker past it is killed and replaced
    (the rest of the pool keeps going), and the item is "failed"/"timeout". A
    worker that dies mid-item fails that item ("worker crashed ...") only.

    Workers are fresh interpreters (``subprocess`` + ``exec``, never ``fork``:
    the caller may hold CUDA/Ray/threads) that import only this module, talking
    over inherited pipes. ``score`` is thread-safe (calls are serialised).
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout_s: float = 5.0,
        hard_timeout_s: float | None = None,
        *,
        max_answer_chars: int = MAX_ANSWER_CHARS,
        startup_timeout_s: float = 120.0,
    ) -> None:
        _check_timeout(timeout_s)
        if num_workers is None:
            num_workers = min(4, os.cpu_count() or 1)
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        if hard_timeout_s is None:
            # Room for the signal to fire, the worker to reply and a busy host.
            hard_timeout_s = 2.0 * timeout_s + 5.0
        if hard_timeout_s <= timeout_s:
            raise ValueError(f"hard_timeout_s ({hard_timeout_s}) must exceed timeout_s ({timeout_s})")
        if not 1 <= max_answer_chars <= MAX_GOLD_CHARS:
            # Bounded so that a job message always fits in a pipe buffer.
            raise ValueError(f"max_answer_chars must be in [1, {MAX_GOLD_CHARS}]")
        self.num_workers = num_workers
        self.timeout_s = float(timeout_s)
        self.hard_timeout_s = float(hard_timeout_s)
        self.max_answer_chars = max_answer_chars
        self.startup_timeout_s = startup_timeout_s
        self._lock = threading.Lock()
        self._closed = False
        self._workers: list[_Worker] = []
        self._startup_failures = 0
        self._next_job_id = 0
        self.num_recycled = 0  #: workers killed or found dead and replaced
        for _ in range(num_workers):
            self._workers.append(self._spawn())

    # -- lifecycle ---------------------------------------------------------- #

    def __enter__(self) -> MathVerifyPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def close(self) -> None:
        """Stop all workers (politely, then by force). Idempotent."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        for w in self._workers:
            try:
                w.jobs.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 2.0
        for w in self._workers:
            try:
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._kill(w)
        self._workers = []

    @property
    def worker_pids(self) -> list[int | None]:
        """PIDs of the current workers (for monitoring and tests)."""
        return [w.proc.pid for w in self._workers]

    def wait_until_ready(self, timeout_s: float | None = None) -> None:
        """Block until every worker has imported Math-Verify (~1-2 s), so the
        first real batch does not pay the start-up."""
        with self._lock:
            self._check_open()
            deadline = time.monotonic() + (self.startup_timeout_s if timeout_s is None else timeout_s)
            while not all(w.ready for w in self._workers):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("math-verify workers did not become ready in time")
                self._poll(min(remaining, 0.5), batch=None)

    # -- scoring ------------------------------------------------------------ #

    def score(self, responses: Sequence[str], golds: Sequence[str]) -> BatchVerdicts:
        """Score ``responses[i]`` against ``golds[i]``; never raises on a bad item."""
        if len(responses) != len(golds):
            raise ValueError(f"{len(responses)} responses but {len(golds)} golds")
        batch = _Batch(len(responses))
        pending: deque[tuple[int, _Job]] = deque()
        for i, (response, gold) in enumerate(zip(responses, golds)):
            prepared = _prepare(response, gold, self.max_answer_chars)
            if isinstance(prepared, Verdict):
                batch.verdicts[i] = prepared
            else:
                batch.answers[i] = prepared.answer
                pending.append((i, prepared))
        if pending:
            with self._lock:
                self._check_open()
                self._run(pending, batch)
        verdicts = [v for v in batch.verdicts if v is not None]
        assert len(verdicts) == len(responses)
        return BatchVerdicts(verdicts)

    def _run(self, pending: deque[tuple[int, _Job]], batch: _Batch) -> None:
        while pending or batch.in_flight:
            for slot, w in enumerate(self._workers):
                # A worker still busy with a job of an interrupted earlier call
                # (job id unknown to ``batch``) is not idle: wait for it.
                if not (pending and w.ready and w.job is None):
                    continue
                i, job = pending.popleft()
                job_id = self._next_job_id
                self._next_job_id += 1
                try:
                    w.jobs.send((job_id, job.answer, job.gold))
                except (OSError, ValueError):
                    # The job never reached the worker: it is innocent, retry it.
                    pending.appendleft((i, job))
                    self._replace(slot)
                    continue
                w.job, w.job_started = job_id, time.monotonic()
                batch.in_flight[job_id] = i
            self._poll(self._next_wait(), batch)

    def _next_wait(self) -> float:
        now = time.monotonic()
        waits = [1.0]
        for w in self._workers:
            if w.job is not None:
                waits.append(w.job_started + self.hard_timeout_s - now)
            elif not w.ready:
                waits.append(w.started + self.startup_timeout_s - now)
        return max(0.0, min(waits))

    def _poll(self, timeout: float, batch: _Batch | None) -> None:
        """Wait for messages/deaths, then apply results, crashes and timeouts."""
        wait([w.results for w in self._workers], timeout)
        for slot in range(len(self._workers)):
            w = self._workers[slot]
            dead = False
            try:
                while w.results.poll():
                    self._handle(w, w.results.recv(), batch)
            except (EOFError, OSError):
                dead = True
            if dead or w.proc.poll() is not None:
                self._on_death(slot, batch)
        now = time.monotonic()
        for slot in range(len(self._workers)):
            w = self._workers[slot]
            if w.job is not None and now - w.job_started > self.hard_timeout_s:
                log.warning(
                    "math-verify worker %s exceeded the hard limit of %.1f s; killing and replacing it",
                    w.proc.pid,
                    self.hard_timeout_s,
                )
                if batch is not None:
                    batch.resolve(w.job, "failed", "timeout")
                w.job = None
                self._replace(slot)
            elif not w.ready and now - w.started > self.startup_timeout_s:
                raise RuntimeError(f"math-verify worker did not start within {self.startup_timeout_s} s")

    def _handle(self, w: _Worker, msg: tuple[Any, ...], batch: _Batch | None) -> None:
        kind = msg[0]
        if kind == "ready":
            w.ready = True
            self._startup_failures = 0
        elif kind == "error":
            raise RuntimeError(f"math-verify worker failed to start:\n{msg[1]}")
        elif kind == w.job:
            w.job = None
            if batch is not None:  # else: a stale result of an interrupted call
                batch.resolve(kind, msg[1], msg[2])

    def _on_death(self, slot: int, batch: _Batch | None) -> None:
        w = self._workers[slot]
        try:
            code: int | None = w.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        if w.job is not None and batch is not None:
            batch.resolve(w.job, "failed", f"worker crashed (exit code {code})")
        w.job = None
        if not w.ready:
            self._startup_failures += 1
            if self._startup_failures >= 3:
                raise RuntimeError(f"math-verify workers keep dying during start-up (last exit code {code})")
        log.warning("math-verify worker %s died (exit code %s); replacing it", w.proc.pid, code)
        self._replace(slot)

    # -- worker management -------------------------------------------------- #

    def _spawn(self) -> _Worker:
        """Start one worker: a fresh interpreter (``exec``, like multiprocessing's
        "spawn") that imports only this module. Unlike multiprocessing it does
        not re-import the caller's ``__main__`` (torch, Ray, a training script),
        so it starts in ~1 s and is safe from any entry point."""
        jobs_r, jobs_w = os.pipe()
        results_r, results_w = os.pipe()
        code = f"import sys; sys.path[:] = {sys.path!r}; from {__name__} import _worker_entry; _worker_entry()"
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", code, str(jobs_r), str(results_w), repr(self.timeout_s)],
                stdin=subprocess.DEVNULL,
                pass_fds=(jobs_r, results_w),
                close_fds=True,
            )
        except BaseException:
            for fd in (jobs_r, jobs_w, results_r, results_w):
                os.close(fd)
            raise
        # Close the worker's ends here, so that its death reads as EOF.
        os.close(jobs_r)
        os.close(results_w)
        return _Worker(
            proc=proc,
            jobs=Connection(jobs_w, readable=False),
            results=Connection(results_r, writable=False),
            started=time.monotonic(),
        )

    @staticmethod
    def _kill(w: _Worker) -> None:
        if w.proc.poll() is None:
            w.proc.kill()
            try:
                w.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                log.error("math-verify worker %s did not die after SIGKILL", w.proc.pid)
        w.jobs.close()
        w.results.close()

    def _replace(self, slot: int) -> None:
        self._kill(self._workers[slot])
        self._workers[slot] = self._spawn()
        self.num_recycled += 1

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("MathVerifyPool is closed")
