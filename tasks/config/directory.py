"""One [[directories]] entry: a directory of databases as litestream 0.5 replicates it (`dbs: - dir:`), one catalogue entry.

litestream writes each database below the replica path plus its relative path (`prod/team-a/db2.db/0000/...` on S3).
The databases are discovered from the replica's listing, never from the live directory; each inherits the
entry's settings, then the overrides whose `match` fits its relative path, in order.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from drillbook.tasks.config.entry import DatabaseEntry
from drillbook.tasks.errors import ConfigError
from drillbook.tasks.storage import open_storage
from drillbook.tasks.storage.base import StorageError
from drillbook.tasks.text import file_part

_DIRECTORY_ONLY = {"pattern", "recursive", "live_dir", "override", "list_timeout"}
_NOT_INHERITED = ("live_path", "follow", "promote", "litefs")  # one per database, never one for a whole fleet
_TREES = ("ltx", "generations")  # litestream 0.5's LTX tree on file replicas; 0.3's generations
_LEVEL = re.compile(r"[0-9a-f]{4}")  # litestream 0.5's level folders on object stores (0000 ... 0009)
NAME_LIMIT = 63
DISCOVERY_KEPT = 600.0  # seconds a discovery is reused in this process (a nightly's drills ask for the names again)


class DirectoryOverride(BaseModel):
    """[[directories.override]]: any [[database]] key, for the discovered databases whose relative path `match` fits."""

    model_config = ConfigDict(extra="allow")  # the keys are DatabaseEntry's: checked by building one (DirectoryEntry._check)

    match: str = Field(
        min_length=1,
        description='A relative path or glob ("team-a/*", "big.db", "**/big.db"): `*`, `?` and `[...]` stay within one folder, '
        "a `**` segment spans any number of folders; the keys beside it override the inherited ones.",
    )

    @field_validator("match")
    @classmethod
    def _match(cls, value: str) -> str:
        if value.startswith("/") or any(part in ("", ".", "..") for part in value.split("/")):
            raise ValueError(f"match is a path relative to the directory, like 'team-a/*' or '**/big.db' (got {value!r})")
        return value

    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DirectoryEntry(DatabaseEntry):
    """A directory of databases replicated by one litestream `dir:` entry; every [[database]] key is inherited."""

    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(default="*.db", min_length=1, description="Glob the database file names match, as litestream's `pattern`.")
    recursive: bool = Field(default=False, description="Databases in subdirectories too, as litestream's `recursive`.")
    live_dir: str | None = Field(
        default=None,
        description="The live directory (read, never written): a database there matching the pattern with no replica is a FAIL 'no backup'.",
    )
    list_timeout: float = Field(default=120.0, gt=0, le=3600, description="Seconds allowed for listing the replica prefix.")
    override: list[DirectoryOverride] = Field(
        default_factory=list, description='Per-database settings: [[directories.override]] match = "team-a/*" with any [[database]] keys.'
    )

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if "/" in value:
            raise ValueError(f"pattern matches file names, as litestream's does (no '/'; use recursive = true); got {value!r}")
        return value

    @model_validator(mode="after")
    def _check(self) -> DirectoryEntry:
        for key in _NOT_INHERITED:
            if getattr(self, key) is not None:
                raise ValueError(
                    f"{key} is set per database: put it in a [[directories.override]] for one database, or a [[database]] entry"
                )
        for index, override in enumerate(self.override):
            try:
                DatabaseEntry.model_validate({**self.inherited(), **override.settings(), "name": self.name, "replica": self.replica})
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
                raise ValueError(f"override[{index}] (match {override.match!r}): {problems}") from None
        return self

    def inherited(self) -> dict[str, Any]:
        """The [[database]] keys set on the directory entry, as every discovered database starts."""
        return self.model_dump(exclude_unset=True, exclude=_DIRECTORY_ONLY | {"name", "replica"})

    def matches(self, relative: str) -> bool:
        parts = PurePosixPath(relative).parts
        if not parts or (len(parts) > 1 and not self.recursive):
            return False
        return fnmatchcase(parts[-1], self.pattern)

    def tenant_name(self, relative: str) -> str:
        """A stable name from the relative path, safe in every sink (file names, keys, limit names): '/' as '--'.

        When escaping changed anything but the '/' or the name is too long, a digest of the path keeps it unique.
        """
        plain = f"{self.name}.{relative.replace('/', '--')}"
        name = file_part(plain, 200)
        if name == plain and len(name) <= NAME_LIMIT:
            return name
        digest = hashlib.sha256(relative.encode()).hexdigest()[:10]
        return f"{name[: NAME_LIMIT - 11]}-{digest}"

    def tenant_replica(self, relative: str) -> str:
        """The replica URL of one database: the prefix plus its relative path, the query kept."""
        parts = urlsplit(self.replica)
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + relative))

    def tenant(self, relative: str) -> DatabaseEntry:
        settings = self.inherited()
        for override in self.override:
            if path_matches(relative, override.match):
                settings.update(override.settings())
        settings.update(name=self.tenant_name(relative), replica=self.tenant_replica(relative))
        if self.live_dir and "live_path" not in settings:
            settings["live_path"] = os.path.join(self.live_dir, relative)
        return DatabaseEntry.model_validate(settings)


def path_matches(relative: str, pattern: str) -> bool:
    """A relative path against an override's `match`, folder by folder: `*` never crosses a '/', a `**` segment spans any number.

    `*` is top-level databases only, `team-a/*` those directly in team-a, `team-a/**` everything below it, `**/big.db` every big.db.
    """
    return _segments(relative.split("/"), pattern.split("/"))


def _segments(parts: list[str], patterns: list[str]) -> bool:
    if not patterns:
        return not parts
    if patterns[0] == "**":
        return any(_segments(parts[index:], patterns[1:]) for index in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], patterns[0]) and _segments(parts[1:], patterns[1:])


def replicated(directory: DirectoryEntry, where: str) -> list[str]:
    """The relative paths of the databases below the replica prefix.

    Where the store lists folders (S3's Delimiter='/', file://): a folder whose name fits `pattern` is a database, one
    that does not is descended into when `recursive`; nothing inside a database's prefix is listed, so 10,000 tenants
    cost 10 S3 requests (bench/discovery.py). Elsewhere every object is listed and the prefixes holding a replica
    (LTX levels, or 0.3's generations/) are the databases.
    """
    try:
        storage = open_storage(directory.replica, timeout=directory.list_timeout)
        storage.probe()
        folders = getattr(storage, "folders", None)
        if folders is not None:
            return _walked(directory, folders)
        keys = [item.key for item in storage.list("")]
    except (StorageError, ValueError, OSError) as exc:
        raise ConfigError(
            f"{where}: directories {directory.name!r}: cannot list the replica prefix {directory.replica_redacted}: {exc}; "
            "fix the replica URL or the store's credentials",
            entry=directory.name,
            field="replica",
        ) from None
    return sorted(relative for relative in tenant_prefixes(keys) if directory.matches(relative))


# A database's prefix ends where its replica begins: litestream 0.5's levels (`0000/` on object stores, `ltx/0/` on
# file replicas, then <min TXID>-<max TXID>.ltx), or 0.3's generations/ tree.
_REPLICA_KEY = re.compile(r"(?P<db>.+?)/(?:ltx/)?[0-9a-f]{1,4}/[0-9a-f]{16}-[0-9a-f]{16}\.ltx\Z|(?P<old>.+?)/generations/")


def tenant_prefixes(keys: Iterable[str]) -> set[str]:
    """The relative paths below which a listing's keys hold a litestream replica (0.5's LTX levels or 0.3's generations)."""
    found = set()
    for key in keys:
        match = _REPLICA_KEY.match(key)
        if match:
            found.add(match.group("db") or match.group("old"))
    return found


def _walked(directory: DirectoryEntry, folders: Callable[[str], Iterable[str]]) -> list[str]:
    """Folder listings from the prefix down: names fitting the pattern are databases, others folders (when recursive)."""
    found, pending = [], [""]
    while pending:
        prefix = pending.pop()
        for name in folders(prefix):
            relative = prefix + name
            if fnmatchcase(name, directory.pattern):
                found.append(relative)
            elif directory.recursive and name not in _TREES and not _LEVEL.fullmatch(name):  # a replica's own folders: not a tenant
                pending.append(relative + "/")
    return sorted(found)


def live_only(directory: DirectoryEntry, replicated_paths: list[str]) -> list[str]:
    """Live databases matching the pattern that have no replica prefix (read-only: the directory is listed, nothing opened)."""
    if not directory.live_dir:
        return []
    root = Path(directory.live_dir)
    files = root.rglob(directory.pattern) if directory.recursive else root.glob(directory.pattern)
    known = set(replicated_paths)
    live = {path.relative_to(root).as_posix() for path in files if path.is_file()}
    return sorted(relative for relative in live if relative not in known and directory.matches(relative))


class Discovery(BaseModel):
    """What one directory entry yielded: its databases, or why its replica prefix could not be listed (then none)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    entries: list[DatabaseEntry] = Field(default_factory=list, description="The discovered (and live-only) databases.")
    problem: ConfigError | None = Field(default=None, description="The listing's error, naming the entry and what to fix.")


_found: dict[tuple[str, str], tuple[float, Discovery]] = {}


def discovery(directory: DirectoryEntry, where: str) -> Discovery:
    """The databases one directory entry yields, or its listing problem; listed once per process and entry for DISCOVERY_KEPT seconds.

    A failed listing is kept as long: the nightly's later asks (stale, metrics) do not wait for the store's timeout again.
    """
    key = (where, directory.model_dump_json())
    kept = _found.get(key)
    if kept is not None and time.monotonic() - kept[0] < DISCOVERY_KEPT:
        return kept[1]
    try:
        paths = replicated(directory, where)
    except ConfigError as exc:
        found = Discovery(problem=exc)
    else:
        found = Discovery(entries=[directory.tenant(relative) for relative in sorted(paths + live_only(directory, paths))])
    _found[key] = (time.monotonic(), found)
    return found


def discover(directory: DirectoryEntry, where: str) -> list[DatabaseEntry]:
    """The databases one directory entry yields; a ConfigError naming the entry when its replica prefix cannot be listed."""
    found = discovery(directory, where)
    if found.problem is not None:
        raise found.problem
    return found.entries


def forget_discoveries() -> None:
    """Discover again on the next ask (tests; a long-lived worker after the fleet changed)."""
    _found.clear()
