"""Starting or joining the Ray cluster the generator (and reward-model) actors live on.

``ray.address`` null: a private local cluster on loopback with no dashboard, shut down
at the end of the run. ``auto`` or ``ray://host:port``: join an existing cluster
(``recipes/launch/``) and leave it running.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

from fairseq2.utils.validation import ValidationResult

from fs2_semionline.errors import ConfigError
from fs2_semionline.fields import FieldChecks

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class RaySection:
    """Where the generator and reward-model actors run."""

    address: str | None = None
    """null: start a local cluster on loopback; ``auto`` or ``ray://host:port``: join one."""
    num_cpus: int | None = None
    """CPUs of a local cluster (default: all of the machine's)."""
    num_gpus: int | None = None
    """GPUs of a local cluster (default: all of the machine's)."""

    def validate(self) -> ValidationResult:
        checks = FieldChecks(self)
        checks.at_least("num_cpus", 1, optional=True, note=" (null = all of the machine's)")
        checks.at_least("num_gpus", 0, optional=True, note=" (null = all of the machine's)")
        if self.address is not None and not self.address.strip():
            checks.fail("address", "must be null (a local cluster), 'auto' or 'ray://host:port'")
        return checks.result


class RayCluster:
    """Owns ``ray.init`` / ``ray.shutdown`` for one run; a no-op if Ray is already up."""

    def __init__(self, section: RaySection) -> None:
        self._section = section
        self._started = False

    def start(self) -> None:
        import ray

        if ray.is_initialized():
            return
        section = self._section
        if section.address is None:
            # A private loopback cluster: no token needed, nothing listens beyond 127.0.0.1.
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(
                address="local",
                num_cpus=section.num_cpus,
                num_gpus=section.num_gpus,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                log_to_driver=True,
                logging_level=logging.WARNING,
            )
        else:
            _check_reachable(section.address)
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
