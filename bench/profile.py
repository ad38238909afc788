"""Where drillbook's own time goes, per step: a fleet nightly and one `drillbook run`, sampled by py-spy.

    python bench/profile.py                 # a fleet of 20 x 1 MB, then one run, against a running Prefect server
    python bench/profile.py --fleet 100     # a bigger fleet
    python bench/profile.py --rate 400      # more samples a second

Each command runs under `py-spy record --format raw` (every Python thread of the process; off-CPU time is
not sampled, so the figures are CPU seconds of drillbook's own process). Each sample is charged to the
innermost step it is inside (the table below, by module and function), else to imports (a module being
executed), else to Prefect (its client, engine and logging), else "other". The object store's requests are
counted at the store (moto's access log), for drillbook and for the bare `litestream restore` of the same
replicas. The Prefect server's CPU is read from its process.

Needs py-spy (`pip install py-spy`; root or ptrace permission). Prints one table; nothing is written to the
checkout (work in a temporary folder).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from drillbook.tasks.runner import run_command

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: the servers, the catalogue, the 1 MB databases)

# (step, module path fragment, function name or None for any): innermost match wins.
STEPS: list[tuple[str, str, str | None]] = [
    ("inspection (listing, header reads)", "tasks/replica.py", None),
    ("inspection (listing, header reads)", "tasks/storage/", None),
    ("inspection (listing, header reads)", "tasks/ltx.py", None),
    ("restore (runner, waiting on litestream)", "tasks/restore.py", None),
    ("restore (runner, waiting on litestream)", "tasks/runner.py", None),
    ("plan and points", "tasks/plan.py", None),
    ("plan and points", "tasks/points/", None),
    ("integrity", "tasks/integrity.py", None),
    ("smoke", "tasks/smoke.py", None),
    ("smoke", "tasks/catalogue_sql.py", None),
    ("expectations (GX context, suites)", "tasks/expectations.py", None),
    ("expectations (GX context, suites)", "great_expectations/", None),
    ("freshness", "tasks/freshness.py", None),
    ("writers", "tasks/writers.py", None),
    ("compat / follow / promote", "tasks/compat.py", None),
    ("compat / follow / promote", "tasks/follow.py", None),
    ("compat / follow / promote", "tasks/promote.py", None),
    ("verdict", "tasks/verdict.py", None),
    ("evidence bundle", "tasks/evidence.py", None),
    ("history write", "tasks/history/store.py", "record_drill"),
    ("history read (forecast, trends, points)", "tasks/forecast.py", None),
    ("history read (forecast, trends, points)", "tasks/lookahead.py", None),
    ("history read (forecast, trends, points)", "tasks/history/store.py", None),
    ("runbook refresh", "tasks/runbook.py", None),
    ("metrics refresh", "tasks/history/metrics.py", None),
    ("report rendering (terminal, Markdown, Slack)", "tasks/report/", None),
    ("report rendering (terminal, Markdown, Slack)", "rich/", None),
    ("notify (Slack, outbox)", "tasks/notify.py", None),
    ("notify (Slack, outbox)", "tasks/slack/", None),
    ("catalogue load", "tasks/config/", None),
    ("cleanup, scratch", "tasks/cleanup.py", None),
    ("cleanup, scratch", "tasks/workspace.py", None),
]
IMPORTING = ("_find_and_load", "_load_unlocked", "exec_module", "_call_with_frames_removed")
FRAME = re.compile(r"^(?P<function>.+?) \((?P<path>[^:()]+)(?::\d+)?\)$")
DRILLBOOK = ("cli/", "flows/", "tasks/", "testing/")  # drillbook's own files, as py-spy shortens their paths
NO_FRAME = "no Python frame (interpreter start and exit)"


def _package(path: str) -> str:
    """'prefect/client/x.py' -> 'prefect'; 'ssl.py' -> 'ssl'; drillbook's own files keep two parts (tasks/replica.py)."""
    if path.startswith(DRILLBOOK):
        return path
    root = path.split("/", 1)[0]
    return root.removesuffix(".py")


def _under(path: str, package: str) -> bool:
    return path.startswith(package) or f"/{package}" in path


def charge(stack: list[str]) -> tuple[str, str]:
    """The step a sampled stack (outermost first) belongs to, and a detail: what was imported, or where "other" ran.

    Innermost first: a module being executed (an import, wherever it happens) is "imports", else the
    innermost drillbook step. The detail of an import is the outermost package being imported and the
    drillbook module that asked for it.
    """
    parsed = [(m.group("function"), m.group("path")) for m in (FRAME.match(frame.strip()) for frame in stack) if m]
    if not parsed:
        return NO_FRAME, ""
    for function, path in reversed(parsed):  # innermost first
        if function == "<module>" or function in IMPORTING:
            return "imports", _import_detail(parsed)
        for step, fragment, name in STEPS:
            if fragment in path and (name is None or function == name):
                return step, ""
    if any(_under(path, "prefect/") for _, path in parsed):
        return "Prefect (client, engine, logging, events)", _package(parsed[-1][1])
    if any(_under(path, "sqlalchemy/") or _under(path, "alembic/") for _, path in parsed):
        return "history (SQLAlchemy, Alembic)", ""
    return "other", f"{parsed[-1][0]} ({_package(parsed[-1][1])})"


def _import_detail(parsed: list[tuple[str, str]]) -> str:
    asked, imported = "", ""
    for function, path in parsed:
        if function != "<module>":
            continue
        if path.startswith(DRILLBOOK) or path.startswith("<"):
            if not imported:
                asked = path
            continue
        imported = _package(path)
        break
    return f"{imported or asked} (from {asked or '?'})"


def read_profile(raw: Path, rate: int) -> tuple[collections.Counter, collections.Counter]:
    """Seconds of CPU per step, and per (step, detail), from py-spy's raw (folded) output: 'frame;frame;... count' a line."""
    seconds: collections.Counter = collections.Counter()
    details: collections.Counter = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";") if stack else []
        if frames and frames[0].startswith("process "):  # --subprocesses: each stack starts with its process
            frames = frames[1:]
        if frames and frames[0].startswith("thread "):
            frames = frames[1:]
        step, detail = charge(frames)
        seconds[step] += int(count) / rate
        if detail:
            details[(step, detail)] += int(count) / rate
    return seconds, details


REQUEST = re.compile(r'"(GET|PUT|HEAD|POST|DELETE) ')


def requests_since(log: Path, offset: int) -> tuple[collections.Counter, int]:
    text = log.read_text(errors="replace")
    return collections.Counter(m.group(1) for m in REQUEST.finditer(text[offset:])), len(text)


def fleet(count: int, endpoint: str, work: Path) -> tuple[Path, list[tuple[str, str]]]:
    template = bench.generate(work / "template.db", 1)
    entries = []
    for i in range(count):
        name = f"tenant-{i:04d}"
        folder = work / "dbs" / name
        folder.mkdir(parents=True)
        db = folder / "app.db"
        shutil.copyfile(template, db)
        url = bench.replica_url(endpoint, f"profile/{name}/app.db")
        subprocess.run([bench.LITESTREAM, "replicate", "-once", str(db), url], env=bench.litestream_env(), check=True, capture_output=True)
        entries.append((name, url))
    return bench.write_catalogue(work / "drillbook.toml", work, entries), entries


def spy(argv: list[str], env: dict[str, str], out: Path, rate: int, server: psutil.Process | None) -> tuple[float, float]:
    """Run `argv` under py-spy; (wall seconds, Prefect server CPU seconds meanwhile)."""
    py_spy = shutil.which("py-spy", path=str(bench.BIN)) or shutil.which("py-spy")
    if not py_spy:
        raise SystemExit("py-spy is not installed: pip install py-spy")
    before = bench._server_cpu(server)
    started = time.monotonic()
    done = subprocess.run(
        [py_spy, "record", "--format", "raw", "--rate", str(rate), "--nonblocking", "-o", str(out), "--", *argv],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.monotonic() - started
    if not out.exists():
        raise SystemExit(f"py-spy wrote nothing: {done.stderr.strip()[-500:]}")
    return wall, bench._server_cpu(server) - before


DETAILED = ("imports", "other", "Prefect (client, engine, logging, events)")


def table(
    title: str, profile: tuple[collections.Counter, collections.Counter], drills: int, wall: float, server_cpu: float, top: int = 6
) -> str:
    seconds, details = profile
    total = sum(seconds.values())
    lines = [
        f"{title}: {drills} drill(s), {wall:.1f} s wall, {total:.2f} s of drillbook CPU sampled, Prefect server {server_cpu:.2f} s CPU",
        f"{'step':<48} {'CPU s':>8} {'per drill':>10} {'share':>7}",
    ]
    for step, value in seconds.most_common():
        lines.append(f"{step:<48} {value:>8.2f} {value / drills:>10.3f} {value / total:>7.1%}")
        if step in DETAILED and top:
            parts = sorted(((v, d) for (s, d), v in details.items() if s == step), reverse=True)[:top]
            lines.extend(f"    {detail[:70]:<70} {v:>8.2f}" for v, detail in parts)
    return "\n".join(lines)


def exit_latency(lengths: tuple[float, ...] = (0.05, 0.2, 0.35, 0.6, 1.0), repeats: int = 5) -> str:
    """How long after a child's exit drillbook's runner goes on: off-CPU, so py-spy's samples never show it. Every
    litestream a drill starts ends this way; on a 1 MB fleet a restore takes 0.2-0.6 s, where the runner's poll used to sleep
    on for up to 0.22 s (it now waits on the child's pidfd)."""
    lines = [
        "after a child's exit, the runner went on in (run_command, stall watch on)",
        f"{'child runs':<12} {'median ms':>10} {'max ms':>8}",
    ]
    for seconds in lengths:
        late = [
            run_command(["sleep", str(seconds)], timeout=30, env=dict(os.environ), stall_timeout=60).record.seconds - seconds
            for _ in range(repeats)
        ]
        lines.append(f"{seconds:<12.2f} {statistics.median(late) * 1000:>10.0f} {max(late) * 1000:>8.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fleet", type=int, default=20, help="databases in the fleet (default 20, 1 MB each)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples a second (default 250)")
    parser.add_argument("--max-concurrent", type=int, default=2, help="the nightly's --max-concurrent (default 2)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="copy py-spy's raw profiles (nightly.txt, run.txt) here, to read further")
    parser.add_argument("--read", type=Path, metavar="DIR", help="only print the tables of the raw profiles kept in DIR by --keep")
    args = parser.parse_args(argv)
    if args.read:
        for raw, title, drills in (("nightly.txt", f"nightly of {args.fleet} x 1 MB", args.fleet), ("run.txt", "drillbook run", 1)):
            print(table(title, read_profile(args.read / raw, args.rate), drills, float("nan"), float("nan")), end="\n\n")
        return 0

    print(exit_latency(), end="\n\n")
    work = Path(tempfile.mkdtemp(prefix="drillbook-profile-"))
    s3 = prefect = None
    try:
        s3, endpoint = bench.start_s3(log=work / "s3.log")
        prefect, api = bench.start_prefect_server(work)
        config, entries = fleet(args.fleet, endpoint, work)
        env = bench.drillbook_env(work)
        env["PREFECT_API_URL"] = api
        server = psutil.Process(prefect.pid)
        drillbook = [sys.executable, "-m", "drillbook.cli"]

        _, offset = requests_since(work / "s3.log", 0)
        wall, server_cpu = spy(
            [*drillbook, "nightly", "--config", str(config), "--max-concurrent", str(args.max_concurrent), "--json"],
            env,
            work / "nightly.txt",
            args.rate,
            server,
        )
        nightly_requests, offset = requests_since(work / "s3.log", offset)
        print(table(f"nightly of {args.fleet} x 1 MB", read_profile(work / "nightly.txt", args.rate), args.fleet, wall, server_cpu))
        print()
        wall, server_cpu = spy(
            [*drillbook, "run", entries[0][0], "--config", str(config), "--json"], env, work / "run.txt", args.rate, server
        )
        run_requests, offset = requests_since(work / "s3.log", offset)
        print(table("drillbook run, one database, server running", read_profile(work / "run.txt", args.rate), 1, wall, server_cpu))
        print()

        scratch = work / "bare"
        scratch.mkdir()
        for name, url in entries:
            subprocess.run(
                [bench.LITESTREAM, "restore", "-o", str(scratch / f"{name}.db"), url],
                env=bench.litestream_env(),
                check=True,
                capture_output=True,
            )
        bare_requests, _ = requests_since(work / "s3.log", offset)
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for raw in ("nightly.txt", "run.txt"):
                shutil.copyfile(work / raw, args.keep / raw)
        print("object-store requests per drill, counted at the store")
        print(f"{'':<28} " + " ".join(f"{verb:>6}" for verb in ("GET", "HEAD", "PUT", "all")))
        for label, counted, drills in (
            ("drillbook nightly", nightly_requests, args.fleet),
            ("drillbook run", run_requests, 1),
            ("bare litestream restore", bare_requests, args.fleet),
        ):
            cells = [counted.get(verb, 0) / drills for verb in ("GET", "HEAD", "PUT")] + [sum(counted.values()) / drills]
            print(f"{label:<28} " + " ".join(f"{cell:>6.1f}" for cell in cells))
        return 0
    finally:
        for process in (prefect, s3):
            if process is not None:
                bench.stop(process)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
