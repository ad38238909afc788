"""The catalogue's read-replica and promotion drills: `follow = {...}` and `promote = {...}` of a [[database]] entry.

A promotion replicates the restored copy to a prefix of its own and writes to it:
that prefix must never be, hold, or sit inside the live replica. `replica_overlap`
tells how two replica URLs relate (the same store and a path prefix relation, on
whole path segments: `orders-promoted` is not inside `orders`).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drillbook.tasks.config.fields import Duration
from drillbook.tasks.storage import BACKENDS, replica_place
from drillbook.tasks.text import redact_url

PROMOTE_SCHEMES = tuple(scheme for scheme, backend in BACKENDS.items() if backend.promotable)  # drillbook deletes the prefix after a PASS


class FollowSettings(BaseModel):
    """follow = { seconds = "60s", freshness_target = "5s" }: a follower (`litestream restore -f`) kept for `seconds`."""

    model_config = ConfigDict(extra="forbid")

    seconds: Duration = Field(default=60.0, ge=2, le=3600, description="How long the follower is kept and sampled (once a second).")
    freshness_target: Duration = Field(
        le=86400, description='Largest acceptable staleness of a read on the follower (p95 of the samples), e.g. "5s".'
    )
    interval: Duration = Field(default=1.0, ge=0.1, le=60, description="litestream's -follow-interval: how often the follower polls.")
    hold_reader: bool = Field(
        default=False,
        description="Second half of the window: a reader process holds a read transaction open on the follower, as an "
        "application's long read would; a follower that stops applying meanwhile is a FAIL naming the reader.",
    )


class PromoteCommand(BaseModel):
    """One write by an application command: argv, with DRILLBOOK_DB_PATH the promoted copy's path."""

    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(min_length=1, description="argv of the application command; exit 0 is a successful write.")
    timeout: Duration = Field(default=60.0, le=3600, description="Seconds before the command's process group is killed.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for the command (no secrets: use pass_env).")
    pass_env: list[str] = Field(default_factory=list, description="Names of variables passed through from drillbook's environment.")
    cwd: str | None = Field(default=None, description="Working directory; relative to the catalogue.")


class PromoteSettings(BaseModel):
    """promote = { replica = "s3://drills-scratch/orders-promoted?...", writes = [...] }: the restored copy as a new primary."""

    model_config = ConfigDict(extra="forbid")

    replica: str = Field(
        description="Scratch replica URL the promoted copy replicates to; each drill uses a sub-prefix of its own (on nats://, a bucket "
        "named after this one and the drill), deleted after a PASS. Must not be, hold or sit inside the database's own replica."
    )
    writes: list[str | PromoteCommand] = Field(
        min_length=1, description='SQL run on the promoted copy (each in its own transaction), or { command = ["app", "write"] }.'
    )

    @field_validator("replica")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if urlsplit(value).scheme not in PROMOTE_SCHEMES:
            shown = ", ".join(f"{scheme}://" for scheme in sorted(PROMOTE_SCHEMES))
            raise ValueError(
                f"a promotion replica must be one of {shown} (drillbook deletes the drill's sub-prefix after a PASS; "
                f"a {urlsplit(value).scheme}:// replica has no sub-prefix it can delete); got {redact_url(value)!r}"
            )
        return value

    def describe_write(self, index: int) -> str:
        """'write 2 (INSERT INTO orders ...)' / 'write 1 (command app write)': how reports name a write."""
        write = self.writes[index]
        text = write if isinstance(write, str) else "command " + " ".join(write.command)
        text = " ".join(text.split())
        return f"write {index + 1} ({text[:80]}{'…' if len(text) > 80 else ''})"


def replica_overlap(live: str, other: str) -> str | None:
    """How `other` relates to the live replica `live`: 'equal', 'inside', 'contains', or None (apart)."""
    a, b = replica_place(live), replica_place(other)
    if a is None or b is None or a[0] != b[0]:
        return None
    if a[1] == b[1]:
        return "equal"
    if b[1][: len(a[1])] == a[1]:
        return "inside"
    if a[1][: len(b[1])] == b[1]:
        return "contains"
    return None


def overlap_problem(live: str, promote: str) -> str | None:
    """The config error for a promotion replica that overlaps the live replica, naming both; None when apart."""
    relation = replica_overlap(live, promote)
    if relation is None:
        return None
    said = {"equal": "is the live replica", "inside": "lies inside the live replica", "contains": "contains the live replica"}[relation]
    return (
        f"promote.replica {redact_url(promote)} {said} {redact_url(live)}: a promotion writes there and deletes it afterwards; "
        "use a scratch prefix apart from it (another bucket or a sibling path)"
    )


def shared_replicas(replicas: dict[str, str]) -> list[str]:
    """Databases (name -> replica URL) whose replicas are one place, or one inside another: a warning each.

    Two primaries replicating there would write one history between them (the fork the two-writer check looks for), and
    one replica inside another is read as part of it. Sorted by place, the replicas inside one follow it at once, so a
    catalogue of ten thousand is checked in one pass, not pair by pair.
    """
    placed = sorted((place[0], place[1], name) for name, url in replicas.items() if (place := replica_place(url)) is not None)
    found, warned = [], set()
    for index, (store, segments, name) in enumerate(placed):
        for other_store, other_segments, other in placed[index + 1 :]:
            if other_store != store or other_segments[: len(segments)] != segments:
                break
            if other in warned:  # once per database, beside the first it shares with
                continue
            warned.add(other)
            relation = "the same replica as" if other_segments == segments else "a replica inside the one of"
            found.append(
                f"{other} uses {relation} {name} ({redact_url(replicas[other])}): two primaries writing there fork one history; "
                "fine if both entries drill the same database on purpose"
            )
    return found
