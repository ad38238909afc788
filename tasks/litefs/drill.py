"""The LiteFS drill: a cluster started from the restored copy, the writer on, then read freshness and the primary switch.

    1. start   `litefs mount` per node under scratch (static lease on `primary`), the copy imported on the primary
    2. read freshness   the replicas' TXIDs against the primary's, sampled every SAMPLE_INTERVAL for `seconds`
    3. primary switch   writes go on for PRE_SWITCH seconds; the primary is killed (crash) or stopped (handoff); with no
                        primary the replicas are read and written (degraded mode); every lease is moved to the candidate
                        and it is started; the failover RTO runs from the stop until the writer's first write acknowledged
                        by the new primary; the old primary comes back (reconfigured, or unchanged) and is asked to take
                        a write; the new primary is read for every write the writer was told was done
    4. close   every node stopped and unmounted, on failure too (nothing drillbook starts is left running)

The drill cluster is the restored copy's, under the drill's scratch directory:
production nodes are never touched. The current phase is written to
`<cluster>/phase` as the drill goes, for a person (or a test) watching it.
"""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.config.litefs import LiteFSSettings
from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.litefs.cluster import LiteFSCluster, Node
from drillbook.tasks.litefs.phases import (
    FENCE_ACTION,
    LOST_ACTION,
    PROMOTE_ACTION,
    RETRY_ACTION,
    STALE_ACTION,
    DegradedMode,
    PrimarySwitch,
    PrimaryTimeline,
    ReadFreshness,
    WriteRetry,
    judge_freshness,
    status_of,
)
from drillbook.tasks.litefs.writer import Write, Writer, cluster_states, create_table, insert, node_state, present, retryable
from drillbook.tasks.litefs_bin import find_litefs
from drillbook.tasks.outcome import FailureMode, Finding, Status
from drillbook.tasks.processes import interrupted
from drillbook.tasks.steps import StepResult

SAMPLE_INTERVAL = 0.05  # seconds between position samples: the staleness figures' resolution
PRE_SWITCH = 1.0  # seconds of writes between the read-freshness window and the switch ("writes made before the switch")
AFTER_SWITCH = 1.0  # seconds of writes on the new primary after it took its first
LITEFS_PHASES: dict[str, type[StepResult]] = {
    "read_freshness": ReadFreshness,
    "primary_switch": PrimarySwitch,
    "write_retry": WriteRetry,
    "degraded": DegradedMode,
}


def _mark(cluster: LiteFSCluster, phase: str) -> None:
    (cluster.workdir / "phase").write_text(phase + "\n")


def drill_litefs(entry: DatabaseEntry, copy: Path, scratch: Path) -> dict[str, StepResult]:
    """The four LiteFS phases' results; a cluster that cannot be started or a crash is every phase's ERROR."""
    settings = entry.litefs
    assert settings is not None
    stop = interrupted()
    if stop:  # as every other phase: none starts after SIGTERM / Ctrl-C
        return {name: kind.skipped(f"not run: interrupted by {stop}") for name, kind in LITEFS_PHASES.items()}
    try:
        binary = find_litefs(settings.binary)
        cluster = LiteFSCluster(
            scratch / "litefs", names=[settings.primary, *[n for n in settings.nodes if n != settings.primary]], binary=binary
        )
    except DrillbookError as exc:
        return {name: kind(status=Status.ERROR, summary=str(exc)) for name, kind in LITEFS_PHASES.items()}
    try:
        return _drill(entry, settings, cluster, copy)
    except Exception as exc:  # noqa: BLE001 - a broken cluster is the phases' ERROR, the restore drill's verdict stands beside it
        what = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return {name: kind(status=Status.ERROR, summary=f"LiteFS drill cluster: {what}") for name, kind in LITEFS_PHASES.items()}
    finally:
        cluster.close()


def _seed(cluster: LiteFSCluster, db: str, copy: Path, timeout: float) -> None:
    """`litefs import` of the restored copy on the primary (LiteFS's own way in), then the writer's table."""
    done = subprocess.run(
        [str(cluster.binary), "import", "-url", cluster.primary.url, "-name", db, str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    if done.returncode != 0:
        raise DrillbookError(f"litefs import of the restored copy failed: {(done.stderr or done.stdout).strip()[:300]}")
    create_table(cluster.primary, db, timeout)


def _drill(entry: DatabaseEntry, settings: LiteFSSettings, cluster: LiteFSCluster, copy: Path) -> dict[str, StepResult]:
    db = settings.database(entry.name, entry.live_path)
    failover_target = entry.failover_rto_target or entry.rto_target
    _mark(cluster, "start")
    cluster.start_all(probe=False)
    _seed(cluster, db, copy, settings.write_timeout)
    cluster.wait_replicated(db, timeout=30)
    writer = Writer(cluster.nodes, cluster.primary, db, rate=settings.write_rate, retry_for=failover_target, timeout=settings.write_timeout)
    writer.start()
    try:
        with ThreadPoolExecutor(max_workers=len(cluster.nodes)) as pool:
            _mark(cluster, "read freshness")
            freshness = _read_freshness(cluster, db, settings, pool)
            _mark(cluster, "primary switch")
            time.sleep(PRE_SWITCH)
            switch, degraded, stopped_at, judged = _switch(cluster, db, settings, writer, failover_target, entry.rpo_target)
    finally:
        writer.stop()
    retry = _write_retry(cluster, db, settings, [w for w in writer.snapshot() if w.seq not in judged], stopped_at)
    _mark(cluster, "done")
    return {"read_freshness": freshness, "primary_switch": switch, "write_retry": retry, "degraded": degraded}


def _read_freshness(cluster: LiteFSCluster, db: str, settings: LiteFSSettings, pool: ThreadPoolExecutor) -> ReadFreshness:
    started = time.monotonic()
    timeline = PrimaryTimeline()
    last: dict[str, int | None] = {node.name: None for node in cluster.replicas}
    samples: dict[str, list[tuple[float, bool]]] = {name: [] for name in last}
    while time.monotonic() - started < settings.seconds:
        round_started = time.monotonic()
        states = cluster_states(cluster.nodes, db, pool)
        at = time.monotonic()
        primary = states[cluster.primary.name]
        if primary.answered and primary.txid is not None:
            timeline.add(at, primary.txid)
        for name in last:
            state = states[name]
            if state.answered and state.txid is not None:
                last[name] = state.txid
            samples[name].append((timeline.staleness(at, last[name]), state.answered))
        time.sleep(max(0.0, SAMPLE_INTERVAL - (time.monotonic() - round_started)))
    result = judge_freshness(samples, settings.freshness_target, SAMPLE_INTERVAL)
    result.seconds = round(time.monotonic() - started, 3)
    result.primary_txids = (timeline.txids[0], timeline.txids[-1]) if timeline.txids else None
    if len(timeline.txids) == 1:
        result.notes = ["the primary took no write in the window: nothing to be stale about"]
    return result


def _degraded(cluster: LiteFSCluster, db: str, settings: LiteFSSettings) -> DegradedMode:
    """With no primary: every running replica answers a read, and a write on one fails (fast) with an error to retry on."""
    served, errors = {}, {}
    # Only nodes that answer over HTTP are read or written through FUSE: a paused node's mount hangs the call, and a
    # mapping of its files faults (SIGBUS) when the node is stopped under it.
    answering = [node for node in cluster.replicas if node.running and node_state(node, db).answered]
    for node in cluster.replicas:
        if node.running and node not in answering:
            served[node.name], errors[node.name] = False, "its LiteFS did not answer (paused or hung)"
    for node in answering:
        outcome = _bounded(lambda node=node: len(present(node, db, settings.write_timeout)), settings.write_timeout + 1)
        served[node.name] = isinstance(outcome, int)
        if not served[node.name]:
            errors[node.name] = str(outcome)
    write_error, write_seconds = None, None
    target = answering[0] if answering else None
    if target is not None:
        began = time.monotonic()
        outcome = _bounded(lambda: insert(target, db, -1, settings.write_timeout), settings.write_timeout + 1)
        write_seconds = round(time.monotonic() - began, 3)
        write_error = None if outcome is None else str(outcome)
    findings = [
        Finding(
            mode=FailureMode.STALE_READ,
            detail=f"LiteFS replica {name} did not serve reads with no primary: {errors[name]}",
            action=STALE_ACTION,
        )
        for name, ok in served.items()
        if not ok
    ]
    if target is not None and write_error is None:
        findings.append(
            Finding(mode=FailureMode.WRITER_LEASE, detail=f"LiteFS replica {target.name} took a write with no primary", action=FENCE_ACTION)
        )
    elif write_error is not None and (write_seconds > settings.write_timeout or not retryable(write_error)):
        findings.append(
            Finding(
                mode=FailureMode.PROMOTION,
                detail=f"a write on replica {target.name} with no primary ended after {write_seconds:.1f}s with {write_error!r}, "
                f"not a fast error to retry on (within {settings.write_timeout:g}s)",
                action=RETRY_ACTION,
            )
        )
    return DegradedMode(
        status=status_of(findings),
        reads_served=served,
        read_errors=errors,
        write_error=write_error,
        write_seconds=write_seconds,
        write_timeout=settings.write_timeout,
        findings=findings,
    )


def _bounded(call, timeout: float):
    """`call()`'s value, or its exception, or a TimeoutError when a FUSE call hangs (the thread is left to the node's stop)."""
    box: list = []

    def run() -> None:
        try:
            box.append(call())
        except Exception as exc:  # noqa: BLE001 - returned to the caller as the outcome
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return box[0] if box else TimeoutError(f"no answer within {timeout:g}s")


def _switch(
    cluster: LiteFSCluster, db: str, settings: LiteFSSettings, writer: Writer, failover_target: float, rpo_target: float
) -> tuple[PrimarySwitch, DegradedMode, float]:
    old, new = cluster.primary, cluster.node(settings.successor)
    began = stopped_at = time.monotonic()
    cluster.stop(old, hard=settings.switch == "crash")
    # Every write the old primary acknowledged, up to its last moment (a write in flight at the signal may still be
    # acknowledged): what LiteFS had not yet shipped to the candidate is a crash's loss, judged against the RPO target.
    dead_at = time.monotonic()
    acked_before = [w for w in writer.snapshot() if w.acked is not None and w.node == old.name and w.acked <= dead_at]
    degraded = _degraded(cluster, db, settings)
    findings: list[Finding] = []
    try:
        cluster.switch_primary(new)
    except DrillbookError as exc:
        findings.append(
            Finding(mode=FailureMode.PROMOTION, detail=f"{new.name} did not start as the primary: {exc}", action=PROMOTE_ACTION)
        )
    accepted = _first_ack(writer, new.name, stopped_at, deadline=stopped_at + max(failover_target, 5.0) * 2)
    rto = None if accepted is None else round(accepted - stopped_at, 3)
    degraded.read_only_seconds = rto
    degraded.summary = _degraded_summary(degraded)
    if rto is None:
        findings.append(Finding(mode=FailureMode.PROMOTION, detail=f"{new.name} took no write after the switch", action=PROMOTE_ACTION))
    elif rto > failover_target:
        findings.append(
            Finding(
                mode=FailureMode.PROMOTION,
                detail=f"failover RTO {rto:.1f}s (until {new.name} took a write) is over the {failover_target:g}s target",
                action=PROMOTE_ACTION,
            )
        )
    time.sleep(AFTER_SWITCH)
    took, answer = _old_primary_returns(cluster, old, db, settings)
    if took:
        findings.append(
            Finding(
                mode=FailureMode.WRITER_LEASE,
                detail=f"the old primary {old.name} came back ({settings.old_primary} configuration) and took a write while "
                f"{new.name} is the primary: two writers",
                action=FENCE_ACTION,
            )
        )
    held = present(new, db, settings.write_timeout) if new.running else set()
    lost = [w for w in acked_before if w.seq not in held]
    window = round(max(0.0, stopped_at - min(w.acked for w in lost)), 3) if lost else None
    if lost and window > rpo_target:
        findings.append(
            Finding(
                mode=FailureMode.PROMOTION,
                detail=f"{len(lost)} write(s) acknowledged by {old.name} before the switch are missing on {new.name} "
                f"(the oldest {window:.1f}s before the switch, over the {rpo_target:g}s RPO target)",
                action=LOST_ACTION,
            )
        )
    switch = PrimarySwitch(
        status=status_of(findings),
        seconds=round(time.monotonic() - began, 3),
        old_primary=old.name,
        new_primary=new.name,
        switch=settings.switch,
        failover_rto_seconds=rto,
        failover_rto_target_seconds=failover_target,
        acked_before=len(acked_before),
        lost_before=[w.seq for w in lost],
        lost_window_seconds=window,
        old_primary_took_write=took,
        old_primary_answer=answer,
        findings=findings,
    )
    kept = f"{len(acked_before) - len(lost)}/{len(acked_before)} writes from before the switch on {new.name}"
    fenced = "took a write again" if took else f"refused writes ({answer})"
    switch.summary = (
        f"{settings.switch} of {old.name}: {new.name} took writes after {rto:.2f}s (target {failover_target:g}s); {kept}; "
        f"old primary {fenced}"
        if rto is not None
        else f"{settings.switch} of {old.name}: {new.name} took no write; {kept}"
    )
    if lost and not (window > rpo_target):
        switch.notes = [f"{len(lost)} write(s) from the last {window:.2f}s before the crash were not replicated (within the RPO target)"]
    return switch, degraded, stopped_at, {w.seq for w in acked_before}


def _first_ack(writer: Writer, node: str, after: float, deadline: float) -> float | None:
    while time.monotonic() < deadline:
        acked = [w.acked for w in writer.snapshot() if w.node == node and w.acked is not None and w.acked > after]
        if acked:
            return min(acked)
        time.sleep(0.02)
    return None


def _old_primary_returns(cluster: LiteFSCluster, old: Node, db: str, settings: LiteFSSettings) -> tuple[bool, str]:
    """Start the old primary as the settings say it returns, and ask it to take a write: (took it, what it answered)."""
    if settings.old_primary == "unchanged":
        cluster.start_as_it_was(old)
    else:
        cluster.start(old)
    time.sleep(0.5)  # a rejoining replica connects and takes the primary's snapshot
    outcome = _bounded(lambda: insert(old, db, -2, settings.write_timeout), settings.write_timeout + 1)
    if outcome is None:
        return True, "accepted"
    return False, str(outcome).splitlines()[0][:120] if isinstance(outcome, Exception) else "no answer"


def _degraded_summary(degraded: DegradedMode) -> str:
    reads = ", ".join(f"{name} {'served reads' if ok else 'did not serve reads'}" for name, ok in degraded.reads_served.items())
    write = f"a write failed in {degraded.write_seconds:.2f}s ({degraded.write_error})" if degraded.write_error else "a write was accepted"
    ro = f"read-only for {degraded.read_only_seconds:.2f}s" if degraded.read_only_seconds is not None else "no primary again"
    return f"{ro}; {reads or 'no replica running'}; {write}"


def _write_retry(cluster: LiteFSCluster, db: str, settings: LiteFSSettings, writes: list[Write], stopped_at: float) -> WriteRetry:
    """The writes sent from the switch on: each acknowledged (held by the final primary), or failed with an error to retry on.
    `writes` leaves out those the old primary acknowledged before it stopped: the switch judged them."""
    during = [w for w in writes if w.sent >= stopped_at or (w.acked or 0) >= stopped_at]
    final = cluster.primary
    held: set[int] = set()
    try:
        held = present(final, db, settings.write_timeout)
    except sqlite3.Error:
        pass
    acked = [w for w in during if w.acked is not None]
    lost = [w.seq for w in acked if w.seq not in held]
    failed = [w for w in during if w.acked is None]
    other = [f"write {w.seq}: {w.error}" for w in failed if w.error and not retryable(w.error)]
    findings = []
    if lost:
        findings.append(
            Finding(
                mode=FailureMode.PROMOTION,
                detail=f"{len(lost)} write(s) sent during the switch were acknowledged but are not on the primary {final.name}: "
                "silently lost",
                action=RETRY_ACTION,
            )
        )
    if other:
        findings.append(
            Finding(mode=FailureMode.PROMOTION, detail=f"writes failed with an error not to retry on: {other[0]}", action=RETRY_ACTION)
        )
    retried = [w for w in acked if w.attempts > 1]
    longest = max((w.acked - w.sent for w in retried), default=0.0)
    errors = sorted({e for w in during for e in w.errors})
    result = WriteRetry(
        status=status_of(findings),
        sent=len(during),
        first_try=len(acked) - len(retried),
        after_retry=len(retried),
        longest_retry_seconds=round(longest, 3),
        failed_retryable=len(failed) - len(other),
        failed_other=other,
        silently_lost=lost,
        errors_seen=errors[:5],
        findings=findings,
    )
    result.summary = (
        f"{len(during)} writes from the switch on: {result.first_try} first try, {len(retried)} after retry (longest {longest:.2f}s), "
        f"{result.failed_retryable} failed with an error to retry on, {len(lost)} silently lost"
    )
    return result
