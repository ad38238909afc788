"""One [[database]] entry: what to drill, and what "recoverable" means for it."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from drillbook.tasks.catalogue_sql import syntax_problem
from drillbook.tasks.config.fields import (
    NAME_PATTERN,
    SLACK_ID_PATTERN,
    TAG_LIMIT,
    Duration,
    RestorePoints,
    RestoreWith,
    SmokeCheck,
)
from drillbook.tasks.config.litefs import LiteFSSettings
from drillbook.tasks.config.replicas import FollowSettings, PromoteSettings, overlap_problem
from drillbook.tasks.storage import BACKENDS, check_replica_url, known_schemes
from drillbook.tasks.text import check_label, redact_url


class DatabaseEntry(BaseModel):
    """One database under drill."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Short unique name: letters, digits, '-', '_', '.'; used in paths and reports.")
    replica: str = Field(
        description="Replica URL as litestream takes it: s3://bucket/path?endpoint=...&region=...&forcePathStyle=true, file:///path, "
        "abs://ACCOUNT@CONTAINER/PATH[?endpoint=URL], gs://BUCKET/PATH, sftp://USER@HOST[:PORT]/PATH, webdav[s]://HOST[:PORT]/PATH, "
        "nats://HOST[:PORT]/BUCKET; credentials from the environment (README, 'Replica backends'), never in the URL."
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
    restore_with: RestoreWith | None = Field(
        default=None,
        description='Other litestream versions that must restore this replica to the same data (e.g. ["0.5.12", "0.5.16"]): '
        "the restore-tool compatibility drill. Replaces [drillbook] restore_with for this database; [] turns it off.",
    )
    restore_with_every: Duration | None = Field(
        default=None,
        ge=3600.0,
        le=3650 * 86400.0,
        description="Nightly cadence of the compatibility drill for this database (default: [drillbook] restore_with_every).",
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
    # Read replica and warm standby (README, "Read replicas and promotion"): drills of their own, after integrity.
    follow: FollowSettings | None = Field(
        default=None, description='Read-replica drill: { seconds = "60s", freshness_target = "5s" }; needs freshness_query.'
    )
    promote: PromoteSettings | None = Field(
        default=None, description='Promotion drill: { replica = "s3://scratch/orders-promoted?...", writes = ["INSERT ..."] }.'
    )
    failover_rto_target: Duration | None = Field(
        default=None,
        description="Promotion drill: longest acceptable time until the promoted copy's writes are restorable; LiteFS drill: "
        "until the new primary takes a write after the old one stopped (default rto_target).",
    )
    litefs: LiteFSSettings | None = Field(
        default=None,
        description='LiteFS drill on a cluster started from the restored copy: { nodes = ["node1", "node2"], primary = "node1", '
        'freshness_target = "1s" } (primary switch, read freshness, write retry, degraded mode).',
    )

    @field_validator("freshness_query", "schema_version_query")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None and (problem := syntax_problem(value)) is not None:
            raise ValueError(f"does not parse ({problem}): fix the query in the catalogue")
        return value

    @field_validator("follow")
    @classmethod
    def _follow(cls, value: FollowSettings | None, info: ValidationInfo) -> FollowSettings | None:
        if value is not None and not info.data.get("freshness_query"):
            raise ValueError(
                "a follow drill measures staleness with freshness_query: set freshness_query (SQL giving the newest change's time)"
            )
        return value

    @field_validator("promote")
    @classmethod
    def _promote(cls, value: PromoteSettings | None, info: ValidationInfo) -> PromoteSettings | None:
        live = info.data.get("replica")
        if value is not None and live:
            problem = overlap_problem(live, value.replica)
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):  # the pattern ends in \Z: "app\n" is refused
            raise ValueError(f"use letters, digits, '-', '_' or '.', at most 63 characters (got {value!r})")
        return value

    @field_validator("owners")
    @classmethod
    def _owners(cls, value: list[str]) -> list[str]:
        for owner in value:
            if not SLACK_ID_PATTERN.match(owner):  # \Z: no trailing newline
                raise ValueError(
                    f"{owner!r} is not a Slack user ID (U0123ABCD, W0123ABCD) or user-group ID (S0123ABCD); "
                    "copy it from the person's or group's profile in Slack (names and @handles do not work)"
                )
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            check_label(tag, f"tag {tag[:40]!r}", TAG_LIMIT)
        return value

    @field_validator("expectations")
    @classmethod
    def _suites(cls, value: list[str] | None) -> list[str] | None:
        for suite in value or []:
            check_label(suite, f"suite {suite[:40]!r}")
        return value

    @field_validator("replica")
    @classmethod
    def _replica(cls, value: str) -> str:
        if urlsplit(value).scheme not in BACKENDS:
            raise ValueError(f"use a replica URL litestream replicates to ({known_schemes()}); got {redact_url(value)!r}")
        problem = check_replica_url(value)  # the backend's own check: a bucket, a container, a host, a key file
        if problem is not None:
            raise ValueError(problem)
        return value

    @property
    def replica_redacted(self) -> str:
        return redact_url(self.replica)

    def public(self) -> dict[str, Any]:
        """The entry as evidence: everything but anything secret-looking."""
        data = self.model_dump(mode="json")
        data["replica"] = self.replica_redacted
        if data.get("promote"):
            data["promote"]["replica"] = redact_url(data["promote"]["replica"])
        return data
