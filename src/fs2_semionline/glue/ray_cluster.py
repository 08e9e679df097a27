"""Starting or joining the Ray cluster the generator (and reward-model) actors live on.

``ray.address`` null: a private local cluster on loopback with no dashboard, shut down
at the end of the run. ``auto`` or ``ray://host:port``: join an existing cluster
(``recipes/launch/``) and leave it running.

A local cluster on a GPU node hands its actors the node's GPUs from id 0 up, which the
trainer's ranks hold: ``ray.gpu_ids`` restricts it to the generators' own GPUs (Ray is
started seeing only those), and :func:`check_gpu_placement` refuses a layout where
trainer and generator GPUs overlap, or where the generators need more GPUs than they get
(Ray would wait for them forever).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from fs2_semionline.config.shared import RaySection
from fs2_semionline.core.errors import ConfigError

log = logging.getLogger(__name__)


class RayCluster:
    """Owns ``ray.init`` / ``ray.shutdown`` for one run; a no-op if Ray is already up."""

    def __init__(self, section: RaySection) -> None:
        self._section = section
        self._started = False

    def start(self) -> None:
        import ray

        section = self._section
        if section.address is not None:
            # A configured address is checked even when this process is already in a
            # cluster (a notebook, a test session), so a wrong one never passes unseen.
            _check_reachable(section.address)
        if ray.is_initialized():
            return
        if section.address is None:
            # A private loopback cluster: no token needed, nothing listens beyond 127.0.0.1.
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            num_gpus = section.num_gpus if section.gpu_ids is None else len(section.gpu_ids)
            with _visible_gpus(section.gpu_ids):
                ray.init(
                    address="local",
                    num_cpus=section.num_cpus,
                    num_gpus=num_gpus,
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                    log_to_driver=True,
                    logging_level=logging.WARNING,
                )
        else:
            try:
                ray.init(address=section.address, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError) as err:
                raise ConfigError(f"ray.address={section.address}: no Ray cluster to join ({err})") from err
        self._started = True
        log.info("Ray %s (%s)", "started" if section.address is None else "joined", ray.cluster_resources())

    def stop(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()
        self._started = False

    close = stop


@contextmanager
def _visible_gpus(gpu_ids: Sequence[int] | None) -> Iterator[None]:
    """While Ray starts, let it see only ``gpu_ids``: the node it starts (and every worker
    it spawns) inherits this ``CUDA_VISIBLE_DEVICES``, and Ray hands its actors ids from it.
    This process's own CUDA context, already made, is not affected."""
    if gpu_ids is None:
        yield
        return
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


def visible_gpus(num_devices: int, env: str | None) -> list[int]:
    """This process's GPUs as the node numbers them: ``CUDA_VISIBLE_DEVICES`` (integer ids)
    when set, else 0 … num_devices-1."""
    if env is None or not env.strip():
        return list(range(num_devices))
    ids = [part.strip() for part in env.split(",") if part.strip()]
    if not all(part.isdigit() for part in ids):
        raise ConfigError(f"CUDA_VISIBLE_DEVICES={env}: only integer GPU ids can be checked against ray.gpu_ids")
    return [int(part) for part in ids]


def check_gpu_placement(
    *, trainer_gpus: Sequence[int], pool: Sequence[int], needed: int, pool_key: str = "ray.gpu_ids"
) -> None:
    """Refuse, in one line, a local layout where the generators' GPU pool (what a local Ray
    hands out) overlaps the trainer ranks' GPUs, or holds fewer than the replicas need."""
    overlap = sorted(set(trainer_gpus) & set(pool))
    if overlap:
        free = [i for i in pool if i not in set(trainer_gpus)]
        hint = f" (e.g. --config '{pool_key}=[{','.join(map(str, free[:needed]))}]')" if len(free) >= needed else ""
        raise ConfigError(
            f"{pool_key}: the generators' GPUs {list(pool)} overlap GPUs {overlap} of the trainer ranks on this node "
            f"(trainer GPUs {list(trainer_gpus)}); give the generators GPUs of their own{hint}, or set "
            "generator.colocate=true to share one on purpose"
        )
    if len(pool) < needed:
        raise ConfigError(
            f"{pool_key}: generator.replicas × generator.tensor_parallel_size need {needed} GPUs, "
            f"the local Ray cluster has {len(pool)} ({list(pool)}); Ray would wait for the rest forever"
        )


def check_local_placement(
    section: RaySection, *, needed: int, local_world_size: int, num_devices: int, cuda_visible: str | None
) -> None:
    """:func:`check_gpu_placement` for a local cluster started by trainer rank 0: the
    trainer's ranks on this node hold its first ``local_world_size`` visible GPUs (one
    each, by local rank); Ray hands out ``ray.gpu_ids``, else the first ``ray.num_gpus``
    of the visible GPUs, else all of them."""
    visible = visible_gpus(num_devices, cuda_visible)
    if section.gpu_ids is not None:
        pool = list(section.gpu_ids)
    else:
        pool = visible if section.num_gpus is None else visible[: section.num_gpus]
    check_gpu_placement(trainer_gpus=visible[:local_world_size], pool=pool, needed=needed)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """``host:port`` or ``ray://host:port``: something must listen there (Ray itself
    retries for about 40 s and then fails deep in its client); ``auto`` is Ray's to find."""
    host_port = address.removeprefix("ray://")
    if address == "auto" or ":" not in host_port:
        return
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except ValueError:
        raise ConfigError(f"ray.address={address}: the port must be a number") from None
    except OSError as err:
        raise ConfigError(f"ray.address={address}: nothing answers at {host}:{port} ({err})") from None
