"""`drillbook check-config`: the catalogue validated and listed, nothing drilled."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from drillbook.tasks.config import load_catalogue
from drillbook.tasks.config.replicas import shared_replicas
from drillbook.tasks.outcome import EXIT_CODES, Verdict
from drillbook.tasks.text import redact, visible


def cmd_check_config(args: argparse.Namespace) -> int:
    from drillbook.tasks.expectations import expectations_dir, load_suites

    catalogue = load_catalogue(args.config)
    entries = catalogue.databases()  # the directories listed; one whose prefix cannot be listed is said last (exit 2)
    suites = {entry.name: load_suites(entry, expectations_dir(catalogue)) for entry in entries}  # ConfigError names the file
    found = {directory.name: catalogue.discovery(directory) for directory in catalogue.directories}
    yielded = {name: None if one.problem else len(one.entries) for name, one in found.items()}
    problems = [str(one.problem) for one in found.values() if one.problem is not None]
    warnings = shared_replicas({entry.name: entry.replica for entry in entries})
    if args.json:
        databases = [
            {
                "name": entry.name,
                "replica": entry.replica_redacted,
                "rto_target_seconds": entry.rto_target,
                "rpo_target_seconds": entry.rpo_target,
                "expectations": sum(len(suite) for suite in suites[entry.name]),
                "expectation_suites": [str(s.path) for s in suites[entry.name]],
                "smoke_checks": len(entry.row_counts) + len(entry.smoke),
            }
            for entry in entries
        ]
        document = {
            "catalogue": str(catalogue.path),
            "valid": not problems,
            "databases": databases,
            "directories": yielded,
            "warnings": warnings,
            **({"errors": problems} if problems else {}),
        }
        print(json.dumps(document, indent=2))
        return said(problems)
    print(f"{catalogue.path}: {len(entries)} database(s) OK" + (f", {len(problems)} directory entry(ies) not listed" if problems else ""))
    for directory in catalogue.directories:
        count = "not listed" if yielded[directory.name] is None else f"{yielded[directory.name]} database(s)"
        print(f"  directories {visible(directory.name)}: {count} from {visible(directory.replica_redacted)}")
    for entry in entries:
        print(f"  {entry.name}: {visible(entry.replica_redacted)} (RTO target {entry.rto_target:g}s, RPO target {entry.rpo_target:g}s)")
        loaded = suites[entry.name]
        if loaded:
            count = sum(len(suite) for suite in loaded)
            print(f"    expectations: {count} in {visible(', '.join(str(s.path) for s in loaded))}")
        smoke = len(entry.row_counts) + len(entry.smoke)
        if smoke:
            print(f"    smoke checks: {smoke}")
    for warning in warnings:
        print(f"  warning: {visible(warning)}")
    return said(problems)


def said(problems: list[str]) -> int:
    """Each directory entry whose replica could not be listed, one line on stderr naming it and what to fix: exit 2 (else 0)."""
    for problem in problems:
        print(f"drillbook: {visible(redact(' '.join(problem.split()), emails=False))}", file=sys.stderr)
    return EXIT_CODES[Verdict.ERROR] if problems else 0


def add_commands(commands: Any, config_option: Callable[[argparse.ArgumentParser], None]) -> None:
    check = commands.add_parser(
        "check-config", help="validate the catalogue without drilling", description="Validate the catalogue and print its databases."
    )
    config_option(check)
    check.add_argument("--json", action="store_true", help="print the validated databases as JSON (an invalid catalogue: an ERROR object)")
    check.set_defaults(func=cmd_check_config)
