"""The storage interface every replica backend implements.

A replica is a tree of objects below one root (a bucket and prefix, a directory,
a container path, ...). drillbook needs three things from it, and nothing else:

    probe()                    can the root be reached and listed? (StorageError otherwise)
    list(prefix)               every object below root/prefix: key (relative to the root), size, time
    read(key, start, length)   a byte range of one object (an LTX header is its first 100 bytes)

Implementations map their client's errors onto `StorageProblem`, so that the
drill names the same failure mode whatever the backend: unreachable endpoint,
refused credentials, missing bucket or directory, failing object reads.
Messages name the place (redacted) and what to change; never a secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from drillbook.tasks.errors import DrillbookError


class StorageProblem(StrEnum):
    """Why the store could not be read; the values are ReplicaProblem's for the same cases."""

    MISSING = "missing"  # bucket, container or directory does not exist: no backup
    ACCESS_DENIED = "access_denied"  # credentials missing or refused
    UNREACHABLE = "unreachable"  # endpoint down, DNS, TLS not trusted
    STORAGE_ERROR = "storage_error"  # the store answered with an error (5xx, reset, object gone)
    TIMEOUT = "timeout"  # no answer in time


class StorageError(DrillbookError):
    """The store did not do what was asked; `problem` classifies it, the message says where and what to do."""

    def __init__(self, problem: StorageProblem, message: str):
        super().__init__(message)
        self.problem = problem

    def __reduce__(self):
        return (type(self), (self.problem, str(self)))


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object as the store lists it: its key below the replica's root, size, and the store's own time."""

    key: str
    size: int
    modified: datetime  # the object store's clock (LastModified, mtime), never litestream's


class Storage(Protocol):
    """A replica's root in one backend. Implementations are cheap to make; clients behind them are cached."""

    #: Where the root is, for messages: scheme, place and path, no credentials.
    where: str

    def probe(self) -> None:
        """Raise StorageError unless the root can be listed (an empty root is not an error here)."""

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        """Every object below root/prefix, paginated by the client, in no promised order."""

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """`length` bytes of object `key` from `start` (all of it when None); StorageError when it cannot."""
