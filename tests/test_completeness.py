"""Completeness, in the spirit of sqlite-utils' test_docs: help for every command, README, docs and CI in step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drillbook.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def _commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: drillbook {command}" in out
    help_line = next(
        a.help
        for a in build_parser()._actions
        if a.__class__.__name__ == "_SubParsersAction"
        for c in [a._choices_actions]
        for a in c
        if a.dest == command
    )
    assert help_line


def _readme_block(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"{re.escape(title)}.*?```(?:sh|bash)?\n(.*?)```", text, re.S)
    assert match, f"README has no code block after {title!r}"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command():
    command = _readme_block("Run the tests")
    assert command in (ROOT / ".ci" / "run").read_text()


def test_readme_demo_command_runs_the_demo():
    assert "drillbook demo" in _readme_block("Try it")


def test_catalogue_reference_lists_every_field():
    from drillbook.tasks.config import DatabaseEntry, Settings, SlackSettings, SmokeCheck

    # The reference moved from the README to the docs site (generated from these models; tests/test_docs.py keeps it current).
    text = (ROOT / "docs" / "reference" / "catalogue.md").read_text()
    for field in [*DatabaseEntry.model_fields, *Settings.model_fields, *SmokeCheck.model_fields, *SlackSettings.model_fields]:
        assert f"`{field}`" in text, f"the docs' catalogue reference does not mention {field}"


def test_ci_builds_the_docs_strictly():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "mkdocs build --strict" in ci
