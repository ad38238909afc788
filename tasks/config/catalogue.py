"""The whole catalogue: [drillbook] settings, [slack], and the [[database]] entries."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from drillbook.tasks.config.directory import DirectoryEntry, Discovery, discovery
from drillbook.tasks.config.entry import DatabaseEntry
from drillbook.tasks.config.fields import COMPAT_EVERY, Duration, RestoreWith
from drillbook.tasks.errors import ConfigError


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
    budget: Duration | None = Field(
        default=None,
        ge=60.0,
        le=7 * 86400.0,
        description='Wall time of a nightly (e.g. "45m"): it drills the riskiest databases that fit, those whose max_drill_age '
        "lapses before the next nightly first (`nightly --budget` overrides; default: no budget, every database).",
    )
    history_retention: Duration | None = Field(
        default=None,
        ge=86400.0,
        description="History rows, evidence files and Prefect runs of drillbook's flows older than this are pruned "
        "(`drillbook prune`, the drillbook-prune deployment), each database's newest drill and newest PASS always kept; "
        "none: nothing is pruned. Charts and forecasts read 90 days.",
    )
    metrics_file: str | None = Field(
        default=None,
        description="Prometheus textfile (node_exporter textfile collector) refreshed after every drill; relative to the catalogue.",
    )
    clock_skew_tolerance: Duration = Field(
        default=2.0,
        le=3600,
        description="Seconds the newest change may lie in the drill host's future (the primary's clock ahead) before the RPO "
        "is judged unknown and the drill FAILs as clock skew.",
    )
    restore_with: RestoreWith = Field(
        default_factory=list,
        description='litestream versions every database must also restore with (e.g. ["0.5.12"]): the compatibility drill. '
        "A database's own restore_with replaces this list.",
    )
    restore_with_every: Duration = Field(
        default=COMPAT_EVERY,
        ge=3600.0,
        le=3650 * 86400.0,
        description="Nightly cadence of the compatibility drill: at most one per database per this long (`drillbook run` always runs it).",
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


class WebhookSettings(BaseModel):
    """The [webhook] table: every report also POSTed as JSON (tasks/webhook.py). The URL is a credential: from the environment."""

    model_config = ConfigDict(extra="forbid")

    url_env: str = Field(description="Environment variable holding the webhook URL (never the URL itself: it carries a token).")
    outbox_dir: str = Field(
        default="drill-outbox-webhook",
        description="Reports the webhook did not take, kept until `drillbook outbox send`; relative to the catalogue.",
    )
    timeout: Duration = Field(default=10.0, le=600, description="Seconds allowed for one POST.")

    @field_validator("url_env")
    @classmethod
    def _url_env(cls, value: str) -> str:
        if "://" in value or not value.replace("_", "").isalnum():
            raise ValueError(f"url_env names an environment variable holding the URL, like DRILLBOOK_WEBHOOK_URL (got {value[:12]!r}...)")
        return value


class Catalogue(BaseModel):
    """The whole drillbook.toml."""

    model_config = ConfigDict(extra="forbid")

    drillbook: Settings = Field(default_factory=Settings)
    slack: SlackSettings | None = Field(default=None, description="Slack delivery; none: reports go to the terminal and evidence only.")
    webhook: WebhookSettings | None = Field(default=None, description="A JSON webhook every report also goes to; none: not used.")
    database: list[DatabaseEntry] = Field(default_factory=list)
    directories: list[DirectoryEntry] = Field(
        default_factory=list, description="Directories of databases as litestream's `dir:` replicates them; discovered from the replica."
    )
    path: Path | None = Field(default=None, exclude=True, description="Where this catalogue was read from.")
    _discovered: dict[str, Discovery] = PrivateAttr(default_factory=dict)  # each directory listed once for this catalogue's life
    _by_name: dict[str, DatabaseEntry] | None = PrivateAttr(default=None)  # databases() by name, made once (find() per tenant)

    @model_validator(mode="after")
    def _unique_names(self) -> Catalogue:
        seen: set[str] = set()
        for index, entry in enumerate(self.database):
            if entry.name in seen:
                raise ValueError(f"database[{index}] name {entry.name!r} is used twice; names must be unique")
            seen.add(entry.name)
        for index, directory in enumerate(self.directories):
            if directory.name in seen:
                raise ValueError(f"directories[{index}] name {directory.name!r} is used twice; names must be unique")
            seen.add(directory.name)
        return self

    def databases(self) -> list[DatabaseEntry]:
        """The declared [[database]] entries, then every database the [[directories]] yield (listed once per catalogue).

        A directory whose replica prefix cannot be listed yields none here: `unlisted()` says why, and the commands
        report it as that directory's one ERROR while the other databases are drilled. A discovered name equal to a
        declared one is a ConfigError: the declared entry would hide a tenant.
        """
        if self._by_name is not None:
            return list(self._by_name.values())
        where = str(self.path or "catalogue")
        entries = list(self.database)
        seen = {entry.name: "a [[database]] entry" for entry in entries}
        for directory in self.directories:
            for entry in self.discovery(directory).entries:
                if entry.name in seen:
                    raise ConfigError(
                        f"{where}: directories {directory.name!r}: discovered database {entry.name!r} has the name of "
                        f"{seen[entry.name]}; rename the directory entry or the other entry",
                        path=where,
                        entry=directory.name,
                    )
                seen[entry.name] = f"a database of directories {directory.name!r}"
                entries.append(entry)
        self._by_name = {entry.name: entry for entry in entries}
        return entries

    def discovery(self, directory: DirectoryEntry) -> Discovery:
        """What `directory` yields, listed once for this loaded catalogue: a nightly lists each directory once, however long it runs."""
        if directory.name not in self._discovered:
            self._discovered[directory.name] = discovery(directory, str(self.path or "catalogue"))
        return self._discovered[directory.name]

    def unlisted(self) -> list[tuple[DirectoryEntry, ConfigError]]:
        """The [[directories]] entries whose replica prefix could not be listed, each with the error naming it and what to fix."""
        found = [(directory, self.discovery(directory).problem) for directory in self.directories]
        return [(directory, problem) for directory, problem in found if problem is not None]

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

    def restore_with(self, entry: DatabaseEntry) -> list[str]:
        """The versions the compatibility drill restores with: the database's own list, else [drillbook]'s."""
        return list(entry.restore_with if entry.restore_with is not None else self.drillbook.restore_with)

    def restore_with_every(self, entry: DatabaseEntry) -> float:
        return entry.restore_with_every or self.drillbook.restore_with_every

    @property
    def outbox_dir(self) -> Path | None:
        return self.resolve(self.slack.outbox_dir) if self.slack else None

    def find(self, name: str | None) -> DatabaseEntry | None:
        """The entry called `name`, or None (a report of a database since removed from the catalogue)."""
        declared = next((entry for entry in self.database if entry.name == name), None)
        if declared is not None or not self.directories:
            return declared
        self.databases()  # the index by name, made once: a batch of 5,000 tenants asks 5,000 times
        return (self._by_name or {}).get(name)

    def get(self, name: str) -> DatabaseEntry:
        entry = self.find(name)
        if entry is not None:
            return entry
        names = [e.name for e in self.databases()]
        known = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "") or "none"
        unlisted = "".join(f"; {problem}" for directory, problem in self.unlisted() if name.startswith(f"{directory.name}."))
        raise ConfigError(
            f"{self.path or 'catalogue'}: no database named {name!r} (known: {known}){unlisted}",
            path=str(self.path) if self.path else None,
            entry=name,
        )
