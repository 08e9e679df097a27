"""The math reward's process pool: batch scoring in worker processes.

Our per-item budget (:mod:`~fs2_semionline.rewards.math_judge`) is a signal,
so it only works on a main thread, and the caller (trainer, Ray actor) may
score from any thread. Batches are therefore judged in worker *processes*
(fresh interpreters, never ``fork``: the trainer has torch/CUDA/Ray loaded),
where the scoring code always runs on the main thread.

A budget enforced with a signal cannot interrupt a long C call (e.g. a giant
integer power). The parent therefore also applies a hard wall-clock limit per
item; a worker that exceeds it is killed and replaced, and only its item is
reported as failed.
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
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from fs2_semionline.rewards.boxed import MAX_ANSWER_CHARS, MAX_GOLD_CHARS, _Job, _prepare
from fs2_semionline.rewards.math_judge import _check_timeout, _judge, _math_verify, is_gold_failure
from fs2_semionline.rewards.verdicts import BatchVerdicts, Verdict, VerdictStatus

__all__ = [
    "MathVerifyPool",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# Worker process
# --------------------------------------------------------------------------- #


def _worker_main(jobs: Connection, results: Connection, timeout_s: float) -> None:
    """Worker loop: receive ``(job_id, answer, gold)``, send back
    ``(job_id, status, reason)``. Runs on the worker's main thread."""
    # Ctrl-C goes to the whole process group; let the parent decide what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Outside an item no alarm means anything: one that strays past the judge's
    # clean-up must not end an idle worker.
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
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
        job_id, answer, gold, why, extracted = msg
        verdict = _judge(_Job(answer, gold, why, extracted), timeout_s)
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

    def __init__(self, size: int, bad_golds: dict[str, str], timed_out: set[tuple[str, str | None]]) -> None:
        self.verdicts: list[Verdict | None] = [None] * size
        self.answers: list[str | None] = [None] * size
        self.golds: list[str] = [""] * size
        self.in_flight: dict[int, int] = {}  # job id -> item index
        self.bad_golds = bad_golds  # gold -> reason: the pool's, learned from results
        self.timed_out = timed_out  # (gold, answer) pairs that timed out: the pool's

    def resolve(self, job_id: int, status: VerdictStatus, reason: str) -> None:
        index = self.in_flight.pop(job_id, None)
        if index is not None:
            verdict = Verdict(status, reason, self.answers[index])
            self.verdicts[index] = verdict
            if is_gold_failure(verdict):
                self.bad_golds[self.golds[index]] = reason
            elif reason == "timeout" and len(self.timed_out) < 100_000:
                self.timed_out.add((self.golds[index], self.answers[index]))


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
    the caller may hold CUDA/Ray/threads) that import only this module (and the
    light modules it needs), talking over inherited pipes. ``score`` is
    thread-safe (calls are serialised).
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
        self._bad_golds: dict[str, str] = {}  # golds found unusable: every later sample fails at once
        self._timed_out: set[tuple[str, str | None]] = set()  # (gold, answer) pairs: a repeat fails at once
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
    def num_judged(self) -> int:
        """Items sent to a worker so far (the rest were resolved without Math-Verify)."""
        return self._next_job_id

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
        batch = _Batch(len(responses), self._bad_golds, self._timed_out)
        pending: deque[tuple[int, _Job]] = deque()
        for i, (response, gold) in enumerate(zip(responses, golds)):
            prepared = _prepare(response, gold, self.max_answer_chars)
            if isinstance(prepared, Verdict):
                batch.verdicts[i] = prepared
            else:
                batch.answers[i] = prepared.extracted if prepared.answer is None else prepared.answer
                batch.golds[i] = prepared.gold
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
                known = batch.bad_golds.get(job.gold)
                if known is not None:  # judged once per run: the gold itself is unusable
                    batch.verdicts[i] = Verdict("failed", known, batch.answers[i])
                    continue
                if (job.gold, batch.answers[i]) in batch.timed_out:  # the same pair timed out before
                    batch.verdicts[i] = Verdict("failed", "timeout", batch.answers[i])
                    continue
                job_id = self._next_job_id
                self._next_job_id += 1
                try:
                    w.jobs.send((job_id, job.answer, job.gold, job.why, job.extracted))
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
        "spawn") that imports only this module (and the light modules it needs).
        Unlike multiprocessing it does not re-import the caller's ``__main__``
        (torch, Ray, a training script), so it starts in ~1 s and is safe from
        any entry point."""
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
