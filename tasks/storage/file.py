"""file:// replicas: a directory on this machine (or a mounted share)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from drillbook.tasks.storage.base import StorageError, StorageProblem, StoredObject


class FileStorage:
    """A replica below a directory; keys are paths relative to it, with '/'."""

    def __init__(self, url: str, *, timeout: float = 0.0):
        self.root = Path(unquote(urlsplit(url).path))
        self.where = str(self.root)
        self.endpoint = None

    def probe(self) -> None:
        if not self.root.is_dir():
            raise StorageError(StorageProblem.MISSING, f"replica directory {self.root} does not exist")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise StorageError(StorageProblem.ACCESS_DENIED, f"replica directory {self.root} is not readable by this user")

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        base = self.root / prefix if prefix else self.root
        for directory, _subdirs, names in os.walk(base):
            for name in names:
                path = Path(directory, name)
                try:
                    stat = path.stat()
                except FileNotFoundError:  # removed by retention between the walk and the stat
                    continue
                yield StoredObject(
                    key=path.relative_to(self.root).as_posix(), size=stat.st_size, modified=datetime.fromtimestamp(stat.st_mtime, UTC)
                )

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        path = self.root / key
        try:
            with path.open("rb") as handle:
                handle.seek(start)
                return handle.read() if length is None else handle.read(length)
        except OSError as exc:
            raise StorageError(StorageProblem.STORAGE_ERROR, f"{path} is listed but cannot be read: {exc.strerror}") from None
