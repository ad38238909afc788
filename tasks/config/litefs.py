"""The catalogue's LiteFS drill: `litefs = {...}` of a [[database]] entry.

    litefs = { nodes = ["node1", "node2", "node3"], primary = "node1", candidates = ["node2"], freshness_target = "1s" }

A LiteFS database is drilled on a cluster drillbook starts on loopback from the
restored copy (FUSE mounts under the drill's scratch directory, a static lease):
the production nodes are never stopped, switched or written. Nodes are therefore
names, not addresses: a node given as a host or URL names a production machine,
and is refused (with `allow_live_failover = true` too: drilling named nodes is
not built).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drillbook.tasks.config.fields import Duration

NODE_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}\Z")  # a LiteFS hostname in the drill cluster, a directory under scratch
DB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")


class LiteFSSettings(BaseModel):
    """litefs = { nodes = [...], primary = ..., candidates = [...] }: the primary switch, read freshness, write retry and degraded mode."""

    model_config = ConfigDict(extra="forbid")

    nodes: list[str] = Field(
        min_length=2,
        max_length=5,
        description='The drill cluster\'s nodes, started by drillbook on loopback: names like "node1" (never hosts).',
    )
    primary: str = Field(description="The node that holds the (static) lease at the start of the drill.")
    candidates: list[str] = Field(
        default_factory=list,
        description="Nodes that may take over as primary, in order (default: every other node); the first is promoted.",
    )
    lease: Literal["static", "consul"] = Field(
        default="static", description='"static" (the operator moves the primary); "consul" needs a Consul server and is not built yet.'
    )
    db: str | None = Field(default=None, description="The database's file name in the LiteFS mount (default: live_path's, else NAME.db).")
    seconds: Duration = Field(
        default=10.0, ge=1, le=600, description="Read-freshness window: the replicas' positions sampled while writes go on."
    )
    freshness_target: Duration = Field(le=86400, description='Largest acceptable staleness of a replica (p95 of the samples), e.g. "1s".')
    write_rate: float = Field(
        default=20.0, gt=0, le=500, description="Writes per second the drill's writer sends to the primary throughout."
    )
    switch: Literal["crash", "handoff"] = Field(
        default="crash",
        description='"crash": the primary is killed (SIGKILL), as a failed machine; "handoff": stopped cleanly (SIGTERM) first.',
    )
    old_primary: Literal["reconfigured", "unchanged"] = Field(
        default="reconfigured",
        description='How the old primary returns: "reconfigured" (its lease names the new primary, the runbook\'s step) or '
        '"unchanged" (rebooted with its old configuration, as a machine that comes back before anyone changed it).',
    )
    write_timeout: Duration = Field(
        default=2.0, gt=0, le=60, description="With no primary a write must fail within this (degraded mode: fail fast, never hang)."
    )
    binary: str | None = Field(
        default=None, description="A litefs binary (default: PATH, else drillbook's pinned build, made with `go install`)."
    )
    allow_live_failover: bool = Field(
        default=False,
        description="Drilling named production nodes: refused without this, and not built with it (the drill cluster is drillbook's own).",
    )

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each node is named once")
        return value

    @field_validator("db")
    @classmethod
    def _db(cls, value: str | None) -> str | None:
        if value is not None and (not DB_NAME.match(value) or value.endswith(("-pos", "-journal", "-wal", "-shm"))):
            raise ValueError(f"use a database file name like app.db (got {value[:60]!r})")
        return value

    @model_validator(mode="after")
    def _topology(self) -> LiteFSSettings:
        hosts = [node for node in self.nodes if not NODE_NAME.match(node)]
        if hosts:
            shown = ", ".join(repr(node[:60]) for node in hosts[:3])
            if self.allow_live_failover:
                raise ValueError(
                    f"nodes {shown} are hosts: drilling named production nodes (allow_live_failover = true) is not built; drillbook "
                    'drills LiteFS on a cluster it starts on loopback from the restored copy: name its nodes ("node1", "node2")'
                )
            raise ValueError(
                f"nodes {shown} are hosts, i.e. production nodes, and the drill stops and switches its primary: refused without "
                "allow_live_failover = true. drillbook drills LiteFS on a cluster it starts on loopback from the restored copy: "
                'name that cluster\'s nodes ("node1", "node2")'
            )
        if self.lease == "consul":
            raise ValueError(
                'lease = "consul" is not built yet (no Consul server can be started for the drill cluster here): use lease = "static", '
                "whose switch is the operator's (every node's lease names the new primary)"
            )
        if self.primary not in self.nodes:
            raise ValueError(f"primary {self.primary!r} is not one of the nodes ({', '.join(self.nodes)})")
        unknown = [c for c in self.candidates if c not in self.nodes]
        if unknown:
            raise ValueError(f"candidate {unknown[0]!r} is not one of the nodes ({', '.join(self.nodes)})")
        if self.primary in self.candidates:
            raise ValueError(f"the primary {self.primary!r} cannot be its own candidate: name the nodes that take over from it")
        return self

    @property
    def successor(self) -> str:
        """The node the switch promotes."""
        return (self.candidates or [n for n in self.nodes if n != self.primary])[0]

    def database(self, name: str, live_path: str | None) -> str:
        if self.db:
            return self.db
        if live_path:
            base = live_path.replace("\\", "/").rsplit("/", 1)[-1]
            if DB_NAME.match(base):
                return base
        return f"{name}.db"
