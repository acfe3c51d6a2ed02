"""The states of one call, as stored in the ``calls.status`` column.

A :class:`~enum.StrEnum`: each member *is* its string (``CallStatus.COMPLETED == "completed"``), so the values
in SQLite, in DataFrames read from it and in JSON are the same plain strings as before.

The life of a call (see :mod:`evalkit.engine.runner`)::

    planned ──> submitting ──> submitted ──> completed | failed
       │             └── (process died while sending) ──> unknown
       ├── not_applicable (the model cannot do the case's operation)
       └── not_reached (a session's earlier turn did not complete, so this turn has no input)
"""

from __future__ import annotations

from enum import StrEnum


class CallStatus(StrEnum):
    """Where a call is in its life; every value is what the database stores."""

    #: written for every (case, model, repeat) before anything is spent
    PLANNED = "planned"
    #: committed just before the request is sent (a crash now leaves an unknown outcome)
    SUBMITTING = "submitting"
    #: the provider accepted the job and its prediction id is recorded (resume polls it, never re-sends)
    SUBMITTED = "submitted"
    #: the output is in the blob store
    COMPLETED = "completed"
    #: the provider (or the request) failed; ``error_category`` says why
    FAILED = "failed"
    #: the model cannot do this case (``reason`` says why); never sent
    NOT_APPLICABLE = "not_applicable"
    #: whether the provider accepted the request is not known; never re-sent automatically
    UNKNOWN = "unknown"
    #: a later turn of a session whose earlier turn did not complete (``reason`` says which and why); never sent
    NOT_REACHED = "not_reached"

    @property
    def terminal(self) -> bool:
        """No further step will change this call (unless a re-run retries it explicitly)."""
        return self in TERMINAL_STATUSES


#: states a call does not leave by itself
TERMINAL_STATUSES: frozenset[CallStatus] = frozenset(
    {CallStatus.COMPLETED, CallStatus.FAILED, CallStatus.NOT_APPLICABLE, CallStatus.UNKNOWN, CallStatus.NOT_REACHED}
)
#: states of a call that was sent to a provider (its outcome counts as an attempt)
ATTEMPTED_STATUSES: tuple[CallStatus, ...] = (CallStatus.COMPLETED, CallStatus.FAILED, CallStatus.UNKNOWN)

__all__ = ["ATTEMPTED_STATUSES", "TERMINAL_STATUSES", "CallStatus"]
