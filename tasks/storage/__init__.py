"""Replica storage: one interface (base.py), one implementation per backend, chosen by the URL's scheme."""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from drillbook.tasks.storage.base import Storage, StorageError, StorageProblem, StoredObject

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


def open_storage(url: str, *, timeout: float) -> Storage:
    """The storage behind a replica URL; ValueError for a scheme drillbook has no backend for."""
    scheme = urlsplit(url).scheme
    target = BACKENDS.get(scheme)
    if target is None:
        raise ValueError(f"no storage backend for {scheme}:// replicas (known: {', '.join(sorted(BACKENDS))})")
    module, cls = target.split(":")
    return getattr(importlib.import_module(f"drillbook.tasks.storage.{module}"), cls)(url, timeout=timeout)


__all__ = ["BACKENDS", "Storage", "StorageError", "StorageProblem", "StoredObject", "open_storage"]
