"""The docs site and the code in step: generated references current, examples runnable as written, no page naming what is gone."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from drillbook.cli.main import build_parser, main
from drillbook.tasks.config import load_catalogue
from drillbook.tasks.outcome import FailureMode

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "tools" / "docs_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("page", ["catalogue.md", "cli.md", "metrics.md", "failure-modes.md"])
def test_generated_reference_is_current(page):
    generated = _generator().PAGES[page]()
    assert (DOCS / "reference" / page).read_text() == generated, (
        f"docs/reference/{page} is stale: run .venv/bin/python tools/docs_reference.py and commit the result"
    )


def _models():
    return [model for _, _, model in _generator().catalogue_tables()]


def test_every_catalogue_key_has_a_description():
    missing = [
        f"{model.__name__}.{name}"
        for model in _models()
        for name, field in model.model_fields.items()
        if not field.exclude and not field.description
    ]
    assert not missing, f"catalogue keys without a description (the reference is generated from it): {missing}"


def test_catalogue_reference_covers_every_key():
    text = (DOCS / "reference" / "catalogue.md").read_text()
    for model in _models():
        for name, field in model.model_fields.items():
            if not field.exclude:
                assert f"| `{name}` |" in text, f"docs/reference/catalogue.md does not list {model.__name__}.{name}"


def test_command_reference_covers_every_command_and_flag():
    text = (DOCS / "reference" / "cli.md").read_text()
    generator = _generator()
    for command, _, sub in generator._subcommands(build_parser(), "drillbook"):
        assert f"## `{command}`" in text, f"docs/reference/cli.md has no section for {command}"
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in text, f"docs/reference/cli.md does not list {command} {option}"


# Hand-written pages whose tables list catalogue keys in their first column.
KEY_TABLES = ["guides/catalogue.md", "guides/checks.md", "guides/slack.md"]


@pytest.mark.parametrize("page", KEY_TABLES)
def test_guides_name_only_keys_that_exist(page):
    known = {name for model in _models() for name in model.model_fields}
    in_tables = []
    for body in re.findall(r"^\| key \|[^\n]*\n\|[-| ]+\|\n((?:\|[^\n]*\n)+)", (DOCS / page).read_text(), re.M):
        in_tables += re.findall(r"^\| `([a-z_]+)` \|", body, re.M)
    assert in_tables, f"docs/{page} has no key table"
    gone = sorted(set(in_tables) - known)
    assert not gone, f"docs/{page} names catalogue keys the code does not take: {gone}"


def test_verdict_page_explains_every_failure_mode():
    text = (DOCS / "concepts" / "verdict.md").read_text()
    for mode in FailureMode:
        if mode is not FailureMode.DRILL_ERROR:  # an ERROR, explained beside the verdicts
            assert f"| {mode.value} |" in text, f"docs/concepts/verdict.md's failure-mode table has no row for {mode.value!r}"


def test_dashboard_and_alert_rules_name_only_metrics_drillbook_writes():
    written = set(re.findall(r"^\| `(drillbook_[a-z_]+)` \|", (DOCS / "reference" / "metrics.md").read_text(), re.M))
    assert written
    for path in [ROOT / "examples" / "grafana" / "drillbook-dashboard.json", ROOT / "deployments" / "prometheus-rules.yml"]:
        named = set(re.findall(r"drillbook_[a-z_]+", path.read_text()))
        assert named, path
        assert named <= written, f"{path.relative_to(ROOT)} names metrics drillbook does not write: {sorted(named - written)}"
    json.loads((ROOT / "examples" / "grafana" / "drillbook-dashboard.json").read_text())


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for item in node:
                yield from pages(item)
        elif isinstance(node, dict):
            for value in node.values():
                yield from pages(value)

    in_nav = set(pages(config["nav"]))
    on_disk = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")}
    assert in_nav == on_disk, f"not in the nav: {sorted(on_disk - in_nav)}; in the nav but missing: {sorted(in_nav - on_disk)}"


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", text)
    assert links
    for link in links:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"
    # The sample runbook lives in the docs, nested; its headings are not the README's.
    assert "## Replica destination" not in text
    assert text.count("\n## Slack") <= 1


def test_readme_quickstart_catalogue_is_valid(tmp_path, capsys):
    """The README's TOML blocks, together, are the catalogue a newcomer copies: check-config accepts it."""
    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    (tmp_path / "drillbook.toml").write_text("\n".join(blocks))
    assert main(["check-config", "--config", str(tmp_path / "drillbook.toml")]) == 0
    assert "1 database(s) OK" in capsys.readouterr().out


# ---------------------------------------------------------------- the CI examples, run as written

CATALOGUE = """\
[[database]]
name = "orders"
replica = "file://{replica}"
rto_target = "5m"
rpo_target = "1m"
"""

EXAMPLES = {
    "github-actions/restore-drill.yml": lambda doc: [step["run"] for job in doc["jobs"].values() for step in job["steps"] if "run" in step],
    "gitlab-ci/restore-drill.gitlab-ci.yml": lambda doc: [
        line for key, job in doc.items() if isinstance(job, dict) and "script" in job for line in job["script"]
    ],
}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_ci_example_commands_run_as_written(example, tmp_path, monkeypatch):
    """Every drillbook command of the workflow: check-config runs; the others pass the parser and the checks
    drillbook makes before any Prefect server starts (catalogue, database names)."""
    doc = yaml.safe_load((ROOT / "examples" / example).read_text())
    commands = [line.strip() for line in EXAMPLES[example](doc) if line.strip().startswith("drillbook ")]
    assert any(c.startswith("drillbook release ") for c in commands), f"{example} has no release gate"
    (tmp_path / "replica").mkdir()
    (tmp_path / "drillbook.toml").write_text(CATALOGUE.format(replica=tmp_path / "replica"))
    monkeypatch.chdir(tmp_path)
    env = {"GITHUB_REF_NAME": "v1.2.3", "CI_COMMIT_TAG": "v1.2.3"}
    for command in commands:
        argv = shlex.split(re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), command))[1:]
        assert "$" not in " ".join(argv), f"{example}: {command!r} uses a variable the test does not know"
        if argv[0] == "check-config":
            assert main(argv) == 0, f"{example}: {command!r}"
            continue
        args = build_parser().parse_args(argv)
        if getattr(args, "validate", None):
            args.validate(args)
        catalogue = load_catalogue(args.config)
        for name in getattr(args, "db", None) or []:
            catalogue.get(name)
    assert os.getcwd() == str(tmp_path)
