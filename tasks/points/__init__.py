"""Restore points other than the newest: a time (`--at`), a TXID (`--txid`), a random point of a window, the retention boundary.

litestream 0.5.17 restores a point by its LTX files' times (the time written in
each file's header; a compacted file carries the time it was compacted, later
than the transactions in it) and, asked for a time, silently stops at the first
gap in the TXID chain: the copy is then *earlier* than the point, and the exit
code is 0. So the point is planned here from the replica listing, independently
of litestream, and the restored TXID is checked against that plan:

- expected TXID for a time T: the highest TXID of any listed file written before T;
- a hole in the TXIDs at or just after it (a deleted file) makes the point unprovable;
- the oldest restorable point is the oldest file that starts at TXID 1 (a snapshot or the first file).

Everything here is a plain function; the listing and the header reads are the only I/O.
"""

from drillbook.tasks.points.coverage import CoverageSlot, PointRecord, coverage, point_due, point_records, proven_slots, slot_of
from drillbook.tasks.points.plan import PointCheck, choose_random_point, plan_point, verify_point
from drillbook.tasks.points.request import KEYWORDS, PointKind, PointProblem, PointRequest, parse_at, parse_txid, point_request
from drillbook.tasks.points.timeline import PointFile, Timeline, read_timeline

__all__ = [
    "KEYWORDS",
    "CoverageSlot",
    "PointRecord",
    "point_records",
    "PointCheck",
    "PointFile",
    "PointKind",
    "PointProblem",
    "PointRequest",
    "Timeline",
    "choose_random_point",
    "coverage",
    "parse_at",
    "parse_txid",
    "plan_point",
    "point_due",
    "point_request",
    "proven_slots",
    "read_timeline",
    "slot_of",
    "verify_point",
]
