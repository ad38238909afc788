"""file:// replicas: a directory on this machine (or a mounted share)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from drillbook.tasks.storage.base import Backend, StorageError, StorageProblem, StoredObject
from drillbook.tasks.text import redact_url


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
        root = str(self.root)
        start = os.path.join(root, prefix) if prefix else root
        skip = len(root) + 1
        pending = [start]
        while pending:  # os.scandir with strings: pathlib per entry costs more than the listing itself on 100,000 files
            try:
                entries = list(os.scandir(pending.pop()))
            except FileNotFoundError:  # removed by retention between the listing of its parent and now
                continue
            for item in entries:
                try:
                    if item.is_dir(follow_symlinks=False):
                        pending.append(item.path)
                        continue
                    stat = item.stat()
                except FileNotFoundError:
                    continue
                yield StoredObject(key=item.path[skip:], size=stat.st_size, modified=datetime.fromtimestamp(stat.st_mtime, UTC))

    def folders(self, prefix: str = "") -> Iterator[str]:
        """The names of the directories right below root/prefix (one os.scandir, nothing below them read)."""
        try:
            with os.scandir(os.path.join(str(self.root), prefix) if prefix else str(self.root)) as entries:
                names = [item.name for item in entries if item.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return
        yield from names

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        path = self.root / key
        try:
            with path.open("rb") as handle:
                handle.seek(start)
                return handle.read() if length is None else handle.read(length)
        except OSError as exc:
            raise StorageError(StorageProblem.STORAGE_ERROR, f"{path} is listed but cannot be read: {exc.strerror}") from None


def check_url(url: str) -> str | None:
    if not urlsplit(url).path:
        return f"a file replica needs an absolute path, like file:///srv/replicas/app.db (got {redact_url(url)!r})"
    return None


def place(url: str) -> tuple[str, tuple[str, ...]]:
    path = PurePosixPath(unquote(urlsplit(url).path))
    return "file", tuple(s for s in path.parts if s not in ("/", ""))


def delete_prefix(url: str, timeout: float = 60.0) -> int:
    """Remove the directory below a file:// URL: how many files it held."""
    root = Path(unquote(urlsplit(url).path))
    if not root.is_dir():
        return 0
    count = sum(1 for item in root.rglob("*") if item.is_file())
    shutil.rmtree(root)
    return count


BACKEND = Backend(
    schemes=("file",),
    storage=FileStorage,
    scope=lambda url: "local-files",
    place=place,
    credentials=("none: the replica directory's filesystem permissions decide who can read it",),
    check_url=check_url,
    delete_prefix=delete_prefix,
)
