"""How much work each family has, for ``GET /v1/queues/{family}``: jobs queued and jobs running.

Both are ``shared/hotpipe/shared/queues.py``'s counts (``backlog``), read from Redis on demand; the
chart's KEDA ScaledObjects poll this route for both (a pool needs one worker per running job plus
enough for its queue), and ``/metrics`` reports the same counts.
"""

from __future__ import annotations

from pydantic import BaseModel

from hotpipe.shared.errors import NotFound
from hotpipe.shared.families import FAMILIES, base_family

#: families that have a queue: variants run on their base family's workers
QUEUED_FAMILIES: tuple[str, ...] = tuple(sorted({base_family(f) for f in FAMILIES}))


class QueueState(BaseModel):
    """``GET /v1/queues/{family}``."""

    family: str
    queued: int
    running: int


def queued_family(family: str) -> str:
    """``family`` if it has a queue; a 404 saying which queue its jobs go to otherwise."""
    if family in QUEUED_FAMILIES:
        return family
    if family in FAMILIES:
        raise NotFound(f"family {family!r} has no queue of its own; its jobs run on {base_family(family)!r}'s",
                       field="family")
    raise NotFound(f"no family {family!r}; families with a queue: {', '.join(QUEUED_FAMILIES)}", field="family")
