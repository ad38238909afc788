"""WebDAV replicas (webdav:// over HTTP, webdavs:// over HTTPS), through httpx: PROPFIND and ranged GETs.

URL: webdav[s]://HOST[:PORT]/PATH, as litestream reads it. litestream takes the
user and password from the URL or its config file; drillbook reads them from
LITESTREAM_WEBDAV_USERNAME and LITESTREAM_WEBDAV_PASSWORD (the names litestream's
own test suite uses) and hands them to litestream as ${VAR} references in its
config (`litestream_replica`), so no password sits in a URL.

Layout, as litestream's webdav client writes it: PATH/ltx/<level>/<minTXID>-<maxTXID>.ltx.
Listing times are getlastmodified (RFC 1123: whole seconds).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree

from drillbook.tasks.storage.base import Backend, StorageError, StorageProblem, StoredObject, server_place
from drillbook.tasks.text import redact_url

#: What drillbook reads and passes to litestream for WebDAV (litestream reads them through its config's ${VAR}).
_LITESTREAM_ENV = ("LITESTREAM_WEBDAV_USERNAME", "LITESTREAM_WEBDAV_PASSWORD")

_DAV = "{DAV:}"
_PROPFIND = (
    b'<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop>'
    b"<d:resourcetype/><d:getcontentlength/><d:getlastmodified/></d:prop></d:propfind>"
)


def check_url(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.hostname:
        return f"{redact_url(url)}: no host: write webdav://HOST[:PORT]/PATH (webdavs:// for HTTPS)"
    if parts.password:
        return f"{redact_url(url)}: a password in the URL ends up in logs and reports: set LITESTREAM_WEBDAV_USERNAME and LITESTREAM_WEBDAV_PASSWORD instead"
    return None


def litestream_replica(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    http = "https" if parts.scheme == "webdavs" else "http"
    replica = {"type": "webdav", "webdav-url": f"{http}://{parts.netloc.rpartition('@')[2]}", "path": unquote(parts.path) or "/"}
    if os.environ.get("LITESTREAM_WEBDAV_USERNAME"):
        replica["webdav-username"] = "${LITESTREAM_WEBDAV_USERNAME}"
    if os.environ.get("LITESTREAM_WEBDAV_PASSWORD"):
        replica["webdav-password"] = "${LITESTREAM_WEBDAV_PASSWORD}"
    return replica


class WebDAVStorage:
    """A replica below webdav[s]://host/path."""

    def __init__(self, url: str, *, timeout: float):
        parts = urlsplit(url)
        http = "https" if parts.scheme == "webdavs" else "http"
        self.base = f"{http}://{parts.netloc.rpartition('@')[2]}"
        self.root = "/" + unquote(parts.path).strip("/")
        self.timeout = timeout
        self.endpoint = self.base
        self.where = f"{self.base}{self.root}"

    def _client(self):
        import httpx

        user, password = os.environ.get("LITESTREAM_WEBDAV_USERNAME"), os.environ.get("LITESTREAM_WEBDAV_PASSWORD")
        return httpx.Client(
            base_url=self.base,
            auth=(user, password or "") if user else None,
            timeout=httpx.Timeout(self.timeout, connect=min(5.0, self.timeout)),
            # PROPFIND and GET are idempotent: retry failed connects (httpx's transport retries connects only).
            transport=httpx.HTTPTransport(retries=2),
        )

    def _url(self, path: str) -> str:
        return quote(path)

    def _propfind(self, client, path: str, doing: str):
        response = self._send(
            lambda: client.request("PROPFIND", self._url(path + "/"), headers={"Depth": "1"}, content=_PROPFIND), doing, path
        )
        if response.status_code == 404:
            return None
        self._check(response, doing, path)
        return ElementTree.fromstring(response.content)

    def probe(self) -> None:
        with self._client() as client:
            if self._propfind(client, self.root, "listing") is None:
                raise StorageError(StorageProblem.MISSING, f"replica directory {self.root} does not exist on {self.base}")

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        start = f"{self.root}/{prefix}".rstrip("/") if prefix else self.root
        found: list[StoredObject] = []
        with self._client() as client:
            pending = [start]
            while pending:
                directory = pending.pop()
                tree = self._propfind(client, directory, "listing")
                if tree is None:
                    if directory == self.root:
                        raise StorageError(StorageProblem.MISSING, f"replica directory {self.root} does not exist on {self.base}")
                    continue
                for response in tree.iter(f"{_DAV}response"):
                    href = unquote(urlsplit(response.findtext(f"{_DAV}href", "")).path).rstrip("/")
                    if href == directory.rstrip("/") or not href.startswith(self.root.rstrip("/") + "/"):
                        continue  # the directory itself (Depth 1 lists it first)
                    props = response.find(f".//{_DAV}prop")
                    if props is None:
                        continue
                    if props.find(f"{_DAV}resourcetype/{_DAV}collection") is not None:
                        pending.append(href)
                        continue
                    modified = props.findtext(f"{_DAV}getlastmodified")
                    found.append(
                        StoredObject(
                            key=href[len(self.root.rstrip("/")) + 1 :],
                            size=int(props.findtext(f"{_DAV}getcontentlength") or 0),
                            # A server that gives no time gets the epoch: old, so it never looks fresh.
                            modified=parsedate_to_datetime(modified) if modified else datetime.fromtimestamp(0, UTC),
                        )
                    )
        yield from found

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        path = f"{self.root.rstrip('/')}/{key}"
        span = f"bytes={start}-" + (str(start + length - 1) if length else "")
        with self._client() as client:
            response = self._send(lambda: client.get(self._url(path), headers={"Range": span}), "reading", path)
            if response.status_code == 404:
                raise StorageError(StorageProblem.STORAGE_ERROR, f"listed but missing: {self.base}{path}")
            self._check(response, "reading", path)
            body = response.content
            if response.status_code == 200:  # a server that ignores Range sends the whole object
                body = body[start:] if length is None else body[start : start + length]
            return body

    def delete_tree(self) -> int:
        """DELETE the root collection (WebDAV removes what it holds with it): how many files it held."""
        count = sum(1 for _ in self.list())
        with self._client() as client:
            response = self._send(lambda: client.delete(self._url(self.root + "/")), "deleting", self.root)
            if response.status_code != 404:
                self._check(response, "deleting", self.root)
        return count

    def _send(self, call, doing: str, path: str):
        import httpx

        try:
            return call()
        except httpx.TimeoutException:
            raise StorageError(
                StorageProblem.TIMEOUT, f"the WebDAV server did not answer within {self.timeout:g}s {doing} {self.base}{path}"
            ) from None
        except httpx.ConnectError as exc:
            raise StorageError(
                StorageProblem.UNREACHABLE, f"WebDAV server unreachable: {self.base} ({type(exc).__name__}) {doing} {path}"
            ) from None
        except httpx.HTTPError as exc:
            raise StorageError(
                StorageProblem.STORAGE_ERROR, f"WebDAV error {doing} {self.base}{path}: {type(exc).__name__}: {exc}"
            ) from None

    def _check(self, response, doing: str, path: str) -> None:
        if response.status_code in (401, 403):
            raise StorageError(
                StorageProblem.ACCESS_DENIED,
                f"the WebDAV server refused the credentials {doing} {self.base}{path} (HTTP {response.status_code}): "
                "check LITESTREAM_WEBDAV_USERNAME and LITESTREAM_WEBDAV_PASSWORD",
            )
        if response.status_code >= 400:
            raise StorageError(
                StorageProblem.STORAGE_ERROR, f"WebDAV server answered HTTP {response.status_code} {doing} {self.base}{path}"
            )


def store_scope(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or ''}:{parts.port or (443 if parts.scheme == 'webdavs' else 80)}"


BACKEND = Backend(
    schemes=("webdav", "webdavs"),
    storage=WebDAVStorage,
    scope=store_scope,
    place=server_place,
    env=_LITESTREAM_ENV,
    secret_env=("LITESTREAM_WEBDAV_PASSWORD",),
    credentials=(
        "LITESTREAM_WEBDAV_USERNAME / LITESTREAM_WEBDAV_PASSWORD (HTTP basic authentication; webdavs:// for HTTPS)",
        "drillbook hands them to litestream as ${VAR} in the config it writes: never put a password in the URL",
    ),
    check_url=check_url,
    litestream_replica=litestream_replica,
    delete_prefix=lambda url, timeout: WebDAVStorage(url, timeout=timeout).delete_tree(),
)
