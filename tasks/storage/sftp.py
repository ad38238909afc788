"""SFTP replicas (sftp://), through paramiko.

URL: sftp://USER@HOST[:PORT]/PATH, as litestream reads it (PATH as the server
sees it, absolute). litestream takes a password from the URL, but a key file only
from its config file (`key-path:`); drillbook reads both from the environment:
LITESTREAM_SFTP_KEY_PATH (a private key file, by path) and LITESTREAM_SFTP_PASSWORD,
the names litestream's own test suite uses, and hands them to litestream as ${VAR}
references in its config (`litestream_replica`). LITESTREAM_SFTP_HOST_KEY (one
authorized_keys line) pins the server's key for both; without it both accept any
host key, as litestream does.

Layout, as litestream's sftp client writes it: PATH/ltx/<level>/<minTXID>-<maxTXID>.ltx.
Listing times are the files' mtimes, whole seconds (SFTP v3 carries no fraction).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

from drillbook.tasks.storage.base import Backend, StorageError, StorageProblem, StoredObject, server_place
from drillbook.tasks.text import redact_url

#: What drillbook reads and passes to litestream for SFTP (litestream reads them through its config's ${VAR}).
_LITESTREAM_ENV = ("LITESTREAM_SFTP_KEY_PATH", "LITESTREAM_SFTP_PASSWORD", "LITESTREAM_SFTP_HOST_KEY")


def check_url(url: str) -> str | None:
    """What the URL lacks (host, user, path) or the environment lacks (a key or password); None when complete."""
    parts = urlsplit(url)
    if not parts.hostname:
        return f"{redact_url(url)}: no host: write sftp://USER@HOST[:PORT]/PATH"
    if not parts.username:
        return f"{redact_url(url)}: no user: write sftp://USER@{parts.hostname}/PATH"
    if parts.password:
        return f"{redact_url(url)}: a password in the URL ends up in logs and reports: set LITESTREAM_SFTP_PASSWORD instead"
    if not unquote(parts.path).strip("/"):
        return (
            f"{redact_url(url)}: no path: the replica's directory on the server, e.g. sftp://{parts.username}@{parts.hostname}/backups/app"
        )
    key = os.environ.get("LITESTREAM_SFTP_KEY_PATH")
    if key and not os.path.isfile(key):
        return f"LITESTREAM_SFTP_KEY_PATH={key} is not a file (the private key for {parts.username}@{parts.hostname})"
    if not key and not os.environ.get("LITESTREAM_SFTP_PASSWORD"):
        return f"no SFTP credentials for {parts.username}@{parts.hostname}: set LITESTREAM_SFTP_KEY_PATH to a private key file (or LITESTREAM_SFTP_PASSWORD)"
    return None


def litestream_replica(url: str) -> dict[str, str]:
    """The litestream config `replica:` entry; credentials as ${VAR}, expanded by litestream from its environment."""
    parts = urlsplit(url)
    replica = {"type": "sftp", "host": parts.netloc.rpartition("@")[2], "user": unquote(parts.username or ""), "path": unquote(parts.path)}
    if os.environ.get("LITESTREAM_SFTP_KEY_PATH"):
        replica["key-path"] = "${LITESTREAM_SFTP_KEY_PATH}"
    if os.environ.get("LITESTREAM_SFTP_PASSWORD"):
        replica["password"] = "${LITESTREAM_SFTP_PASSWORD}"
    if os.environ.get("LITESTREAM_SFTP_HOST_KEY"):
        replica["host-key"] = "${LITESTREAM_SFTP_HOST_KEY}"
    return replica


class SFTPStorage:
    """A replica below sftp://user@host/path; one SSH connection per operation, closed after it."""

    def __init__(self, url: str, *, timeout: float):
        parts = urlsplit(url)
        self.host = parts.hostname or ""
        self.port = parts.port or 22
        self.user = unquote(parts.username or "")
        self.root = "/" + unquote(parts.path).strip("/")
        self.timeout = timeout
        self.endpoint = f"{self.host}:{self.port}"
        self.where = f"sftp://{self.user}@{self.host}:{self.port}{self.root}"

    @contextlib.contextmanager
    def _session(self, doing: str, where: str):
        import paramiko

        key_path = os.environ.get("LITESTREAM_SFTP_KEY_PATH")
        password = os.environ.get("LITESTREAM_SFTP_PASSWORD")
        if not key_path and not password:
            raise StorageError(
                StorageProblem.ACCESS_DENIED,
                f"no SFTP credentials for {self.where}: set LITESTREAM_SFTP_KEY_PATH to the private key file (or LITESTREAM_SFTP_PASSWORD)",
            )
        client = paramiko.SSHClient()
        pinned = os.environ.get("LITESTREAM_SFTP_HOST_KEY")
        if pinned:
            kind, _, blob = pinned.strip().partition(" ")
            client.get_host_keys().add(
                f"[{self.host}]:{self.port}" if self.port != 22 else self.host, kind, paramiko.PKey.from_type_string(kind, _b64(blob))
            )
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # as litestream without host-key: not verified
        try:
            try:
                pkey = paramiko.PKey.from_path(key_path) if key_path else None
            except (OSError, paramiko.SSHException) as exc:
                raise StorageError(
                    StorageProblem.ACCESS_DENIED, f"LITESTREAM_SFTP_KEY_PATH={key_path} cannot be used as a private key: {exc}"
                ) from None
            try:
                client.connect(
                    self.host,
                    self.port,
                    username=self.user,
                    pkey=pkey,
                    password=password,
                    timeout=min(5.0, self.timeout),
                    banner_timeout=self.timeout,
                    auth_timeout=self.timeout,
                    allow_agent=False,
                    look_for_keys=False,
                )
                sftp = client.open_sftp()
                sftp.get_channel().settimeout(self.timeout)
                yield sftp
            except paramiko.BadHostKeyException:
                raise StorageError(
                    StorageProblem.ACCESS_DENIED,
                    f"the SSH host key of {self.endpoint} is not the one in LITESTREAM_SFTP_HOST_KEY {doing} {where}",
                ) from None
            except paramiko.AuthenticationException:
                raise StorageError(
                    StorageProblem.ACCESS_DENIED,
                    f"the SFTP server refused {self.user}'s credentials {doing} {where}: check LITESTREAM_SFTP_KEY_PATH "
                    "(its public key in the server's authorized_keys) or LITESTREAM_SFTP_PASSWORD",
                ) from None
            except FileNotFoundError:
                if where == self.where:
                    raise StorageError(StorageProblem.MISSING, f"replica directory {self.root} does not exist on {self.endpoint}") from None
                raise StorageError(StorageProblem.STORAGE_ERROR, f"listed but missing: {where}") from None
            except PermissionError:
                raise StorageError(
                    StorageProblem.ACCESS_DENIED, f"{self.user} may not read {where}: permission denied by the server"
                ) from None
            except TimeoutError:
                raise StorageError(
                    StorageProblem.TIMEOUT, f"the SFTP server did not answer within {self.timeout:g}s {doing} {where}"
                ) from None
            except paramiko.SSHException as exc:
                raise StorageError(StorageProblem.STORAGE_ERROR, f"SSH error {doing} {where}: {exc}") from None
            except (ConnectionError, socket.gaierror, paramiko.ssh_exception.NoValidConnectionsError) as exc:
                raise StorageError(
                    StorageProblem.UNREACHABLE, f"SFTP server unreachable: {self.endpoint} ({type(exc).__name__}) {doing} {where}"
                ) from None
            except OSError as exc:
                raise StorageError(StorageProblem.STORAGE_ERROR, f"SFTP error {doing} {where}: {exc}") from None
        finally:
            client.close()

    def probe(self) -> None:
        with self._session("listing", self.where) as sftp:
            sftp.listdir(self.root)

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        found: list[StoredObject] = []
        with self._session("listing", self.where) as sftp:
            start = f"{self.root}/{prefix}".rstrip("/") if prefix else self.root
            pending = [start]
            try:
                sftp.stat(start)
            except FileNotFoundError:
                if start != self.root:
                    return  # an absent subdirectory is an empty listing, as an S3 prefix is
                raise
            while pending:
                directory = pending.pop()
                for attrs in sftp.listdir_attr(directory):
                    path = f"{directory}/{attrs.filename}"
                    if stat.S_ISDIR(attrs.st_mode or 0):
                        pending.append(path)
                    else:
                        key = path[len(self.root) + 1 :]
                        found.append(
                            StoredObject(key=key, size=attrs.st_size or 0, modified=datetime.fromtimestamp(attrs.st_mtime or 0, UTC))
                        )
        yield from found

    def delete_tree(self) -> int:
        """Remove the root directory and everything below it (a promotion drill's own prefix): how many files."""
        count = 0
        with self._session("deleting", self.where) as sftp:
            directories, pending = [], [self.root]
            while pending:
                directory = pending.pop()
                directories.append(directory)
                for attrs in sftp.listdir_attr(directory):
                    path = f"{directory}/{attrs.filename}"
                    if stat.S_ISDIR(attrs.st_mode or 0):
                        pending.append(path)
                    else:
                        sftp.remove(path)
                        count += 1
            for directory in reversed(directories):  # the deepest first
                sftp.rmdir(directory)
        return count

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        path = f"{self.root}/{key}"
        with self._session("reading", f"sftp://{self.user}@{self.endpoint}{path}") as sftp, sftp.open(path, "rb") as handle:
            handle.seek(start)
            return handle.read() if length is None else handle.read(length)


def _b64(text: str) -> bytes:
    import base64

    return base64.b64decode(text.split()[0])


BACKEND = Backend(
    schemes=("sftp",),
    storage=SFTPStorage,
    scope=lambda url: f"{urlsplit(url).hostname or ''}:{urlsplit(url).port or 22}",
    place=server_place,
    env=_LITESTREAM_ENV,
    secret_env=("LITESTREAM_SFTP_PASSWORD",),
    credentials=(
        "LITESTREAM_SFTP_KEY_PATH (a private key file, by path) or LITESTREAM_SFTP_PASSWORD; the user is the URL's",
        "LITESTREAM_SFTP_HOST_KEY (one authorized_keys line) pins the server's key; without it any host key is accepted",
        "drillbook hands them to litestream as ${VAR} in the config it writes: never put a password in the URL",
    ),
    check_url=check_url,
    litestream_replica=litestream_replica,
    delete_prefix=lambda url, timeout: SFTPStorage(url, timeout=timeout).delete_tree(),
)
