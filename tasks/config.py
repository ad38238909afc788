"""The catalogue: which databases drillbook drills, and what "recoverable" means for each.

One TOML file (``drillbook.toml`` by default) validated into one typed model.
Credentials never live here: litestream and boto3 read the standard AWS
environment variables and profiles.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from drillbook.tasks.errors import ConfigError
from drillbook.tasks.text import redact_url

DEFAULT_CATALOGUE = "drillbook.toml"
CATALOGUE_ENV = "DRILLBOOK_CONFIG"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
DURATION_HINT = 'a number of seconds or a string like "90s", "5m", "1h"'


def parse_duration(value: Any) -> float:
    """Seconds from 90, 90.5, "90", "90s", "5m", "1h", "1d"."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"must be more than zero, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

_SECRET_PARAM = re.compile(r"(key|secret|token|password|credential)", re.IGNORECASE)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_SLACK_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")


_SMOKE_NAME = re.compile(r"^[^\x00-\x1f]{1,80}$")


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


class DatabaseEntry(BaseModel):
    """One database under drill."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Short unique name: letters, digits, '-', '_', '.'; used in paths and reports.")
    replica: str = Field(
        description="Replica URL as litestream takes it: s3://bucket/path?endpoint=...&region=...&forcePathStyle=true, or file:///path."
    )
    rto_target: Duration = Field(description="Longest acceptable time from 'start recovering' to 'the application works on the copy'.")
    rpo_target: Duration = Field(description="Largest acceptable age of the newest change held by the replica.")
    schema_version: int | str | None = Field(
        default=None, description="Expected schema version of the restored copy (compared with schema_version_query's result)."
    )
    schema_version_query: str = Field(
        default="PRAGMA user_version",
        description="SQL returning one value: the schema version (e.g. SELECT max(version) FROM schema_migrations).",
    )
    live_path: str | None = Field(default=None, description="The live database file: drillbook refuses to restore onto or near it.")
    restore_timeout: Duration = Field(
        default=1800.0, le=86400, description="Seconds after which the restore is killed and counted as restore lag."
    )
    inspect_timeout: Duration = Field(default=60.0, le=3600, description="Seconds allowed for listing the replica.")
    stall_timeout: Duration = Field(
        default=120.0,
        le=86400,
        description="Seconds a restore may go without progress (bytes received or written) before it is killed as an object storage failure.",
    )
    tags: list[str] = Field(default_factory=list, description="Free labels for selecting databases (nightly --tag).")
    row_counts: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="Smoke: table -> fewest rows it must hold on the copy, e.g. { customers = 100 }."
    )
    smoke: list[SmokeCheck] = Field(default_factory=list, description="Smoke checks ([[database.smoke]]): SQL, command or HTTP.")
    expectations: list[str] | None = Field(
        default=None,
        description="Great Expectations suite files, relative to expectations_dir; default: every *.json in expectations_dir/<name>/; [] for none.",
    )
    expectations_samples: bool = Field(
        default=False, description="Keep up to 20 sample unexpected values per failed expectation in the evidence (they are row data)."
    )
    slack_channel: str | None = Field(default=None, description="Slack channel for this database's reports (default: [slack] channel).")
    restore_points: RestorePoints | None = Field(
        default=None, description='Random point-in-time drills: { random_within = "30d", every = "7d" }; see `drillbook coverage`.'
    )
    retention_target: Duration | None = Field(
        default=None,
        le=3650 * 86400.0,
        description='The oldest restorable point must be at least this old (e.g. "14d"); proven by a restore.',
    )
    freshness_query: str | None = Field(
        default=None,
        min_length=1,
        description="SQL returning the newest change's time in the data (e.g. SELECT max(updated_at) FROM orders): "
        "run read-only on live_path and on the copy; the difference is the data-loss window.",
    )
    owners: list[str] = Field(
        default_factory=list, description="Slack user IDs (U..., W...) or user-group IDs (S...) mentioned when a drill does not pass."
    )
    max_drill_age: Duration | None = Field(
        default=None,
        description="Oldest acceptable last PASS before `drillbook stale` flags this database (default: [drillbook] max_drill_age).",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"use letters, digits, '-', '_' or '.', at most 63 characters (got {value!r})")
        return value

    @field_validator("owners")
    @classmethod
    def _owners(cls, value: list[str]) -> list[str]:
        for owner in value:
            if not _SLACK_ID.match(owner):
                raise ValueError(
                    f"{owner!r} is not a Slack user ID (U0123ABCD, W0123ABCD) or user-group ID (S0123ABCD); "
                    "copy it from the person's or group's profile in Slack (names and @handles do not work)"
                )
        return value

    @field_validator("replica")
    @classmethod
    def _replica(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "s3":
            if not parts.netloc or not parts.path.strip("/"):
                raise ValueError(f"an s3 replica needs a bucket and a path, like s3://bucket/app.db (got {value!r})")
        elif parts.scheme == "file":
            if not parts.path:
                raise ValueError(f"a file replica needs an absolute path, like file:///srv/replicas/app.db (got {value!r})")
        else:
            raise ValueError(f"use an s3:// or file:// replica URL (got {value!r})")
        return value

    @property
    def replica_redacted(self) -> str:
        return redact_url(self.replica)

    def public(self) -> dict[str, Any]:
        """The entry as evidence: everything but anything secret-looking."""
        data = self.model_dump(mode="json")
        data["replica"] = self.replica_redacted
        return data


class Settings(BaseModel):
    """The [drillbook] table: where drills put their files."""

    model_config = ConfigDict(extra="forbid")

    evidence_dir: str = Field(default="drill-evidence", description="Evidence bundles (JSON), one per drill; relative to the catalogue.")
    scratch_dir: str = Field(
        default_factory=lambda: os.path.join(tempfile.gettempdir(), "drillbook-scratch"),
        description="Where restored copies are made; relative paths are relative to the catalogue.",
    )
    keep_failed: int = Field(default=3, ge=0, le=100, description="Restored copies kept per database after a failed drill, for triage.")
    history_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the drill history; default a SQLite file history.db in the evidence_dir. "
        "The password, if any, comes from the environment: use ${VAR} in the URL.",
    )
    expectations_dir: str = Field(
        default="expectations", description="Where Great Expectations suite files live; relative to the catalogue."
    )
    # Looking ahead (README, "History, forecasts and alerts"): advice and warnings, never a verdict.
    forecast_horizon: Duration = Field(
        default=30 * 86400.0, description="A forecast RTO crossing its target sooner than this is a WARNING in the report."
    )
    forecast_min_drills: int = Field(
        default=5, ge=3, le=1000, description="Passing drills needed before a forecast is made (fewer: 'not guessing yet')."
    )
    forecast_window: int = Field(default=30, ge=3, le=1000, description="How many of the newest passing drills the forecast fits.")
    no_go_over_target: int = Field(
        default=3, ge=1, le=100, description="No-go advice when this many of the last no_go_window drills exceeded the RTO target."
    )
    no_go_window: int = Field(default=5, ge=1, le=100, description="How many recent drills the no-go advice looks at.")
    max_drill_age: Duration = Field(
        default=48 * 3600.0, description="A database whose last PASS is older than this is stale (`drillbook stale`)."
    )
    metrics_file: str | None = Field(
        default=None,
        description="Prometheus textfile (node_exporter textfile collector) refreshed after every drill; relative to the catalogue.",
    )

    @model_validator(mode="after")
    def _no_go(self) -> Settings:
        if self.no_go_over_target > self.no_go_window:
            raise ValueError(f"no_go_over_target ({self.no_go_over_target}) cannot be more than no_go_window ({self.no_go_window})")
        return self


class SlackSettings(BaseModel):
    """The [slack] table: where drill reports go. Secrets (token, webhook URL) come from the environment or a Prefect Secret block."""

    model_config = ConfigDict(extra="forbid")

    channel: str | None = Field(
        default=None, description="Default channel (name like '#drills' or ID like 'C0123ABCD'); databases may override it."
    )
    api_url: str | None = Field(
        default=None, description="Slack Web API base URL (default https://slack.com/api/); GovSlack, proxies and tests use another."
    )
    token_env: str = Field(default="SLACK_BOT_TOKEN", description="Environment variable holding the bot token (xoxb-...).")
    token_secret_block: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the bot token; read once per run, when the variable is unset."
    )
    webhook_url_env: str | None = Field(
        default=None, description="Environment variable holding an incoming-webhook URL: the simpler alternative (no thread, no file)."
    )
    outbox_dir: str = Field(
        default="drill-outbox", description="Reports Slack did not take, kept until `drillbook outbox send`; relative to the catalogue."
    )
    timeout: Duration = Field(default=30.0, le=600, description="Seconds allowed for one Slack request.")

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"expected an http(s) URL like https://slack.com/api/ (got {value!r})")
        return value if value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _target(self) -> SlackSettings:
        if not self.channel and not self.webhook_url_env:
            raise ValueError("set channel (with a bot token) or webhook_url_env (an incoming webhook), or remove the [slack] table")
        return self


class Catalogue(BaseModel):
    """The whole drillbook.toml."""

    model_config = ConfigDict(extra="forbid")

    drillbook: Settings = Field(default_factory=Settings)
    slack: SlackSettings | None = Field(default=None, description="Slack delivery; none: reports go to the terminal and evidence only.")
    database: list[DatabaseEntry] = Field(default_factory=list)
    path: Path | None = Field(default=None, exclude=True, description="Where this catalogue was read from.")

    @model_validator(mode="after")
    def _unique_names(self) -> Catalogue:
        seen: set[str] = set()
        for index, entry in enumerate(self.database):
            if entry.name in seen:
                raise ValueError(f"database[{index}] name {entry.name!r} is used twice; names must be unique")
            seen.add(entry.name)
        return self

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    @property
    def evidence_dir(self) -> Path:
        return self.resolve(self.drillbook.evidence_dir)

    @property
    def scratch_dir(self) -> Path:
        return self.resolve(self.drillbook.scratch_dir)

    @property
    def history_url(self) -> str:
        if self.drillbook.history_url:
            return os.path.expandvars(self.drillbook.history_url)
        return f"sqlite:///{(self.evidence_dir / 'history.db').resolve()}"

    @property
    def metrics_file(self) -> Path | None:
        return self.resolve(self.drillbook.metrics_file) if self.drillbook.metrics_file else None

    def max_drill_age(self, entry: DatabaseEntry) -> float:
        return entry.max_drill_age or self.drillbook.max_drill_age

    @property
    def outbox_dir(self) -> Path | None:
        return self.resolve(self.slack.outbox_dir) if self.slack else None

    def find(self, name: str | None) -> DatabaseEntry | None:
        """The entry called `name`, or None (a report of a database since removed from the catalogue)."""
        return next((entry for entry in self.database if entry.name == name), None)

    def get(self, name: str) -> DatabaseEntry:
        entry = self.find(name)
        if entry is not None:
            return entry
        known = ", ".join(e.name for e in self.database) or "none"
        raise ConfigError(
            f"{self.path or 'catalogue'}: no database named {name!r} (known: {known})",
            path=str(self.path) if self.path else None,
            entry=name,
        )


def catalogue_path(path: str | os.PathLike[str] | None = None) -> Path:
    return Path(path or os.environ.get(CATALOGUE_ENV) or DEFAULT_CATALOGUE)


def _describe_location(data: dict[str, Any], loc: tuple[Any, ...]) -> tuple[str | None, str]:
    """('orders' or 'database[2]', 'rto_target') from a pydantic error location."""
    if len(loc) >= 2 and loc[0] == "database" and isinstance(loc[1], int):
        entries = data.get("database") or []
        entry_name = None
        if loc[1] < len(entries) and isinstance(entries[loc[1]], dict):
            entry_name = entries[loc[1]].get("name")
        entry = f"database[{loc[1]}]" + (f" {entry_name!r}" if entry_name else "")
        field = ".".join(str(p) for p in loc[2:]) or "(entry)"
        return entry, field
    return None, ".".join(str(p) for p in loc) or "(file)"


def _check_guards(catalogue: Catalogue, source: Path) -> None:
    scratch = catalogue.scratch_dir.resolve()
    for index, entry in enumerate(catalogue.database):
        if not entry.live_path:
            continue
        live = Path(entry.live_path).expanduser().resolve()
        if live == scratch or live.is_relative_to(scratch):
            raise ConfigError(
                f"{source}: database[{index}] {entry.name!r}: field live_path: {live} lies inside the scratch_dir {scratch}; "
                "drillbook creates and deletes files there. Point [drillbook] scratch_dir somewhere else.",
                path=str(source),
                entry=entry.name,
                field="live_path",
            )


_loaded: dict[tuple[str, str, str], Catalogue] = {}
_LOADED_KEPT = 8


def load_catalogue(path: str | os.PathLike[str] | None = None) -> Catalogue:
    """Read and validate a catalogue; every problem is a ConfigError naming file, entry and field.

    Parsed once per process and content: a command that validates the catalogue and then
    starts a flow on the same file (the flow run is the deployment boundary, so it takes
    the path) gets a copy of the model already validated, not a second parse.
    """
    source = catalogue_path(path)
    try:
        raw = source.read_bytes()
    except OSError:
        raw = None  # reported below, by the same read
    if raw is not None:
        key = (str(source.resolve()), hashlib.sha256(raw).hexdigest(), tempfile.gettempdir())  # the scratch default follows TMPDIR
        if key in _loaded:
            return _loaded[key].model_copy(deep=True)
        catalogue = _parse_catalogue(source, raw)
        if len(_loaded) >= _LOADED_KEPT:
            _loaded.pop(next(iter(_loaded)))
        _loaded[key] = catalogue.model_copy(deep=True)
        return catalogue
    return _parse_catalogue(source, None)


def _parse_catalogue(source: Path, raw: bytes | None) -> Catalogue:
    try:
        if raw is None:
            raw = source.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: catalogue not found. Create it (see README, 'Catalogue') or pass --config PATH.", path=str(source)
        ) from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the catalogue: {exc.strerror}", path=str(source)) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}", path=str(source)) from None
    try:
        catalogue = Catalogue.model_validate({**data, "path": source.resolve()})
    except ValidationError as exc:
        problems = []
        first_entry = first_field = None
        for error in exc.errors():
            entry, field = _describe_location(data, tuple(error["loc"]))
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown field (check the spelling; see README, 'Catalogue')"
            elif error["type"] == "missing":
                message = "required field is missing"
            where = f"{entry}: " if entry else ""
            problems.append(f"{where}field {field}: {message}")
            first_entry = first_entry or entry
            first_field = first_field or field
        detail = "\n  ".join(problems)
        raise ConfigError(f"{source}: invalid catalogue:\n  {detail}", path=str(source), entry=first_entry, field=first_field) from None
    if not catalogue.database:
        raise ConfigError(f"{source}: no [[database]] entries; add one (see README, 'Catalogue').", path=str(source))
    for entry in catalogue.database:  # every path in the catalogue is relative to its folder, the guard's included
        if entry.live_path:
            entry.live_path = str(catalogue.resolve(entry.live_path))
    _check_guards(catalogue, source)
    _check_expectations_dir(catalogue, source)
    return catalogue


def _check_expectations_dir(catalogue: Catalogue, source: Path) -> None:
    """An expectations_dir set on purpose must exist: a typo would otherwise silently mean "no suites"."""
    if "expectations_dir" not in catalogue.drillbook.model_fields_set:
        return
    directory = catalogue.resolve(catalogue.drillbook.expectations_dir)
    if not directory.is_dir():
        raise ConfigError(
            f"{source}: [drillbook] field expectations_dir: {directory} is not a directory; create it, fix the path, or remove the field",
            path=str(source),
            field="expectations_dir",
        )
