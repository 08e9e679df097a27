"""Every reach into Ray's internals, in one place, each loud.

Ray 2.60 gives an actor handle no public id (only the actor itself can read its own, and
a dead or stuck one cannot answer); our timeout errors name the actor so that ``ray logs
actor --id ...`` finds its log. A Ray that renames the attribute raises
:class:`RayInternalsChanged` naming it, not an ``AttributeError`` that hides the timeout
being reported; ``tests/test_internals.py`` reads it from a live actor of the installed Ray.
"""

from __future__ import annotations

from typing import Any


class RayInternalsChanged(RuntimeError):
    """A private attribute this package reads is gone from the installed Ray."""


def actor_id_hex(handle: Any) -> str:
    """The hex id of the actor behind ``handle`` (as ``ray list actors`` prints it)."""
    actor_id = getattr(handle, "_actor_id", None)
    if actor_id is None or not callable(getattr(actor_id, "hex", None)):
        raise RayInternalsChanged(
            f"Ray's {type(handle).__name__} has no '_actor_id' with .hex(): "
            "fs2_semionline/glue/ray_internals.py needs updating for this Ray"
        )
    return str(actor_id.hex())
