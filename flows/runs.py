"""Running a flow and reading what it ended with: the one place a Prefect State is unwrapped.

The CLI (`run`, `nightly`, `release`), the demo, and the flows' own fan-out
helpers read outcomes through these functions, so a drill's result
travels the same way whether the run passed, failed with a verdict
(DrillFailed / DrillsFailed carry the results) or crashed.
"""

from __future__ import annotations

from typing import Any

from drillbook.tasks.errors import DrillbookError, DrillFailed, DrillsFailed
from drillbook.tasks.result import DrillResult


def unwrap(state: Any) -> tuple[bool, Any]:
    """(completed, value): the run's return value, or the exception it failed or crashed with. Never raises."""
    return state.is_completed(), state.result(raise_on_failure=False)


def drill_result_of(value: Any) -> DrillResult | None:
    """The DrillResult inside a drill run's outcome (a result, or DrillFailed carrying one)."""
    if isinstance(value, DrillFailed):
        value = value.result
    return value if isinstance(value, DrillResult) else None


def drill_results_of(state: Any) -> list[DrillResult]:
    """Every DrillResult of a nightly or release run; raises what it crashed with otherwise."""
    _, value = unwrap(state)
    return drill_results_in(value, state)


def drill_results_in(value: Any, state: Any) -> list[DrillResult]:
    """The same, for a run's outcome already read with `unwrap`."""
    if isinstance(value, DrillsFailed):
        return value.results
    if isinstance(value, list):
        return value
    if isinstance(value, BaseException):
        raise value
    raise DrillbookError(f"the run ended {state.type.value} without results: {state.message}")
