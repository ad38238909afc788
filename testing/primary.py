"""A running primary: the workload writing to a database while the real `litestream replicate` ships it.

For the read-replica and promotion drills, which need a replica that keeps
moving while they run. litestream runs through the runner (its own process
group, gone when the context ends); its config is litestream's defaults but for
`sync` (the sync and monitor interval, 1 s by default as in litestream).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.litestream import find_litestream, litestream_env
from drillbook.tasks.runner import Child, started
from drillbook.testing.corpus import Target
from drillbook.testing.workload import Workload

FRESHNESS_QUERY = "SELECT max(committed_at) FROM seq"  # the workload's own clock of its newest commit


@dataclass
class Primary:
    workload: Workload
    litestream: Child
    url: str
    db_path: Path


def primary_config(db_path: Path, target: Target, sync: str = "1s") -> str:
    return (
        f"dbs:\n  - path: {db_path}\n    monitor-interval: {sync}\n    replica:\n"
        + target.yaml("      ")
        + f"      sync-interval: {sync}\n"
    )


@contextlib.contextmanager
def running_primary(
    workdir: Path, target: Target, *, rate: float = 10.0, sync: str = "1s", ready_timeout: float = 30.0
) -> Iterator[Primary]:
    """Write at `rate` commits a second and replicate to `target` until the context ends; yields once the replica holds a file."""
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "app.db"
    workload = Workload(db_path, rate=rate)
    config = workdir / "litestream.yml"
    config.write_text(primary_config(db_path, target, sync))
    try:
        with started([find_litestream(), "replicate", "-config", str(config)], env=litestream_env(), grace=5.0) as child:
            workload.start()
            primary = Primary(workload, child, target.url, db_path)
            local = workdir / f".{db_path.name}-litestream" / "ltx" / "0"
            deadline = time.monotonic() + ready_timeout
            while not any(local.glob("*.ltx")) or child.exit_code() is not None:
                if child.exit_code() is not None or time.monotonic() > deadline:
                    raise DrillbookError(f"litestream replicate did not start replicating {db_path} to {target.url}")
                time.sleep(0.1)
            time.sleep(1.5)  # an upload or two: the replica is there before anyone restores it
            yield primary
            workload.stop()
    finally:
        workload.close()
