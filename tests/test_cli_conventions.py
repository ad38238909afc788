"""CLI conventions: --version, --json wherever a command reports, the exit codes in every --help, progress only on a terminal."""

from __future__ import annotations

import argparse
import io
import json

import pytest

from drillbook.cli.fleet import show_progress
from drillbook.cli.main import build_parser, main
from tests.conftest import entry


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == "drillbook 0.1.0"


def _commands(parser: argparse.ArgumentParser, prefix: str = ""):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub
                yield from _commands(sub, f"{prefix}{name} ")


def test_every_commands_help_states_its_exit_codes():
    commands = dict(_commands(build_parser()))
    assert {"run", "check-config", "watch", "outbox", "server", "expectations suggest", "nightly", "release"} <= set(commands)
    for name, parser in commands.items():
        codes = " ".join(parser.format_help().split()).split("Exit codes:")
        assert len(codes) == 2, name  # stated once
        assert " 0 " in codes[1] and " 2 " in codes[1], name


def test_check_config_outbox_and_server_status_speak_json(capsys, write_catalogue, tmp_path, monkeypatch):
    config = write_catalogue(entry("orders", f"file://{tmp_path}/replica", smoke=[{"name": "one", "sql": "SELECT 1"}]))
    assert main(["check-config", "--config", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and [d["name"] for d in report["databases"]] == ["orders"]
    assert report["databases"][0]["smoke_checks"] == 1 and report["databases"][0]["rto_target_seconds"] == 120

    assert main(["check-config", "--config", str(tmp_path / "nope.toml"), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["verdict"] == "ERROR"

    assert main(["outbox", "--config", str(config), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"configured": False, "outbox_dir": None, "waiting": []}

    monkeypatch.setenv("DRILLBOOK_SERVER_HOME", str(tmp_path / "server-home"))
    assert main(["server", "status", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"running": False, "url": None, "home": str(tmp_path / "server-home")}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_for_a_person_at_a_terminal():
    assert show_progress(argparse.Namespace(json=False), _Terminal())
    assert not show_progress(argparse.Namespace(json=True), _Terminal())  # --json: machine output, nothing else
    assert not show_progress(argparse.Namespace(json=False), io.StringIO())  # piped or logged
