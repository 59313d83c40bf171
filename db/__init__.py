"""The call log (R10, R12): every call, its whole timeline and its compliance record,
and the follow-ups promised on it (R8).

``CallStore`` is the one entry point: non-blocking writes for the controller,
async queries for the CLI and the web. See ``db.store`` for how writes survive
a database outage and a controller restart.
"""

from db.records import (
    AgentRecord,
    AmbiguousCallId,
    AmbiguousFollowUpId,
    CallRecord,
    CallSummary,
    ComplianceMark,
    FollowUp,
    TimelineEntry,
)
from db.store import CallStore

__all__ = [
    "AgentRecord",
    "AmbiguousCallId",
    "AmbiguousFollowUpId",
    "CallRecord",
    "CallStore",
    "CallSummary",
    "ComplianceMark",
    "FollowUp",
    "TimelineEntry",
]
