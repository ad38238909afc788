"""Replica storage: one interface (base.py), one implementation per backend, chosen by the URL's scheme."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from urllib.parse import parse_qs, urlsplit

from drillbook.tasks.storage.base import Storage, StorageError, StorageProblem, StoredObject
from drillbook.tasks.storage.s3 import parse_s3_url

# scheme -> "module:Class" below drillbook.tasks.storage; a backend's client is imported only when used.
BACKENDS: dict[str, str] = {
    "s3": "s3:S3Storage",
    "file": "file:FileStorage",
    "abs": "abs:ABSStorage",
    "gs": "gcs:GCSStorage",
    "sftp": "sftp:SFTPStorage",
    "webdav": "webdav:WebDAVStorage",
    "webdavs": "webdav:WebDAVStorage",
    "nats": "nats:NATSStorage",
}


def _backend(url: str) -> tuple[ModuleType, str]:
    scheme = urlsplit(url).scheme
    target = BACKENDS.get(scheme)
    if target is None:
        raise ValueError(f"no storage backend for {scheme}:// replicas (known: {', '.join(f'{s}://' for s in sorted(BACKENDS))})")
    module, cls = target.split(":")
    return importlib.import_module(f"drillbook.tasks.storage.{module}"), cls


def open_storage(url: str, *, timeout: float) -> Storage:
    """The storage behind a replica URL; ValueError for a scheme drillbook has no backend for."""
    module, cls = _backend(url)
    return getattr(module, cls)(url, timeout=timeout)


def check_replica_url(url: str) -> str | None:
    """What the backend finds missing in the URL or the environment (a container, a host, a key file); None when complete.

    ValueError for a scheme without a backend. s3:// and file:// are checked by the catalogue itself.
    """
    module, _cls = _backend(url)
    check = getattr(module, "check_url", None)
    return check(url) if check else None


def litestream_replica(url: str) -> dict[str, str] | None:
    """The `replica:` entry of a litestream config for this URL, secrets as ${VAR}; None where litestream takes the URL itself.

    s3:// and file:// replicas restore from their URL. The others need a config file: litestream
    ignores URL queries for abs (the endpoint) and reads an SFTP key file, a WebDAV login and NATS
    credentials only from its config.
    """
    module, _cls = _backend(url)
    build = getattr(module, "litestream_replica", None)
    return build(url) if build else None


def store_scope(url: str) -> str:
    """The server and bucket (container, object store, host) a replica lives on: what concurrent drills share.

    'aws/bucket', '127.0.0.1:10000/devstoreaccount1/drills', 'sftp.example:22', 'local-files'.
    """
    parts = urlsplit(url)
    scheme, host = parts.scheme, parts.hostname or ""
    if scheme == "s3":
        location = parse_s3_url(url)
        return f"{urlsplit(location.endpoint).netloc if location.endpoint else 'aws'}/{location.bucket}"
    if scheme == "abs":
        endpoint = (parse_qs(parts.query).get("endpoint") or [""])[-1]
        server = urlsplit(endpoint)
        account = server.netloc + server.path.rstrip("/") if endpoint else f"{parts.username}.blob.core.windows.net"
        return f"{account}/{host}"
    if scheme == "gs":
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        return f"{urlsplit(emulator).netloc or emulator if emulator else 'gcs'}/{host}"
    if scheme in ("sftp", "webdav", "webdavs"):
        return f"{host}:{parts.port or {'sftp': 22, 'webdav': 80, 'webdavs': 443}[scheme]}"
    if scheme == "nats":
        return f"{host}:{parts.port or 4222}/{parts.path.strip('/')}"
    return "local-files"


__all__ = [
    "BACKENDS",
    "Storage",
    "StorageError",
    "StorageProblem",
    "StoredObject",
    "check_replica_url",
    "litestream_replica",
    "open_storage",
    "store_scope",
]
