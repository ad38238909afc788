"""Step 1: what does the replica hold, and how old is its newest change?

For S3 the bucket is probed with boto3 first (short timeouts, retried listing),
so that an unreachable endpoint, refused credentials or a missing bucket are
told apart by error code rather than by litestream's text. The position itself
comes from `litestream ltx -json -level all`: the replica as litestream reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, Field

from drillbook.tasks.config import DatabaseEntry
from drillbook.tasks.errors import ToolMissing
from drillbook.tasks.litestream import CommandRecord, run_litestream
from drillbook.tasks.steps import Status, StepResult


class ReplicaProblem(StrEnum):
    EMPTY = "empty"  # reachable, but holds no LTX files: no backup
    MISSING = "missing"  # bucket or directory does not exist: no backup
    ACCESS_DENIED = "access_denied"
    UNREACHABLE = "unreachable"
    STORAGE_ERROR = "storage_error"
    TIMEOUT = "timeout"
    TOOL_MISSING = "tool_missing"
    UNREADABLE = "unreadable"  # litestream answered, but not with the JSON we know


class LtxFile(BaseModel):
    level: int
    min_txid: str
    max_txid: str
    size: int
    timestamp: datetime


class ReplicaState(StepResult):
    """The replica at drill start."""

    url: str = ""
    endpoint: str | None = None
    problem: ReplicaProblem | None = None
    files: int = 0
    total_bytes: int = 0
    newest_txid: str | None = None
    newest_time: datetime | None = None
    levels: dict[str, int] = Field(default_factory=dict, description="LTX files per compaction level.")
    command: CommandRecord | None = None

    def lag_seconds(self, at: datetime) -> float | None:
        """Age of the newest change the replica holds, at `at` (the measured RPO)."""
        if self.newest_time is None:
            return None
        return max(0.0, round((at - self.newest_time).total_seconds(), 3))


class S3Location(BaseModel):
    bucket: str
    prefix: str
    endpoint: str | None = None
    region: str | None = None
    path_style: bool = False
    skip_verify: bool = False


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
)
_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def s3_client(location: S3Location, *, timeout: float):
    """One boto3 client per endpoint configuration and credentials, reused (clients are thread-safe).

    A new Session and client per drill cost about 0.17 s of CPU each; a fleet
    drilling one bucket needs one. The key holds a digest of the credential
    variables, never their values, so a changed credential gets a new client.
    """
    fingerprint = hashlib.sha256("\0".join(os.environ.get(name, "") for name in _CLIENT_ENV).encode()).hexdigest()
    key = (location.endpoint, location.region, location.path_style, location.skip_verify, timeout, fingerprint)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _new_s3_client(location, timeout=timeout)
    return client


def _new_s3_client(location: S3Location, *, timeout: float):
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=min(5.0, timeout),
        read_timeout=timeout,
        # Listing is idempotent: retry it, with botocore's standard backoff.
        retries={"mode": "standard", "max_attempts": 3},
        s3={"addressing_style": "path" if location.path_style else "auto"},
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=location.endpoint,
        region_name=location.region or "us-east-1",
        config=config,
        verify=not location.skip_verify,
    )


_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AllAccessDisabled", "403"}
_MISSING_CODES = {"NoSuchBucket", "404"}


def probe_s3(location: S3Location, *, timeout: float) -> tuple[ReplicaProblem | None, str]:
    """Can we list the replica's prefix? (problem or None, what was seen)."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )

    where = f"s3://{location.bucket}/{location.prefix}" + (f" at {location.endpoint}" if location.endpoint else "")
    try:
        client = s3_client(location, timeout=timeout)
        listing = client.list_objects_v2(Bucket=location.bucket, Prefix=location.prefix + "/", MaxKeys=1)
    except (NoCredentialsError, PartialCredentialsError):
        return ReplicaProblem.ACCESS_DENIED, (
            f"no usable AWS credentials for {where}: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE for drillbook"
        )
    except (EndpointConnectionError, ConnectTimeoutError) as exc:
        return ReplicaProblem.UNREACHABLE, f"object storage endpoint unreachable: {where} ({type(exc).__name__})"
    except ReadTimeoutError:
        return ReplicaProblem.TIMEOUT, f"object storage did not answer within {timeout:g}s: {where}"
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _MISSING_CODES:
            return ReplicaProblem.MISSING, f"bucket {location.bucket!r} does not exist at {location.endpoint or 'AWS'}"
        if code in _DENIED_CODES or status == 403:
            return ReplicaProblem.ACCESS_DENIED, f"access denied listing {where} ({code}): check the credentials and the bucket policy"
        return ReplicaProblem.STORAGE_ERROR, f"object storage error listing {where}: {code or status}"
    if listing.get("KeyCount", 0) == 0:
        return ReplicaProblem.EMPTY, f"no backup: nothing stored under {where}"
    return None, f"listed {where}"


def inspect_replica(entry: DatabaseEntry) -> ReplicaState:
    """The replica's newest position and its time, or the problem that hides them."""
    started = time.monotonic()
    url = entry.replica
    scheme = urlsplit(url).scheme
    endpoint: str | None = None

    def done(**fields) -> ReplicaState:
        return ReplicaState(url=entry.replica_redacted, endpoint=endpoint, seconds=round(time.monotonic() - started, 3), **fields)

    if scheme == "s3":
        location = parse_s3_url(url)
        endpoint = location.endpoint
        problem, seen = probe_s3(location, timeout=entry.inspect_timeout)
        if problem is not None:
            return done(status=Status.FAILED, problem=problem, summary=seen)
    elif scheme == "file":
        directory = Path(unquote(urlsplit(url).path))
        if not directory.is_dir():
            return done(status=Status.FAILED, problem=ReplicaProblem.MISSING, summary=f"no backup: replica directory {directory} does not exist")

    try:
        command = run_litestream(["ltx", "-json", "-level", "all", url], timeout=entry.inspect_timeout)
    except ToolMissing as exc:
        return done(status=Status.ERROR, problem=ReplicaProblem.TOOL_MISSING, summary=str(exc))
    if command.timed_out:
        return done(
            status=Status.FAILED,
            problem=ReplicaProblem.TIMEOUT,
            command=command,
            summary=f"listing the replica took longer than {entry.inspect_timeout:g}s ({entry.replica_redacted})",
        )
    if not command.ok:
        return done(
            status=Status.FAILED,
            problem=ReplicaProblem.STORAGE_ERROR,
            command=command,
            summary=f"`litestream ltx` failed (exit {command.exit_code}): {command.stderr_tail(300)}",
        )
    try:
        files = [LtxFile.model_validate(item) for item in json.loads(command.stdout or "[]")]
    except ValueError as exc:
        return done(status=Status.ERROR, problem=ReplicaProblem.UNREADABLE, command=command, summary=f"unexpected `litestream ltx -json` output: {exc}")
    if not files:
        return done(status=Status.FAILED, problem=ReplicaProblem.EMPTY, command=command, summary=f"no backup: the replica holds no LTX files ({entry.replica_redacted})")

    newest = max(files, key=lambda f: (int(f.max_txid, 16), f.timestamp))
    levels: dict[str, int] = {}
    for f in files:
        levels[str(f.level)] = levels.get(str(f.level), 0) + 1
    newest_time = max(f.timestamp for f in files)
    return done(
        status=Status.PASSED,
        command=command,
        files=len(files),
        total_bytes=sum(f.size for f in files),
        newest_txid=newest.max_txid,
        newest_time=newest_time.astimezone(UTC),
        levels=levels,
        summary=f"{len(files)} LTX files, newest TXID {newest.max_txid} at {newest_time:%Y-%m-%d %H:%M:%S}Z",
    )
