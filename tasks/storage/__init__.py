"""Replica storage: one interface (base.py), one module per backend declaring its facts (`BACKEND`), chosen by the URL's scheme.

Adding a backend: its module (a Storage class and `BACKEND = Backend(...)`), its line in KNOWN below, and a test.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from drillbook.tasks.storage import abs as azure_blob  # (not the builtin); every client loads only when used
from drillbook.tasks.storage import file, gcs, nats, oss, s3, sftp, webdav
from drillbook.tasks.storage.base import Backend, Storage, StorageError, StorageProblem, StoredObject

KNOWN: tuple[Backend, ...] = (
    s3.BACKEND,
    file.BACKEND,
    azure_blob.BACKEND,
    gcs.BACKEND,
    sftp.BACKEND,
    webdav.BACKEND,
    nats.BACKEND,
    oss.BACKEND,
)
BACKENDS: dict[str, Backend] = {scheme: backend for backend in KNOWN for scheme in backend.schemes}


def backend_for(url: str) -> Backend:
    """The backend serving the URL's scheme; ValueError naming the known schemes for one drillbook has no backend for."""
    scheme = urlsplit(url).scheme
    backend = BACKENDS.get(scheme)
    if backend is None:
        raise ValueError(f"no storage backend for {scheme}:// replicas (known: {known_schemes()})")
    return backend


def known_schemes() -> str:
    """'abs://, file://, gs://, ...': for messages."""
    return ", ".join(f"{scheme}://" for scheme in sorted(BACKENDS))


def open_storage(url: str, *, timeout: float) -> Storage:
    """The storage behind a replica URL; ValueError for a scheme drillbook has no backend for."""
    return backend_for(url).storage(url, timeout=timeout)


def check_replica_url(url: str) -> str | None:
    """What the backend finds missing in the URL or the environment (a container, a host, a key file); None when complete.

    ValueError for a scheme without a backend.
    """
    return backend_for(url).check_url(url)


def litestream_replica(url: str) -> dict[str, str] | None:
    """The `replica:` entry of a litestream config for this URL, secrets as ${VAR}; None where litestream takes the URL itself.

    s3:// and file:// replicas restore from their URL. The others need a config file: litestream
    ignores URL queries for abs (the endpoint) and reads an SFTP key file, a WebDAV login and NATS
    credentials only from its config.
    """
    build = backend_for(url).litestream_replica
    return build(url) if build else None


def store_scope(url: str) -> str:
    """The server and bucket (container, object store, host) a replica lives on: what concurrent drills share.

    'aws/bucket', '127.0.0.1:10000/devstoreaccount1/drills', 'sftp.example:22', 'local-files'.
    """
    backend = BACKENDS.get(urlsplit(url).scheme)
    return backend.scope(url) if backend else "local-files"


def replica_place(url: str) -> tuple[str, tuple[str, ...]] | None:
    """(the store, the path's segments) of a replica URL, for overlap checks; None where it cannot be told."""
    backend = BACKENDS.get(urlsplit(url).scheme)
    return backend.place(url) if backend else None


def litestream_variables() -> tuple[str, ...]:
    """Every variable some backend's litestream client reads: passed through to litestream."""
    return tuple(dict.fromkeys(name for backend in KNOWN for name in backend.env))


def secret_variables() -> tuple[str, ...]:
    """Every variable some backend declares secret: masked in all output."""
    return tuple(dict.fromkeys(name for backend in KNOWN for name in backend.secret_env))


__all__ = [
    "BACKENDS",
    "KNOWN",
    "Backend",
    "Storage",
    "StorageError",
    "StorageProblem",
    "StoredObject",
    "backend_for",
    "check_replica_url",
    "known_schemes",
    "litestream_replica",
    "litestream_variables",
    "open_storage",
    "replica_place",
    "secret_variables",
    "store_scope",
]
