"""The drill's phases are declared once (DrillSteps): every phase has a rule, and every renderer shows it.

A phase is a field of DrillSteps; this test fails when a new one has no rule in
verdict.py's STEP_RULES, or when a renderer (terminal, Markdown, Slack, the HTML
page, the history's summary) does not show a phase that went wrong.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest
from rich.console import Console

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.integrity import IntegrityReport
from drillbook.tasks.outcome import Status, Verdict
from drillbook.tasks.replica import ReplicaState
from drillbook.tasks.report.drill import render_markdown, render_terminal
from drillbook.tasks.report.html import phase_figures
from drillbook.tasks.report.slack import render_drill_message
from drillbook.tasks.restore import RestoreResult
from drillbook.tasks.result import PHASES, DrillHeader, DrillResult, DrillSteps, phase_kind
from drillbook.tasks.steps import StepResult
from drillbook.tasks.verdict import STEP_RULES, DrillContext, judge
from tests.verdicts import judged

START = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
ENTRY = DatabaseEntry(name="orders", replica="s3://b/orders.db", rto_target=60, rpo_target=30)
REQUIRED = {"replica": ReplicaState, "restore": RestoreResult, "integrity": IntegrityReport}


def test_phases_are_the_fields_of_drill_steps_in_drill_order():
    assert tuple(DrillSteps.model_fields) == PHASES
    assert PHASES[:4] == ("setup", "replica", "restore", "integrity")
    assert all(issubclass(phase_kind(name), StepResult) for name in PHASES)


def test_each_phase_result_is_declared_once():
    """DrillSteps (the verdict's input) and DrillResult (the bundle) carry the phases' fields of one declaration."""
    assert list(DrillResult.model_fields)[: len(DrillHeader.model_fields)] == list(DrillHeader.model_fields)
    for model in (DrillSteps, DrillResult, DrillHeader):
        assert not set(PHASES) & set(model.__annotations__), f"{model.__name__} declares a phase's field again"
    assert set(PHASES) <= set(DrillResult.model_fields)


def test_every_phase_has_a_rule():
    assert set(STEP_RULES) == set(PHASES)


def _marker(phase: str) -> str:
    return f"Broken{phase.title()}Marker"  # letters only: no renderer escapes it


def _with_error(phase: str):
    """A drill in which `phase` could not run, its summary a marker every renderer must show."""
    steps = {name: kind.skipped("not run") for name, kind in REQUIRED.items()}
    steps[phase] = phase_kind(phase)(status=Status.ERROR, summary=_marker(phase))
    return judged(ENTRY, started_at=START, **steps)


@pytest.mark.parametrize("phase", PHASES)
def test_every_renderer_shows_every_phase(phase):
    result = _with_error(phase)
    marker = _marker(phase)
    assert result.verdict == Verdict.ERROR and phase in result.phases
    sink = io.StringIO()
    Console(file=sink, width=400, record=True).print(render_terminal(result))
    message = render_drill_message(result)
    details = "".join(item.file.content for item in message.thread if item.file is not None)
    shown = {
        "terminal": sink.getvalue(),
        "markdown": render_markdown(result),
        "slack": json.dumps(message.blocks) + details,
        "history summary": json.dumps(result.summary()["phases"]),
        "html": json.dumps(phase_figures(result.summary())),
    }
    missing = [where for where, text in shown.items() if phase not in text or marker not in text]
    assert missing == []


def test_judge_reads_the_phases_it_is_given():
    steps = DrillSteps(**{name: kind.skipped("x") for name, kind in REQUIRED.items()})
    assert list(steps.ran()) == ["replica", "restore", "integrity"]
    context = DrillContext(drill_id="d", started_at=START, finished_at=START)
    assert judge(ENTRY, steps, context).phases.keys() == {"replica", "restore", "integrity"}
