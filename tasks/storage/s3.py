"""S3 and S3-compatible stores, through boto3: one cached client per endpoint and credentials."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel

from drillbook.tasks.storage.base import Backend, StorageError, StorageProblem, StoredObject
from drillbook.tasks.text import redact_url


class S3Location(BaseModel):
    bucket: str
    prefix: str
    endpoint: str | None = None
    region: str | None = None
    path_style: bool = False
    skip_verify: bool = False

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint}" if self.endpoint else " at AWS (no endpoint= in the URL)")


def parse_s3_url(url: str) -> S3Location:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return S3Location(
        bucket=parts.netloc,
        prefix=unquote(parts.path).strip("/"),
        endpoint=query.get("endpoint"),
        region=query.get("region"),
        path_style=query.get("forcePathStyle", "").lower() == "true",
        skip_verify=query.get("skipVerify", "").lower() == "true",
    )


# Environment that decides which credentials and settings a boto3 client gets: part of the cache key.
_CLIENT_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_CA_BUNDLE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)
_clients: dict[tuple, Any] = {}
_sessions: dict[str, Any] = {}
_clients_lock = threading.Lock()


def s3_client(location: S3Location, *, timeout: float):
    """One boto3 client per endpoint configuration and credentials, reused (clients are thread-safe).

    A new Session and client per drill cost about 0.17 s of CPU each; a fleet
    drilling one bucket needs one. The key holds a digest of the credential
    variables, never their values, so a changed credential gets a new client.
    Clients of the same credentials share one Session (its loaded service model):
    the header reads' client (a shorter timeout) then costs 0.01 s, not 0.13 s.
    """
    fingerprint = hashlib.sha256("\0".join(os.environ.get(name, "") for name in _CLIENT_ENV).encode()).hexdigest()
    key = (location.endpoint, location.region, location.path_style, location.skip_verify, timeout, fingerprint)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            session = _sessions.get(fingerprint)
            if session is None:
                import boto3  # about 0.3 s: kept off the paths that never touch S3

                session = _sessions[fingerprint] = boto3.session.Session()
            client = _clients[key] = _new_s3_client(session, location, timeout=timeout)
    return client


def _new_s3_client(session, location: S3Location, *, timeout: float):
    from botocore.config import Config

    config = Config(
        connect_timeout=min(5.0, timeout),
        read_timeout=timeout,
        # Listing and ranged GETs are idempotent: retry them, with botocore's standard backoff.
        retries={"mode": "standard", "max_attempts": 3},
        s3={"addressing_style": "path" if location.path_style else "auto"},
    )
    client = session.client(
        "s3",
        endpoint_url=location.endpoint,
        region_name=location.region or "us-east-1",
        config=config,
        verify=False if location.skip_verify else None,  # None, not True: True would ignore the user's AWS_CA_BUNDLE
    )
    client.meta.events.register("before-parameter-build.s3", _note_bucket)
    client.meta.events.register("needs-retry.s3", lambda **seen: _count_throttling(location.endpoint, seen))
    return client


# Throttling: botocore retries a 503 SlowDown with backoff, so a drill gets through slower and never hears of it. Every
# answer of one is counted here, per endpoint and bucket, for the drill's report to name (tasks/replica.py).
THROTTLE_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException"})
_throttled: dict[tuple[str | None, str], int] = {}
_throttled_lock = threading.Lock()


def _note_bucket(params: dict, context: dict, **_: Any) -> None:
    context["drillbook_bucket"] = params.get("Bucket")


def _count_throttling(endpoint: str | None, seen: dict[str, Any]) -> None:
    try:
        http, parsed = seen.get("response") or (None, None)  # no response: a connection error, not the store asking to slow down
        if str((parsed or {}).get("Error", {}).get("Code", "")) in THROTTLE_CODES or getattr(http, "status_code", 0) == 503:
            key = (endpoint, str(((seen.get("request_dict") or {}).get("context") or {}).get("drillbook_bucket") or ""))
            with _throttled_lock:
                _throttled[key] = _throttled.get(key, 0) + 1
    except Exception:  # noqa: BLE001 - bookkeeping beside the request: never its failure
        pass
    return None  # only counted: botocore's own handler decides the retry


def throttled_answers(endpoint: str | None, bucket: str) -> int:
    """How many answers of this endpoint's bucket said slow down (503 SlowDown and the like) in this process so far."""
    with _throttled_lock:
        return _throttled.get((endpoint, bucket), 0)


def _throttled_text(code: str, status: int) -> str:
    throttled = code in THROTTLE_CODES or status == 503
    return "; throttled (503 SlowDown): the bucket is over its request rate, still so after botocore's retries" if throttled else ""


_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AllAccessDisabled", "403"}
_MISSING_CODES = {"NoSuchBucket", "404"}


def untrusted(where: str) -> str:
    return (
        f"the TLS certificate of {where} is not trusted: set AWS_CA_BUNDLE to the CA bundle that signed it "
        "(drillbook and litestream both use it), or fix the endpoint's certificate"
    )


class S3Storage:
    """A replica below s3://bucket/prefix (any S3-compatible endpoint)."""

    def __init__(self, url: str, *, timeout: float):
        self.location = parse_s3_url(url)
        self.timeout = timeout
        self.where = self.location.where

    @property
    def endpoint(self) -> str | None:
        return self.location.endpoint

    def _client(self):
        return s3_client(self.location, timeout=self.timeout)

    def connect(self) -> None:
        """Build the client now (boto3's import and service model, 0.2-0.3 s once per process), before a drill needs it."""
        self._client()

    def _tried(self) -> str:
        """The endpoint boto3 resolved when the URL names none (AWS's regional endpoint, or AWS_ENDPOINT_URL)."""
        if self.location.endpoint:
            return ""
        try:
            return f", tried {self._client().meta.endpoint_url}"
        except Exception:  # noqa: BLE001 - only a detail of a message
            return ""

    def throttled(self) -> int:
        """Answers of this bucket that said slow down, in this process so far (`throttled_answers`)."""
        return throttled_answers(self.location.endpoint, self.location.bucket)

    def key(self, relative: str) -> str:
        return f"{self.location.prefix}/{relative}" if self.location.prefix else relative

    def probe(self) -> None:
        self._listing_call(lambda client: client.list_objects_v2(Bucket=self.location.bucket, Prefix=self.key(""), MaxKeys=1))

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        root = self.key("")
        pages = self._listing_call(
            lambda client: iter(client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket, Prefix=self.key(prefix)))
        )
        while True:
            page = self._listing_call(lambda _client: next(pages, None))
            if page is None:
                return
            for item in page.get("Contents", ()):
                yield StoredObject(key=item["Key"][len(root) :], size=item["Size"], modified=item["LastModified"])

    def folders(self, prefix: str = "") -> Iterator[str]:
        """The names of the "folders" right below root/prefix (CommonPrefixes of a Delimiter='/' listing): 1,000 a request."""
        listed = self.key(prefix)
        pages = self._listing_call(
            lambda client: iter(client.get_paginator("list_objects_v2").paginate(Bucket=self.location.bucket, Prefix=listed, Delimiter="/"))
        )
        while True:
            page = self._listing_call(lambda _client: next(pages, None))
            if page is None:
                return
            for item in page.get("CommonPrefixes", ()):
                yield item["Prefix"][len(listed) :].rstrip("/")

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError, SSLError

        full = self.key(key)
        where = f"s3://{self.location.bucket}/{full}" + (f" at {self.location.endpoint}" if self.location.endpoint else "")
        span = f"bytes={start}-" + (str(start + length - 1) if length else "")
        try:
            response = self._client().get_object(Bucket=self.location.bucket, Key=full, Range=span)
            return response["Body"].read()
        except SSLError:
            raise StorageError(StorageProblem.UNREACHABLE, untrusted(where)) from None
        except ReadTimeoutError:
            raise StorageError(
                StorageProblem.TIMEOUT,
                f"object GETs do not answer: reading {where} took longer than {self.timeout:g}s (the listing worked)",
            ) from None
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            raise StorageError(
                StorageProblem.UNREACHABLE, f"object storage endpoint unreachable reading {where} ({type(exc).__name__})"
            ) from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _DENIED_CODES or status == 403:
                raise StorageError(
                    StorageProblem.ACCESS_DENIED,
                    f"access denied reading {where} ({code or status}) although listing works: the credentials or bucket policy lack s3:GetObject",
                ) from None
            if code in ("NoSuchKey", "404") or status == 404:
                raise StorageError(StorageProblem.STORAGE_ERROR, f"{where} is listed but missing (NoSuchKey)") from None
            raise StorageError(
                StorageProblem.STORAGE_ERROR,
                f"object GETs fail: reading {where} answered HTTP {status} {code}".rstrip() + _throttled_text(code, status),
            ) from None
        except (BotoCoreError, OSError) as exc:  # connection reset, closed mid-response, protocol errors
            raise StorageError(StorageProblem.STORAGE_ERROR, f"object GETs fail: reading {where}: {type(exc).__name__}: {exc}") from None

    def _listing_call(self, call):
        """Run one listing call, its errors mapped onto StorageProblem."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
            SSLError,
        )

        where = self.where
        try:
            return call(self._client())
        except (NoCredentialsError, PartialCredentialsError):
            raise StorageError(
                StorageProblem.ACCESS_DENIED,
                f"no usable AWS credentials for {where}: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE for drillbook",
            ) from None
        except SSLError:
            raise StorageError(StorageProblem.UNREACHABLE, untrusted(where)) from None
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            raise StorageError(
                StorageProblem.UNREACHABLE, f"object storage endpoint unreachable: {where}{self._tried()} ({type(exc).__name__})"
            ) from None
        except ReadTimeoutError:
            raise StorageError(StorageProblem.TIMEOUT, f"object storage did not answer within {self.timeout:g}s: {where}") from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _MISSING_CODES:
                raise StorageError(
                    StorageProblem.MISSING, f"bucket {self.location.bucket!r} does not exist at {self.location.endpoint or 'AWS'}"
                ) from None
            if code in _DENIED_CODES or status == 403:
                raise StorageError(
                    StorageProblem.ACCESS_DENIED, f"access denied listing {where} ({code}): check the credentials and the bucket policy"
                ) from None
            raise StorageError(
                StorageProblem.STORAGE_ERROR, f"object storage error listing {where}: {code or status}" + _throttled_text(code, status)
            ) from None
        except (BotoCoreError, OSError) as exc:
            raise StorageError(StorageProblem.STORAGE_ERROR, f"object storage error listing {where}: {type(exc).__name__}: {exc}") from None


def check_url(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.netloc or not parts.path.strip("/"):
        return f"an s3 replica needs a bucket and a path, like s3://bucket/app.db (got {redact_url(url)!r})"
    return None


def store_scope(url: str) -> str:
    location = parse_s3_url(url)
    return f"{urlsplit(location.endpoint).netloc if location.endpoint else 'aws'}/{location.bucket}"


def place(url: str) -> tuple[str, tuple[str, ...]]:
    location = parse_s3_url(url)
    endpoint = (location.endpoint or "aws").rstrip("/").lower()
    return f"s3 {endpoint} {location.bucket}", tuple(s for s in location.prefix.split("/") if s)


def delete_prefix(url: str, timeout: float = 60.0) -> int:
    """Delete every object below an s3:// URL's prefix (as a directory: 'a/b/', never 'a/bc'): how many."""
    location = parse_s3_url(url)
    client = s3_client(location, timeout=timeout)
    prefix = location.prefix.rstrip("/") + "/"
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=location.bucket, Delete={"Objects": keys, "Quiet": True})
            count += len(keys)
    return count


BACKEND = Backend(
    schemes=("s3",),
    storage=S3Storage,
    scope=store_scope,
    place=place,
    env=(
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_EC2_METADATA_DISABLED",
        "LITESTREAM_ACCESS_KEY_ID",
        "LITESTREAM_SECRET_ACCESS_KEY",
    ),
    secret_env=("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN", "LITESTREAM_SECRET_ACCESS_KEY"),
    credentials=(
        "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys)",
        "or AWS_PROFILE with AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE",
        "or a role: AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, or the container / instance metadata credentials",
        "LITESTREAM_ACCESS_KEY_ID / LITESTREAM_SECRET_ACCESS_KEY are read by litestream too",
    ),
    check_url=check_url,
    delete_prefix=delete_prefix,
)
