"""Google Cloud Storage replicas (gs://), through google-cloud-storage.

URL: gs://BUCKET/PATH, as litestream reads it. Credentials as litestream's Go
client finds them: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS
naming a key file, or the metadata server); STORAGE_EMULATOR_HOST points both
clients at an emulator, without credentials.

Layout, as litestream's gs client writes it: PATH/ltx/<level>/<minTXID>-<maxTXID>.ltx.
Listing times are the object's `updated` (millisecond resolution on GCS).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import unquote, urlsplit

from drillbook.tasks.storage.base import Backend, StorageError, StorageProblem, StoredObject, delete_listed, server_place
from drillbook.tasks.text import redact_url

#: What litestream's gs client (Go cloud.google.com/go/storage) reads from its environment.
_LITESTREAM_ENV = ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "STORAGE_EMULATOR_HOST")


def check_url(url: str) -> str | None:
    """What the URL lacks; None when complete."""
    if not urlsplit(url).netloc:
        return f"{redact_url(url)}: no bucket: write gs://BUCKET/PATH"
    key = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if key and not os.environ.get("STORAGE_EMULATOR_HOST") and not os.path.isfile(key):
        return f"GOOGLE_APPLICATION_CREDENTIALS={key} is not a file (the service account key both drillbook and litestream read)"
    return None


def litestream_replica(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    return {"type": "gs", "bucket": parts.netloc, "path": unquote(parts.path).strip("/")}


class GCSStorage:
    """A replica below gs://bucket/path."""

    def __init__(self, url: str, *, timeout: float, writable: bool = False):
        parts = urlsplit(url)
        self.writable = writable  # read-only credentials scope unless deleting (a promotion drill's own sub-prefix)
        self.bucket = parts.netloc
        self.prefix = unquote(parts.path).strip("/")
        self.timeout = timeout
        self.emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        self.endpoint = self.emulator
        self.where = f"gs://{self.bucket}/{self.prefix}" + (f" at {self.emulator}" if self.emulator else "")
        self._gcs = None

    def _client(self):
        if self._gcs is None:
            from google.cloud import storage  # about 0.5 s: only for gs replicas

            if self.emulator:
                from google.auth.credentials import AnonymousCredentials

                self._gcs = storage.Client(project="drillbook", credentials=AnonymousCredentials())
            else:
                import google.auth
                from google.auth.exceptions import DefaultCredentialsError

                try:
                    scope = "read_write" if self.writable else "read_only"
                    credentials, project = google.auth.default(scopes=[f"https://www.googleapis.com/auth/devstorage.{scope}"])
                except DefaultCredentialsError:
                    raise StorageError(
                        StorageProblem.ACCESS_DENIED,
                        f"no Google credentials for {self.where}: set GOOGLE_APPLICATION_CREDENTIALS to a service account key file "
                        "(litestream reads the same), or run where the metadata server gives one",
                    ) from None
                self._gcs = storage.Client(project=project, credentials=credentials)
        return self._gcs

    def key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _retry(self):
        from google.api_core.retry import Retry
        from google.cloud.storage.retry import DEFAULT_RETRY

        # Listing and ranged GETs are idempotent: the library's own backoff, bounded by the drill's timeout.
        return DEFAULT_RETRY.with_timeout(self.timeout) if isinstance(DEFAULT_RETRY, Retry) else DEFAULT_RETRY

    def probe(self) -> None:
        self._call(
            lambda client: list(
                client.list_blobs(self.bucket, prefix=self.key(""), max_results=1, timeout=self.timeout, retry=self._retry())
            ),
            "listing",
        )

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        root = len(self.key(""))
        pages = self._call(
            lambda client: client.list_blobs(self.bucket, prefix=self.key(prefix), timeout=self.timeout, retry=self._retry()).pages,
            "listing",
        )
        while True:
            page = self._call(lambda _client: next(pages, None), "listing")
            if page is None:
                return
            for blob in self._call(lambda _client, page=page: list(page), "listing"):
                yield StoredObject(key=blob.name[root:], size=blob.size, modified=blob.updated)

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        full = self.key(key)
        end = None if length is None else start + length - 1  # inclusive, as HTTP ranges
        return self._call(
            lambda client: (
                client.bucket(self.bucket).blob(full).download_as_bytes(start=start, end=end, timeout=self.timeout, retry=self._retry())
            ),
            "reading",
            full,
        )

    def delete(self, key: str) -> None:
        full = self.key(key)
        self._call(lambda client: client.bucket(self.bucket).blob(full).delete(timeout=self.timeout, retry=self._retry()), "deleting", full)

    def _call(self, call, doing: str, blob: str | None = None):
        import requests
        from google.api_core import exceptions as api
        from google.auth import exceptions as auth

        where = f"gs://{self.bucket}/{blob}" + (f" at {self.emulator}" if self.emulator else "") if blob else self.where
        try:
            return call(self._client())
        except api.NotFound:
            if blob is not None:
                raise StorageError(StorageProblem.STORAGE_ERROR, f"listed but missing: {where}") from None
            raise StorageError(
                StorageProblem.MISSING, f"bucket {self.bucket!r} does not exist" + (f" at {self.emulator}" if self.emulator else "")
            ) from None
        except (api.Forbidden, api.Unauthorized, auth.RefreshError) as exc:
            raise StorageError(
                StorageProblem.ACCESS_DENIED,
                f"Google refused the credentials {doing} {where} ({type(exc).__name__}): check GOOGLE_APPLICATION_CREDENTIALS "
                "and the account's storage.objects.list/get permissions",
            ) from None
        except api.RetryError as exc:  # the retries ran out of time: say what the last attempt met
            if isinstance(exc.cause, requests.ConnectionError) and not isinstance(exc.cause, requests.Timeout):
                raise StorageError(
                    StorageProblem.UNREACHABLE,
                    f"Cloud Storage endpoint unreachable {doing} {where} ({type(exc.cause).__name__}, retried for {self.timeout:g}s)",
                ) from None
            raise StorageError(StorageProblem.TIMEOUT, f"Cloud Storage did not answer within {self.timeout:g}s {doing} {where}") from None
        except (requests.Timeout, api.DeadlineExceeded):
            raise StorageError(StorageProblem.TIMEOUT, f"Cloud Storage did not answer within {self.timeout:g}s {doing} {where}") from None
        except (requests.ConnectionError, auth.TransportError) as exc:
            raise StorageError(
                StorageProblem.UNREACHABLE, f"Cloud Storage endpoint unreachable {doing} {where} ({type(exc).__name__})"
            ) from None
        except api.GoogleAPICallError as exc:
            raise StorageError(StorageProblem.STORAGE_ERROR, f"Cloud Storage answered HTTP {exc.code} {doing} {where}") from None


def store_scope(url: str) -> str:
    """'gcs/bucket', or the emulator's host and port with the bucket."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    return f"{urlsplit(emulator).netloc or emulator if emulator else 'gcs'}/{urlsplit(url).hostname or ''}"


BACKEND = Backend(
    schemes=("gs",),
    storage=GCSStorage,
    scope=store_scope,
    place=server_place,
    env=_LITESTREAM_ENV,
    credentials=("GOOGLE_APPLICATION_CREDENTIALS (a service account file)",),
    check_url=check_url,
    litestream_replica=litestream_replica,
    delete_prefix=lambda url, timeout: delete_listed(GCSStorage(url, timeout=timeout, writable=True)),
)
