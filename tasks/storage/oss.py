"""Alibaba Cloud OSS replicas (oss://), through Alibaba's own SDK (alibabacloud-oss-v2), the one litestream's Go client is the twin of.

URL: oss://BUCKET/PATH, or oss://BUCKET.oss-REGION.aliyuncs.com/PATH as litestream reads it
(the region from the host, cn-hangzhou by default). drillbook also reads `?endpoint=` (an
OSS-compatible endpoint, a private or internal one) and `?region=`, and hands both to
litestream in its config file, since litestream takes them only from there.

Credentials: OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET (and OSS_SESSION_TOKEN for STS
keys), read by both SDKs' environment provider, so drillbook and litestream see the same.

Layout, as litestream writes it: <PATH>/<level, 4 hex digits>/<min TXID>-<max TXID>.ltx. Listing
times are the store's (litestream's own time is in an object header drillbook does not need:
the LTX header has it too).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel

from drillbook.tasks.storage.base import Backend, StorageError, StorageProblem, StoredObject
from drillbook.tasks.text import redact_url

DEFAULT_REGION = "cn-hangzhou"  # litestream's, when neither the host nor the config names one
_CREDENTIAL_ENV = ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN")
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "SecurityTokenExpired", "InvalidSecurityToken"}


class OSSLocation(BaseModel):
    bucket: str
    prefix: str
    region: str
    endpoint: str | None = None

    @property
    def where(self) -> str:
        return f"oss://{self.bucket}/{self.prefix} at {self.endpoint or f'oss-{self.region}.aliyuncs.com'}"


def parse_oss_url(url: str) -> OSSLocation:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    host = (parts.hostname or "").lower()
    bucket, _, rest = host.partition(".")
    region = query.get("region") or ""
    if not region and rest.startswith("oss-") and rest.endswith(".aliyuncs.com"):
        region = rest.removeprefix("oss-").removesuffix(".aliyuncs.com").removesuffix("-internal")
    return OSSLocation(
        bucket=bucket, prefix=unquote(parts.path).strip("/"), region=region or DEFAULT_REGION, endpoint=query.get("endpoint")
    )


def _path_style(endpoint: str | None) -> bool:
    """An endpoint given by address (a private or test endpoint) has no bucket subdomains: path-style requests there."""
    host = urlsplit(endpoint or "").hostname or ""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return host == "localhost"


_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def oss_client(location: OSSLocation, *, timeout: float):
    """One client per endpoint, region, timeout and credentials (the SDK's clients are thread-safe).

    The key holds a digest of the credential variables, never their values: a changed credential gets a new client.
    """
    fingerprint = hashlib.sha256("\0".join(os.environ.get(name, "") for name in _CREDENTIAL_ENV).encode()).hexdigest()
    key = (location.endpoint, location.region, timeout, fingerprint)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import alibabacloud_oss_v2 as oss  # kept off the paths that never touch OSS

            config = oss.config.load_default()
            config.credentials_provider = oss.credentials.EnvironmentVariableCredentialsProvider()
            config.region = location.region
            if location.endpoint:
                config.endpoint = location.endpoint
                config.use_path_style = _path_style(location.endpoint)
            config.connect_timeout = min(5.0, timeout)
            config.readwrite_timeout = timeout
            client = _clients[key] = oss.Client(config)
    return client


class OSSStorage:
    """A replica below oss://bucket/prefix."""

    def __init__(self, url: str, *, timeout: float):
        self.location = parse_oss_url(url)
        self.timeout = timeout
        self.where = self.location.where
        self.endpoint = self.location.endpoint

    def key(self, relative: str) -> str:
        return f"{self.location.prefix}/{relative}" if self.location.prefix else relative

    def _call(self, call, doing: str, where: str):
        """One SDK call, its errors mapped onto StorageProblem."""
        from alibabacloud_oss_v2 import exceptions

        try:
            return call(oss_client(self.location, timeout=self.timeout))
        except exceptions.BaseError as exc:
            cause = exc.unwrap() if isinstance(exc, exceptions.OperationError) else exc  # the SDK wraps what the call met
            if isinstance(cause, exceptions.CredentialsBaseError):
                raise StorageError(
                    StorageProblem.ACCESS_DENIED,
                    f"no usable OSS credentials {doing} {where}: set OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET",
                ) from None
            if isinstance(cause, exceptions.ServiceError):
                code, status = cause.code or "", cause.status_code
                if code == "NoSuchBucket":
                    raise StorageError(StorageProblem.MISSING, f"bucket {self.location.bucket!r} does not exist: {where}") from None
                if code in _DENIED or status == 403:
                    raise StorageError(
                        StorageProblem.ACCESS_DENIED,
                        f"access denied {doing} {where} ({code or status}): check OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET and the bucket policy",
                    ) from None
                if code == "NoSuchKey":
                    raise StorageError(StorageProblem.STORAGE_ERROR, f"{where} is listed but missing (NoSuchKey)") from None
                raise StorageError(StorageProblem.STORAGE_ERROR, f"OSS answered HTTP {status} {code} {doing} {where}") from None
            text = str(cause).lower()
            if "timed out" in text or "timeout" in text:
                raise StorageError(StorageProblem.TIMEOUT, f"OSS did not answer within {self.timeout:g}s {doing} {where}") from None
            raise StorageError(StorageProblem.UNREACHABLE, f"OSS endpoint unreachable {doing} {where} ({type(cause).__name__})") from None

    def probe(self) -> None:
        import alibabacloud_oss_v2 as oss

        request = oss.ListObjectsV2Request(bucket=self.location.bucket, prefix=self.key(""), max_keys=1)
        self._call(lambda client: client.list_objects_v2(request), "listing", self.where)

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        import alibabacloud_oss_v2 as oss

        root = self.key("")
        request = oss.ListObjectsV2Request(bucket=self.location.bucket, prefix=self.key(prefix))
        pages = self._call(lambda client: iter(client.list_objects_v2_paginator().iter_page(request)), "listing", self.where)
        while True:
            page = self._call(lambda _client: next(pages, None), "listing", self.where)
            if page is None:
                return
            for item in page.contents or ():
                yield StoredObject(key=item.key[len(root) :], size=item.size or 0, modified=item.last_modified)

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        import alibabacloud_oss_v2 as oss

        full = self.key(key)
        span = f"bytes={start}-" + (str(start + length - 1) if length else "")
        request = oss.GetObjectRequest(bucket=self.location.bucket, key=full, range_header=span)
        where = f"oss://{self.location.bucket}/{full}"
        return self._call(lambda client: client.get_object(request).body.read(), "reading", where)


def check_url(url: str) -> str | None:
    location = parse_oss_url(url)
    if not location.bucket or not location.prefix:
        return f"an oss replica needs a bucket and a path, like oss://bucket/app.db (got {redact_url(url)!r})"
    if not (os.environ.get("OSS_ACCESS_KEY_ID") and os.environ.get("OSS_ACCESS_KEY_SECRET")):
        return "no OSS credentials: set OSS_ACCESS_KEY_ID and OSS_ACCESS_KEY_SECRET (litestream reads the same two)"
    return None


def litestream_replica(url: str) -> dict[str, str]:
    """litestream's entry: the URL without drillbook's query, the endpoint and region as config fields (credentials from the environment)."""
    parts = urlsplit(url)
    location = parse_oss_url(url)
    replica = {"type": "oss", "url": f"oss://{parts.netloc}/{location.prefix}", "region": location.region}
    if location.endpoint:
        replica["endpoint"] = location.endpoint
    return replica


def store_scope(url: str) -> str:
    location = parse_oss_url(url)
    return f"{urlsplit(location.endpoint).netloc if location.endpoint else f'oss-{location.region}'}/{location.bucket}"


def place(url: str) -> tuple[str, tuple[str, ...]]:
    location = parse_oss_url(url)
    return f"oss {(location.endpoint or location.region).rstrip('/').lower()} {location.bucket}", tuple(
        s for s in location.prefix.split("/") if s
    )


def delete_prefix(url: str, timeout: float = 60.0) -> int:
    """Delete every object below an oss:// URL's prefix (as a directory: 'a/b/', never 'a/bc'): how many."""
    import alibabacloud_oss_v2 as oss

    location = parse_oss_url(url)
    client = oss_client(location, timeout=timeout)
    prefix = location.prefix.rstrip("/") + "/"
    count = 0
    for page in client.list_objects_v2_paginator().iter_page(oss.ListObjectsV2Request(bucket=location.bucket, prefix=prefix)):
        keys = [oss.DeleteObject(key=item.key) for item in page.contents or ()]
        if keys:
            client.delete_multiple_objects(oss.DeleteMultipleObjectsRequest(bucket=location.bucket, objects=keys, quiet=True))
            count += len(keys)
    return count


BACKEND = Backend(
    schemes=("oss",),
    storage=OSSStorage,
    scope=store_scope,
    place=place,
    env=_CREDENTIAL_ENV,
    secret_env=("OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN"),
    credentials=(
        "OSS_ACCESS_KEY_ID / OSS_ACCESS_KEY_SECRET (and OSS_SESSION_TOKEN for STS keys), read by drillbook and litestream alike",
        "a private or OSS-compatible endpoint goes in the URL: oss://BUCKET/PATH?endpoint=https://...&region=...",
    ),
    check_url=check_url,
    litestream_replica=litestream_replica,
    delete_prefix=delete_prefix,
)
