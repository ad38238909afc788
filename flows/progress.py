"""A fleet's progress as a person follows it: the terminal's live line and the Prefect UI's progress artifact.

    12 of 100 done (10 PASS, 2 FAIL); running orders, ledger; 0:42 elapsed, about 5:50 left

The ETA comes from the plan: each drill still to run at its expected wall
time (the median of its newest drills in the history; a never-drilled one at
the fleet's median), over the drills run at once, scaled by how the drills
done so far compared with their expected times. Without a plan (no history),
the drills still to run at the pace of those done so far; none before the
first drill ends. The artifact (key `drills-progress`) is created when the
fan-out starts and updated as drills end, at most every UPDATE_EVERY seconds
and once at the end: each update is one request to the Prefect server, which
a 10,000-drill nightly must not pay per drill. A server that does not answer
costs the progress display, never a drill.
"""

from __future__ import annotations

import threading
import time
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from drillbook.tasks.text import duration_text, visible

PROGRESS_KEY = "drills-progress"
UPDATE_EVERY = 2.0  # seconds between two artifact updates
RUNNING_SHOWN = 3  # names of running drills on the line; more are counted


class FleetProgress:
    """How many of this process's fleet drills have ended, by verdict, and which run now."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self, total: int | None = None) -> None:
        with self._lock:
            self.verdicts: dict[str, int] = {}
            self.running: dict[str, float] = {}
            self.total = total
            self.began = time.monotonic()
            self.expected: dict[str, float] = {}
            self.at_once = 1
            self._took: list[tuple[float, float]] = []  # (expected, actual) seconds of the drills done with a plan
            self._artifact: UUID | None = None
            self._published = 0.0

    def begin(self, total: int, *, artifact: bool = True, expected: dict[str, float | None] | None = None, at_once: int = 1) -> None:
        """A fan-out of `total` drills starts (the CLI may have counted them already: the count is kept).

        `expected`: each database's expected wall time from the history (None: never drilled); `at_once`: drills run at once.
        """
        self.reset(total)
        known = sorted(seconds for seconds in (expected or {}).values() if seconds)
        if known:
            fallback = known[len(known) // 2]
            with self._lock:
                self.expected = {name: seconds or fallback for name, seconds in (expected or {}).items()}
                self.at_once = max(1, at_once)
        if artifact:
            try:
                self._artifact = create_progress_artifact(0.0, key=PROGRESS_KEY, description=self.line())
            except Exception:  # noqa: BLE001 - no server or no run context: the terminal's line still works
                self._artifact = None

    def started(self, name: str) -> None:
        with self._lock:
            self.running[name] = time.monotonic()

    def ended(self, verdict: str, name: str | None = None) -> None:
        with self._lock:
            self.verdicts[verdict] = self.verdicts.get(verdict, 0) + 1
            if name is not None:
                began = self.running.pop(name, None)
                planned = self.expected.pop(name, None)
                if began is not None and planned:
                    self._took.append((planned, time.monotonic() - began))
        self.publish()

    def _planned_left(self, now: float) -> float | None:
        """Seconds left by the plan (under the lock): the drills not done at their expected time, those running less their time so far."""
        if not self.expected:
            return None
        pace = sum(actual for _, actual in self._took) / sum(planned for planned, _ in self._took) if self._took else 1.0
        work = sum(
            max(0.0, seconds * pace - (now - self.running[name] if name in self.running else 0.0))
            for name, seconds in self.expected.items()
        )
        return work / self.at_once

    def publish(self, *, final: bool = False) -> None:
        """Update the Prefect progress artifact (throttled; `final`: now, whatever the time since the last one)."""
        if self._artifact is None or not self.total:
            return
        now = time.monotonic()
        with self._lock:
            if not final and now - self._published < UPDATE_EVERY:
                return
            self._published = now
            done = sum(self.verdicts.values())
        try:
            update_progress_artifact(self._artifact, 100.0 * min(done, self.total) / self.total, description=self.line())
        except Exception:  # noqa: BLE001 - the progress artifact is a view; the drills and their record go on
            self._artifact = None

    def line(self, total: int | None = None) -> str:
        """'3 of 12 done (2 PASS, 1 FAIL); running orders; 0:42 elapsed, about 1:50 left'."""
        total = total if total is not None else self.total
        with self._lock:
            done = sum(self.verdicts.values())
            counts = ", ".join(f"{n} {verdict}" for verdict, n in sorted(self.verdicts.items()))
            running = sorted(self.running, key=self.running.__getitem__)
            now = time.monotonic()
            elapsed = now - self.began
            planned = self._planned_left(now)
        text = f"{done} of {total if total is not None else '?'} done" + (f" ({counts})" if counts else "")
        if running:
            names = ", ".join(visible(name) for name in running[:RUNNING_SHOWN])
            more = f" and {len(running) - RUNNING_SHOWN} more" if len(running) > RUNNING_SHOWN else ""
            text += f"; running {names}{more}"
        if total and done < total and planned is not None:
            text += f"; {duration_text(elapsed)} elapsed, about {duration_text(planned)} left"
        elif done and total and done < total:
            left = elapsed / done * (total - done)
            text += f"; {duration_text(elapsed)} elapsed, about {duration_text(left)} left"
        elif done or running:
            text += f"; {duration_text(elapsed)} elapsed"
        return text


PROGRESS = FleetProgress()
