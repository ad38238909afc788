"""The queue a fan-out's worker tasks drill from: grouped by bucket, a throttled bucket one worker at a time, a budget's deadline."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

from prefect.concurrency.sync import concurrency

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.lookahead import HistorySnapshot
from drillbook.tasks.result import DrillResult


class DrillQueue:
    """The databases a fan-out drills, grouped by bucket; a worker prefers the bucket it already holds a slot on.

    A bucket that throttled a drill (503 SlowDown: the replica inspection's `throttled`) is drilled by one worker at a
    time from then on: the others leave it and drill the other buckets, instead of all waiting on the slow one's retries.
    """

    def __init__(
        self,
        entries: list[DatabaseEntry],
        buckets: dict[str, str],
        history: HistorySnapshot | None = None,
        deadline: datetime | None = None,
    ):
        self.history = history  # read once for the fan-out's drills (not a task parameter: Prefect would walk it)
        self.deadline = deadline  # a nightly's budget: no drill starts after it
        self.stopped: list[str] = []  # the databases not started because the deadline had passed
        self._lock = threading.Lock()
        # Stable: catalogue order within a bucket. Under a deadline, the risk order as given, whichever bucket: the riskiest start first.
        self._waiting = list(entries) if deadline else sorted(entries, key=lambda entry: buckets[entry.name])
        self._buckets = buckets
        self._on: dict[str, int] = {}  # workers on each bucket
        self.throttled: set[str] = set()

    def take(self, held_bucket: str | None) -> DatabaseEntry | None:
        """The next database for a worker on `held_bucket` (None: none yet); None when nothing is left for it."""
        with self._lock:
            self._leave(held_bucket)
            if self.deadline is not None and self._waiting and datetime.now(UTC) >= self.deadline:
                self.stopped += [entry.name for entry in self._waiting]
                self._waiting = []
            chosen: int | None = None
            for index, entry in enumerate(self._waiting):
                bucket = self._buckets[entry.name]
                if bucket in self.throttled and self._on.get(bucket):
                    continue  # another worker is on it
                if chosen is None:
                    chosen = index
                if self.deadline is not None:  # the risk order as given: the first one a worker may take
                    break
                if bucket == held_bucket:
                    chosen = index
                    break
            if chosen is None:
                return None
            entry = self._waiting.pop(chosen)
            self._on[self._buckets[entry.name]] = self._on.get(self._buckets[entry.name], 0) + 1
            return entry

    def drilled(self, entry: DatabaseEntry, result: DrillResult) -> None:
        if result.replica is not None and result.replica.throttled:
            with self._lock:
                self.throttled.add(self._buckets[entry.name])

    def _leave(self, bucket: str | None) -> None:
        if bucket is not None and self._on.get(bucket):
            self._on[bucket] -= 1


@contextlib.contextmanager
def held_slot(limit: str, logger: logging.Logger | logging.LoggerAdapter) -> Iterator[None]:
    """One slot of `limit` while the block runs (strict: a missing limit is an error); its release may fail and is not fatal.

    A server that is down or restarting when a worker gives its slot back would otherwise fail the worker task, and
    the results it holds (drills already done and recorded) would be lost to the nightly's summary. The lease expires
    on the server by itself."""
    slot = concurrency(limit, occupy=1, strict=True, raise_on_lease_renewal_failure=False)
    slot.__enter__()
    try:
        yield
    except BaseException:
        if not slot.__exit__(*sys.exc_info()):
            raise
    else:
        try:
            slot.__exit__(None, None, None)
        except Exception as exc:  # noqa: BLE001 - the bookkeeping's failure, said once; the drills' results stand
            logger.warning(
                "could not give back the %s slot (%s: %s): its lease expires on the server by itself", limit, type(exc).__name__, exc
            )
