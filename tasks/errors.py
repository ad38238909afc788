"""Every error drillbook raises on purpose.

    DrillbookError                 base: anything drillbook itself reports
    ├── ConfigError                the catalogue (or a suite file) is not usable
    ├── LiveDatabaseGuard          a restore would touch the live database
    ├── ToolMissing                a required program (litestream) is not installed
    ├── DrillFailed                the drill ran and did not PASS (carries the result)
    ├── SlackDeliveryError         Slack did not take a report (the report waits in the outbox)
    ├── HistoryError               the history store could not be read or written (the bundle still holds the record)
    ├── PrefectUnavailable         Prefect's API could not be reached, or its temporary server did not start
    ├── DrillsFailed               a nightly / release run had a drill that did not PASS (carries all results)
    └── RecoveryError              `recover --find-clean` could not search (bad output path, replica not listable)

A drill that runs and finds the database unrecoverable is not an exception in
the library: the step results say so, and the verdict names the failure mode.
These exceptions are for the cases where the drill cannot run, and for the
flow's final state after the verdict, evidence and report are done. The CLI
turns them into messages and exit codes; the library never exits.

A leaf: it imports only the other leaves (outcome, text).
"""

from __future__ import annotations

from typing import Any

from drillbook.tasks.outcome import tally
from drillbook.tasks.text import one_line


class DrillbookError(Exception):
    """Base class: a message an operator can act on."""


class ConfigError(DrillbookError):
    """The catalogue is not usable; the message names file, entry and field."""

    def __init__(self, message: str, *, path: str | None = None, entry: str | None = None, field: str | None = None):
        super().__init__(message)
        self.path = path
        self.entry = entry
        self.field = field


class LiveDatabaseGuard(DrillbookError):
    """A scratch or output path is, or contains, a live database path."""


class ToolMissing(DrillbookError):
    """A program the drill needs is not installed or not executable."""


class DrillFailed(DrillbookError):
    """The drill finished with FAIL or ERROR; `result` is the whole DrillResult."""

    def __init__(self, result: Any):
        verdict = getattr(result, "verdict", "?")
        mode = getattr(result, "failure_mode", None)
        name = getattr(result, "database", "?")
        super().__init__(f"drill of {name!r}: {verdict}" + (f" ({mode})" if mode else ""))
        self.result = result

    def __reduce__(self):  # persisted as a run's result and read back by the run that started it
        return (type(self), (self.result,))


class SlackDeliveryError(DrillbookError):
    """Slack did not take a report; `reason` says why (never the token); `affects_all` when no other report would get through either."""

    def __init__(self, reason: str, *, affects_all: bool):
        reason = one_line(reason)  # an HTML error page from a proxy or load balancer must not fill the outbox listing
        super().__init__(reason)
        self.reason = reason
        self.affects_all = affects_all


class DrillsFailed(DrillbookError):
    """A nightly or release run finished with a FAIL or ERROR among its drills; `results` holds every DrillResult."""

    def __init__(self, what: str, results: list[Any], going_stale: list[str] | None = None):
        failing = [
            f"{r.database} {r.verdict.value}" + (f" ({r.failure_mode.value})" if r.failure_mode else "") for r in results if not r.passed
        ]
        said = f"{what}: {tally(r.verdict for r in results)}" + (f"; not passed: {', '.join(failing)}" if failing else "")
        if going_stale:  # a budgeted nightly that could not hold every database whose max_drill_age lapses before the next
            said += f"; going stale: {len(going_stale)} ({', '.join(going_stale[:10])}{' ...' if len(going_stale) > 10 else ''})"
        super().__init__(said)
        self.what = what
        self.results = results
        self.going_stale = going_stale or []

    def __reduce__(self):  # a batch run's failure is persisted and read back by the nightly / release run
        return (type(self), (self.what, self.results, self.going_stale))


class HistoryError(DrillbookError):
    """The history store could not be read or written; the message names the URL (without password)."""


class PrefectUnavailable(DrillbookError):
    """Prefect's API could not be reached, or its temporary server did not start; the message says which setting to change."""


class RecoveryError(DrillbookError):
    """`drillbook recover` could not search the replica or write its copy (exit 2; "no clean point" is exit 1, not this)."""
