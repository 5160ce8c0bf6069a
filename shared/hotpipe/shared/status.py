"""The job state machine: states and the transitions allowed between them."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Where a job is; lowercase wire values."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED})

#: target state -> states it may be entered from.  ``running -> queued`` is recovery only:
#: the reaper takes back a job whose lease expired, or the owning attempt gives its job
#: back at shutdown (``store.JobStore.reap`` / ``release``); no other write may requeue.
#: The one transition table: ``scripts.py`` compiles it into every Redis script, whose ``move`` refuses
#: any other pair (``lua/prelude.lua``).
ALLOWED_FROM: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING}),
    Status.RUNNING: frozenset({Status.QUEUED}),
    Status.SUCCEEDED: frozenset({Status.RUNNING}),
    Status.FAILED: frozenset({Status.QUEUED, Status.RUNNING}),
    Status.CANCELED: frozenset({Status.QUEUED, Status.RUNNING}),
}


class TransitionError(Exception):
    """A guarded transition found the job in a state it may not leave that way."""

    def __init__(self, job_id: str, current: Status | None, target: Status, expected: frozenset[Status],
                 detail: str = ""):
        self.job_id = job_id
        self.current = current
        self.target = target
        names = ", ".join(sorted(s.value for s in expected))
        where = current.value if current else "missing"
        super().__init__(detail or f"job {job_id} is {where}; {target.value} needs one of: {names}")
