"""Step 1: what does the replica hold, and how old is its newest change?

For S3 the bucket is probed with boto3 first (short timeouts, retried listing),
so that an unreachable endpoint, refused credentials or a missing bucket are
told apart by error code rather than by litestream's text. The position itself
comes from `litestream ltx -json -level all`: the replica as litestream reads it.

The newest change's time is read from the newest LTX file's own header (a
100-byte ranged GET, or a read for file:// replicas): the time litestream wrote
it. `ltx -json` reports the object store's timestamp (LastModified), which a
copied replica (bucket migration, cross-region replication, a restored bucket)
rewrites to "now". The same read proves that object GETs work before the
restore starts: litestream 0.5.17 retries failing GETs silently, forever.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
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
    DAMAGED = "damaged"  # the newest LTX file is listed but is not a readable LTX file


LTX_MAGIC = b"LTX1"
LTX_HEADER_BYTES = 100
HEADER_READ_TIMEOUT = 15.0  # seconds for the 100-byte GET: an object store that cannot answer that is failing
CLOCKS_DIFFER = 2.0  # seconds between the LTX header's time and the object's timestamp worth reporting


class LtxFile(BaseModel):
    level: int
    min_txid: str
    max_txid: str
    size: int
    timestamp: datetime

    @property
    def name(self) -> str:
        """The file's path in a file:// replica: ltx/<level>/<min>-<max>.ltx."""
        return f"ltx/{self.level}/{self.min_txid}-{self.max_txid}.ltx"

    @property
    def s3_name(self) -> str:
        """The file's key below an S3 replica's path: <level as 4 hex digits>/<min>-<max>.ltx (litestream 0.5's S3 layout)."""
        return f"{self.level:04x}/{self.min_txid}-{self.max_txid}.ltx"


class LtxHeader(BaseModel):
    """What drillbook reads from an LTX file's 100-byte header (big-endian)."""

    page_size: int
    commit: int
    min_txid: str
    max_txid: str
    written_at: datetime = Field(description="The header's timestamp: when litestream wrote the file.")


def parse_ltx_header(data: bytes) -> LtxHeader:
    """Decode an LTX header; ValueError when the bytes are not one (short, wrong magic)."""
    if len(data) < 40:
        raise ValueError(f"only {len(data)} bytes, an LTX header has {LTX_HEADER_BYTES}")
    if data[:4] != LTX_MAGIC:
        raise ValueError(f"starts with {data[:4]!r}, not {LTX_MAGIC!r}")
    _flags, page_size, commit, min_txid, max_txid, millis = struct.unpack(">IIIQQq", data[4:40])
    return LtxHeader(
        page_size=page_size,
        commit=commit,
        min_txid=f"{min_txid:016x}",
        max_txid=f"{max_txid:016x}",
        written_at=datetime.fromtimestamp(millis / 1000, UTC),
    )


class ReplicaState(StepResult):
    """The replica at drill start."""

    url: str = ""
    endpoint: str | None = None
    problem: ReplicaProblem | None = None
    files: int = 0
    total_bytes: int = 0
    newest_txid: str | None = None
    newest_time: datetime | None = Field(default=None, description="When litestream wrote the newest change (its LTX header).")
    newest_storage_time: datetime | None = Field(default=None, description="The object store's timestamp of that file (LastModified).")
    newest_file: str | None = None
    levels: dict[str, int] = Field(default_factory=dict, description="LTX files per compaction level.")
    txid_times: dict[str, datetime] = Field(
        default_factory=dict,
        exclude=True,  # one per LTX file: judged in memory, not kept in the evidence
        description="Newest storage timestamp per listed max TXID, for judging a restore that stopped short.",
    )
    command: CommandRecord | None = None

    def lag_seconds(self, at: datetime) -> float | None:
        """Age of the newest change the replica holds, at `at` (the measured RPO)."""
        if self.newest_time is None:
            return None
        return max(0.0, round((at - self.newest_time).total_seconds(), 3))

    def time_of(self, txid: str) -> datetime | None:
        """When the replica's position `txid` was written: the header time for the newest, else the object's timestamp."""
        if txid == self.newest_txid:
            return self.newest_time
        return self.txid_times.get(txid)

    @property
    def clocks_note(self) -> str | None:
        """Said when the object store's time of the newest file is not the time litestream wrote it (a copied replica)."""
        if self.newest_time is None or self.newest_storage_time is None:
            return None
        apart = (self.newest_storage_time - self.newest_time).total_seconds()
        if abs(apart) <= CLOCKS_DIFFER:
            return None
        return (
            f"the newest LTX file was written at {self.newest_time:%Y-%m-%d %H:%M:%S}Z (its header) but stored at "
            f"{self.newest_storage_time:%Y-%m-%d %H:%M:%S}Z ({apart:+.0f}s): a copied or re-uploaded replica; RPO is judged on the header's time"
        )


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
        verify=False if location.skip_verify else None,  # None, not True: True would ignore the user's AWS_CA_BUNDLE
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
        SSLError,
    )

    where = f"s3://{location.bucket}/{location.prefix}" + (f" at {location.endpoint}" if location.endpoint else "")
    try:
        client = s3_client(location, timeout=timeout)
        listing = client.list_objects_v2(Bucket=location.bucket, Prefix=location.prefix + "/", MaxKeys=1)
    except (NoCredentialsError, PartialCredentialsError):
        return ReplicaProblem.ACCESS_DENIED, (
            f"no usable AWS credentials for {where}: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE for drillbook"
        )
    except SSLError:
        return ReplicaProblem.UNREACHABLE, _untrusted(where)
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


def _untrusted(where: str) -> str:
    return (
        f"the TLS certificate of {where} is not trusted: set AWS_CA_BUNDLE to the CA bundle that signed it "
        "(drillbook and litestream both use it), or fix the endpoint's certificate"
    )


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
            return done(
                status=Status.FAILED, problem=ReplicaProblem.MISSING, summary=f"no backup: replica directory {directory} does not exist"
            )

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
        return done(
            status=Status.ERROR,
            problem=ReplicaProblem.UNREADABLE,
            command=command,
            summary=f"unexpected `litestream ltx -json` output: {exc}",
        )
    if not files:
        return done(
            status=Status.FAILED,
            problem=ReplicaProblem.EMPTY,
            command=command,
            summary=f"no backup: the replica holds no LTX files ({entry.replica_redacted})",
        )

    newest = max(files, key=lambda f: (int(f.max_txid, 16), -f.level))
    levels: dict[str, int] = {}
    txid_times: dict[str, datetime] = {}
    for f in files:
        levels[str(f.level)] = levels.get(str(f.level), 0) + 1
        stored = f.timestamp.astimezone(UTC)
        txid_times[f.max_txid] = max(stored, txid_times.get(f.max_txid, stored))
    listed = dict(
        command=command,
        files=len(files),
        total_bytes=sum(f.size for f in files),
        newest_txid=newest.max_txid,
        newest_file=newest.s3_name if scheme == "s3" else newest.name,
        newest_storage_time=newest.timestamp.astimezone(UTC),
        levels=levels,
        txid_times=txid_times,
    )
    header, problem, seen = read_newest_header(entry, newest)
    if problem is not None:
        return done(status=Status.FAILED, problem=problem, summary=seen, **listed)
    state = done(
        status=Status.PASSED,
        newest_time=header.written_at,
        summary=f"{len(files)} LTX files, newest TXID {newest.max_txid} written at {header.written_at:%Y-%m-%d %H:%M:%S}Z",
        **listed,
    )
    if state.clocks_note:
        state.summary += f" (stored at {state.newest_storage_time:%Y-%m-%d %H:%M:%S}Z)"
    return state


def read_newest_header(entry: DatabaseEntry, newest: LtxFile) -> tuple[LtxHeader | None, ReplicaProblem | None, str]:
    """Read the newest LTX file's header from the replica: (header, None, "") or (None, problem, what was seen)."""
    url = entry.replica
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = Path(unquote(parts.path)) / newest.name
        try:
            with path.open("rb") as handle:
                data = handle.read(LTX_HEADER_BYTES)
        except OSError as exc:
            return None, ReplicaProblem.STORAGE_ERROR, f"the newest LTX file {path} is listed but cannot be read: {exc.strerror}"
        where = str(path)
    else:
        location = parse_s3_url(url)
        data, problem, seen = _ranged_get(
            location, f"{location.prefix}/{newest.s3_name}", timeout=min(entry.inspect_timeout, HEADER_READ_TIMEOUT)
        )
        if problem is not None:
            return None, problem, seen
        where = f"s3://{location.bucket}/{location.prefix}/{newest.s3_name}"
    try:
        header = parse_ltx_header(data)
    except ValueError as exc:
        return None, ReplicaProblem.DAMAGED, f"the newest LTX file {where} is damaged: {exc}"
    if header.max_txid != newest.max_txid:
        return None, ReplicaProblem.DAMAGED, f"the newest LTX file {where} holds TXID {header.max_txid}, its name says {newest.max_txid}"
    return header, None, ""


def _ranged_get(location: S3Location, key: str, *, timeout: float) -> tuple[bytes, ReplicaProblem | None, str]:
    """The first bytes of one object: proves object GETs work (a listing alone does not)."""
    from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError, SSLError

    where = f"s3://{location.bucket}/{key}" + (f" at {location.endpoint}" if location.endpoint else "")
    try:
        client = s3_client(location, timeout=timeout)
        response = client.get_object(Bucket=location.bucket, Key=key, Range=f"bytes=0-{LTX_HEADER_BYTES - 1}")
        return response["Body"].read(), None, ""
    except SSLError:
        return b"", ReplicaProblem.UNREACHABLE, _untrusted(where)
    except ReadTimeoutError:
        return b"", ReplicaProblem.TIMEOUT, f"object GETs do not answer: reading {where} took longer than {timeout:g}s (the listing worked)"
    except (EndpointConnectionError, ConnectTimeoutError) as exc:
        return b"", ReplicaProblem.UNREACHABLE, f"object storage endpoint unreachable reading {where} ({type(exc).__name__})"
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _DENIED_CODES or status == 403:
            return (
                b"",
                ReplicaProblem.ACCESS_DENIED,
                (
                    f"access denied reading {where} ({code or status}) although listing works: the credentials or bucket policy lack s3:GetObject"
                ),
            )
        if code in ("NoSuchKey", "404") or status == 404:
            return b"", ReplicaProblem.STORAGE_ERROR, f"the newest LTX file is listed but missing: {where} (NoSuchKey)"
        return b"", ReplicaProblem.STORAGE_ERROR, f"object GETs fail: reading {where} answered HTTP {status} {code}".rstrip()
    except (BotoCoreError, OSError) as exc:  # connection reset, closed mid-response, protocol errors
        return b"", ReplicaProblem.STORAGE_ERROR, f"object GETs fail: reading {where}: {type(exc).__name__}: {exc}"
