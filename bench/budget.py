"""What choosing a budgeted nightly costs at fleet size (tasks/history/budget.py): ranking, the greedy fill, the night's account.

In memory, no store: the history read itself is one query (tasks/lookahead.py's HistorySnapshot), measured by bench/history.py.

    python bench/budget.py                    # 1,000 and 10,000 databases, 30 drills each
    python bench/budget.py --fleet 10000 --drills 90
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta

from drillbook.tasks.history.budget import Member, candidates, choose, night_of
from drillbook.tasks.history.store import TrendPoint

NOW = datetime(2026, 12, 7, 2, 30, tzinfo=UTC)


def history(fleet: int, drills: int, rng: random.Random) -> dict[str, list[TrendPoint]]:
    out = {}
    for index in range(fleet):
        name = f"app-{index:05d}"
        if index % 50 == 0:  # one in fifty never drilled
            continue
        points = []
        for night in range(drills, 0, -1):
            started = NOW - timedelta(days=night * rng.uniform(0.9, 1.1))
            rto = 5 + 0.05 * (drills - night) + rng.uniform(0, 2)
            verdict = "FAIL" if night == 1 and index % 97 == 0 else "PASS"
            points.append(
                TrendPoint(name, f"{name}-{night}", started, verdict, None, rto, 120.0, 1.0, 600.0, None, None, None, None, rto, None,
                           wall_seconds=rto + rng.uniform(1, 4))
            )  # fmt: skip
        out[name] = points
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--drills", type=int, default=30, help="drills per database in the history")
    parser.add_argument("--budget", type=float, default=45 * 60)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args()
    print(
        f"| databases | drills each | rank s | choose s | account s | chosen | left | due left | coverage (budget {args.budget:g}s x {args.slots}) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for fleet in args.fleet:
        points = history(fleet, args.drills, random.Random(fleet))
        members = [Member(f"app-{i:05d}", 7 * 86400.0, 120.0) for i in range(fleet)]
        start = time.perf_counter()
        found = candidates(members, points, NOW)
        ranked = time.perf_counter()
        plan = choose(found, args.budget, args.slots)
        chose = time.perf_counter()
        night = night_of(plan, dict.fromkeys(plan.chosen, NOW), [], NOW + timedelta(seconds=args.budget))
        done = time.perf_counter()
        print(
            f"| {fleet:,} | {args.drills} | {ranked - start:.2f} | {chose - ranked:.3f} | {done - chose:.3f} | {len(plan.chosen):,} | "
            f"{len(plan.left):,} | {len(plan.due_left()):,} | {night.coverage()} |"
        )


if __name__ == "__main__":
    main()
