"""Reward-model scoring on Ray actors, so the trainer never holds the reward model.

:class:`RewardModelActor` is the actor body (one :class:`RewardModel` per process);
:func:`remote_reward_model_actor` turns it into a Ray actor class on demand, so that
importing this module neither imports nor needs an initialised Ray.
:class:`RayRewardScorer` is the trainer-side client: it spreads items over replicas and
never lets one bad replica fail a training step. Items held by a replica that raised,
died or timed out come back as ``None`` (failed: the caller masks and counts them,
never reads them as 0) and the dead or stuck replica is replaced.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from fs2_semionline.config.shared import RewardModelSection
from fs2_semionline.rewards.reward_model import RewardModel, RewardModelSpec

__all__ = ["RayRewardScorer", "RewardModelActor", "remote_reward_model_actor"]

log = logging.getLogger(__name__)


class RewardModelActor:
    """Actor body: loads the reward model once, then scores batches."""

    def __init__(self, spec: RewardModelSpec, num_threads: int = 1) -> None:
        import torch

        # Ray reserves ``num_cpus`` for the actor; torch would otherwise use every core.
        torch.set_num_threads(num_threads)
        self._model = RewardModel(spec)

    def ready(self) -> bool:
        """Returns once ``__init__`` has finished (the model is loaded)."""
        return True

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float | None]:
        return self._model.score(prompts, responses)


def remote_reward_model_actor(num_cpus: float = 1, num_gpus: float = 0) -> Any:
    """The Ray actor class of :class:`RewardModelActor` with these resources."""
    import ray

    return ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(RewardModelActor)


class RayRewardScorer:
    """Scores (prompt, response) pairs on ``replicas`` reward-model actors.

    The caller must have called ``ray.init``. A spec with ``device="cuda"`` gets one
    GPU per replica. ``__init__`` waits until every replica has loaded its model, so a
    bad spec (e.g. a missing folder) raises here rather than failing every later call.
    Loading is bounded by ``start_timeout_s``, not ``timeout_s`` (an 8B checkpoint can
    take minutes to load), and so is the wait for a replacement replica, which the
    next :meth:`score` call awaits before sending it work.
    """

    def __init__(
        self,
        spec: RewardModelSpec,
        *,
        replicas: int = 1,
        num_cpus: float = 1,
        timeout_s: float = 300,
        start_timeout_s: float = 900,
    ) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        import ray

        self.spec = spec
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self.num_failed_calls = 0
        self._starting: list[Any] = []  # ready() refs of replacement actors
        num_gpus = 1 if spec.device.startswith("cuda") else 0
        self._num_threads = max(1, int(num_cpus))
        self._actor_cls = remote_reward_model_actor(num_cpus, num_gpus)
        self._actors: list[Any] = [self._spawn() for _ in range(replicas)]
        try:
            ray.get([a.ready.remote() for a in self._actors], timeout=start_timeout_s)
        except Exception as ex:
            self.close()
            raise RuntimeError(f"reward model actors failed to start for {spec}: {ex}") from ex

    def _spawn(self) -> Any:
        return self._actor_cls.remote(self.spec, self._num_threads)

    @property
    def actors(self) -> tuple[Any, ...]:
        """The current actor handles, one per replica."""
        return tuple(self._actors)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float | None]:
        """One reward per item; ``None`` for the items of a replica that failed."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not self._actors:
            raise RuntimeError("RayRewardScorer is closed")
        if self._starting:  # a replacement that failed to start fails its call below
            ray.wait(self._starting, num_returns=len(self._starting), timeout=self.start_timeout_s)
            self._starting = []
        n = len(prompts)
        rewards: list[float | None] = [None] * n
        per_replica = math.ceil(n / len(self._actors)) if n else 0
        calls = []
        for replica, start in enumerate(range(0, n, per_replica or 1)):
            end = min(start + per_replica, n)
            actor = self._actors[replica]
            ref = actor.score.remote(list(prompts[start:end]), list(responses[start:end]))
            calls.append((replica, start, end, ref))

        deadline = time.monotonic() + self.timeout_s
        for replica, start, end, ref in calls:
            try:
                out = ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
            except GetTimeoutError:
                why = f"timed out after {self.timeout_s:g} s"
                self._fail(replica, end - start, why, replace=True)
                continue
            except RayTaskError as ex:  # the method raised: the actor itself is fine
                last_line = (str(ex).strip().splitlines() or [""])[-1]
                self._fail(replica, end - start, f"raised {last_line}", replace=False)
                continue
            except RayActorError as ex:
                self._fail(replica, end - start, f"died ({type(ex).__name__})", replace=True)
                continue
            except Exception as ex:  # unschedulable, object lost, ...: start afresh
                self._fail(replica, end - start, f"failed ({type(ex).__name__})", replace=True)
                continue
            if not isinstance(out, list) or len(out) != end - start:
                self._fail(replica, end - start, "returned a malformed result", replace=False)
                continue
            rewards[start:end] = [float(r) if isinstance(r, (int, float)) and math.isfinite(r) else None for r in out]
        return rewards

    def _fail(self, replica: int, num_items: int, why: str, *, replace: bool) -> None:
        import ray

        self.num_failed_calls += 1
        actor = self._actors[replica]
        action = "replacing it" if replace else "keeping it"
        log.warning(
            "reward model replica %d (%s) %s: its %d rewards are None; %s",
            replica,
            actor,
            why,
            num_items,
            action,
        )
        if replace:
            ray.kill(actor, no_restart=True)  # a stuck actor would hold up the next calls
            self._actors[replica] = self._spawn()
            self._starting.append(self._actors[replica].ready.remote())

    def close(self) -> None:
        """Kills the actors (idempotent)."""
        import ray

        for actor in self._actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as ex:  # already gone
                log.debug("ray.kill(%s) failed: %s", actor, ex)
        self._actors = []

    def __enter__(self) -> RayRewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_reward_scorer(section: RewardModelSection) -> RayRewardScorer:
    """The reward model of ``reward.model`` in Ray actors (Ray must be up)."""
    from fs2_semionline.rewards.reward_model import reward_model_spec

    return RayRewardScorer(
        reward_model_spec(section), replicas=section.replicas, num_cpus=section.num_cpus, timeout_s=section.timeout_s
    )
