"""Running a flow and reading what it ended with: the one place a Prefect State is unwrapped.

The CLI (`run`, `nightly`, `release`), the demo, and the flows' own fan-out
helpers read outcomes through these functions, so a drill's result
travels the same way whether the run passed, failed with a verdict
(DrillFailed / DrillsFailed carry the results) or crashed.
"""

from __future__ import annotations

import os
import socket
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


WORKER_LABEL = "drillbook.worker"  # a batch run's labels: which worker, host and process drilled it (set by the run itself)


def label_worker(flow_run_id: Any) -> str | None:
    """Label this run with the worker that started it and this process, so a run killed mid-drill can be named.

    A process worker passes its name to the run's process (PREFECT__WORKER_NAME); outside a worker there is none
    and nothing is written. One API call per batch run; a failure is the caller's to log, never the batch's."""
    from prefect.client.orchestration import get_client

    worker = os.environ.get("PREFECT__WORKER_NAME")
    if not worker:
        return None
    labels = {WORKER_LABEL: worker, "drillbook.host": socket.gethostname(), "drillbook.pid": str(os.getpid())}
    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(flow_run_id, labels)
    return worker


def crash_detail(run: Any, where: str) -> str:
    """What a person needs about a run that crashed (its process killed, its worker gone): where it ran and why it ended."""
    labels = getattr(run, "labels", None) or {}
    worker = labels.get(WORKER_LABEL)
    pid = labels.get("drillbook.pid") or run.infrastructure_pid
    place = f" on worker {worker}" if worker else ""
    if pid:
        place += f" (process {pid}" + (f" on {labels['drillbook.host']})" if labels.get("drillbook.host") else ")")
    message = (run.state.message or "no message").strip().rstrip(".")
    return (
        f"{where}{place} ended {run.state.type.value}: {message}; its results went with it (a drill it had finished is in "
        "the history, the one it was running is not recorded): look for what stopped that process (out of memory, a kill, "
        "a restart); the next drill of each database removes what it left in the scratch"
    )
