"""The storage interface every replica backend implements.

A replica is a tree of objects below one root (a bucket and prefix, a directory,
a container path, ...). drillbook needs three things from it, and nothing else:

    probe()                    can the root be reached and listed? (StorageError otherwise)
    list(prefix)               every object below root/prefix: key (relative to the root), size, time
    read(key, start, length)   a byte range of one object (an LTX header is its first 100 bytes)
    folders(prefix)            optional: the names right below root/prefix, without listing what is inside them
                               (S3's Delimiter='/', a directory's entries): discovery of a tenant fleet

Implementations map their client's errors onto `StorageProblem`, so that the
drill names the same failure mode whatever the backend: unreachable endpoint,
refused credentials, missing bucket or directory, failing object reads.
Messages name the place (redacted) and what to change; never a secret.

Everything else drillbook knows about a backend is declared once, in its module, as
`BACKEND = Backend(...)`: the URL schemes, the storage class, what identifies its
store and place (fleet concurrency, promotion overlap checks), the variables its
litestream client reads, what to tell the operator about credentials, the URL check
and litestream's config entry. The registry (storage/__init__.py) lists the modules;
litestream's environment, the runbook and the catalogue's checks read the declarations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

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
    """A replica's root in one backend. Implementations are cheap to make; clients behind them are cached.

    A backend whose client is costly to build may also offer `connect()`, which builds it ahead of the first
    request (tasks/replica.py's warm_clients calls it where present)."""

    #: Where the root is, for messages: scheme, place and path, no credentials.
    where: str

    def probe(self) -> None:
        """Raise StorageError unless the root can be listed (an empty root is not an error here)."""

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        """Every object below root/prefix, paginated by the client, in no promised order."""

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        """`length` bytes of object `key` from `start` (all of it when None); StorageError when it cannot."""


def server_place(url: str) -> tuple[str, tuple[str, ...]]:
    """A server backend's place: (scheme, user, host and port; the path's segments). `webdavs` is webdav's place too."""
    parts = urlsplit(url)
    scheme = parts.scheme.removesuffix("s") if parts.scheme == "webdavs" else parts.scheme
    store = f"{scheme} {parts.username or ''}@{(parts.hostname or '').lower()}:{parts.port or ''}"
    return store, tuple(s for s in unquote(parts.path).split("/") if s)


def append_path(url: str, name: str) -> str:
    """`url` with `name` appended to its path: a promotion drill's own sub-prefix, on every store with prefixes."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/" + name, parts.query, parts.fragment))


def delete_listed(storage: Storage) -> int:
    """Delete every object `storage` lists (its class has `delete(key)`): a promotion drill's own prefix. How many."""
    keys = [item.key for item in storage.list()]
    for key in keys:
        storage.delete(key)  # type: ignore[attr-defined] - the backends that can delete have it
    return len(keys)


@dataclass(frozen=True)
class Backend:
    """One backend's facts, declared once in its module (`BACKEND = Backend(...)`) and read by everything else."""

    #: URL schemes this backend serves ('webdav', 'webdavs'); the first names it in messages.
    schemes: tuple[str, ...]
    #: The Storage class: `storage(url, timeout=...)`; cheap, its client loads on first use.
    storage: Callable[..., Storage]
    #: The server and bucket a replica lives on, what concurrent drills share: 'aws/bucket', 'sftp.example:22'.
    scope: Callable[[str], str]
    #: (the store, the path's segments): two replicas in the same store overlap when one's segments start the other's.
    place: Callable[[str], tuple[str, tuple[str, ...]]] = server_place
    #: The variables litestream's client for it reads (passed through to litestream, nothing else is).
    env: tuple[str, ...] = ()
    #: Which of `env` hold secrets: masked in every output from the catalogue's load on.
    secret_env: tuple[str, ...] = ()
    #: What to tell the operator about credentials (the runbook's lines; variable names, never values).
    credentials: tuple[str, ...] = ()
    #: What the URL or the environment lacks (a container, a host, a key file); None when complete.
    check_url: Callable[[str], str | None] = lambda url: None
    #: litestream's config `replica:` entry, secrets as ${VAR}; None where litestream restores from the URL itself.
    litestream_replica: Callable[[str], dict[str, str]] | None = None
    #: Delete every object below a URL (a promotion drill's own prefix, after a PASS): how many. None where drillbook
    #: cannot, so a promotion replica there is refused at check-config.
    delete_prefix: Callable[[str, float], int] | None = None
    #: A promotion drill's own place under the configured promotion replica: its path plus the drill's name.
    drill_url: Callable[[str, str], str] = append_path
    #: Make that place before litestream writes there (NATS: a bucket of its own); refuses one that exists already.
    prepare_drill: Callable[[str, float], None] | None = None

    @property
    def promotable(self) -> bool:
        return self.delete_prefix is not None
