"""Google Cloud Storage replicas (gs://), through google-cloud-storage.

URL: gs://BUCKET/PATH, as litestream reads it. Credentials as both vendor SDKs
(google-auth here, Go's in litestream) find Application Default Credentials, in
this order: GOOGLE_APPLICATION_CREDENTIALS naming a file (a service account key,
an authorized user, workload identity federation), gcloud's application-default
login (~/.config/gcloud/application_default_credentials.json), the metadata server
(GCE, GKE, Cloud Run). A missing or expired credential is one line naming the
source tried (`adc_source`). STORAGE_EMULATOR_HOST points both clients at an
emulator, without credentials. litestream does not read CLOUDSDK_CONFIG, so a
gcloud login kept there is refused at check-config with the variable to set.

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
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return None
    key = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if key and not os.path.isfile(key):
        return f"GOOGLE_APPLICATION_CREDENTIALS={key} is not a file (the service account key both drillbook and litestream read)"
    config = os.environ.get("CLOUDSDK_CONFIG")
    if not key and config and os.path.isfile(os.path.join(config, ADC_FILE)):
        return (
            f"CLOUDSDK_CONFIG={config} holds the gcloud login, which litestream does not read there: "
            f"set GOOGLE_APPLICATION_CREDENTIALS={os.path.join(config, ADC_FILE)}"
        )
    return None


ADC_FILE = "application_default_credentials.json"


def adc_source() -> str:
    """Where Application Default Credentials come from here, as google-auth looks (for messages; no secret)."""
    key = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if key:
        return f"GOOGLE_APPLICATION_CREDENTIALS={key}"
    login = os.path.join(os.environ.get("CLOUDSDK_CONFIG") or os.path.expanduser("~/.config/gcloud"), ADC_FILE)
    if os.path.isfile(login):
        return f"gcloud's application-default login {login}"
    return "the metadata server (no GOOGLE_APPLICATION_CREDENTIALS, no gcloud application-default login)"


def _first_line(exc: Exception) -> str:
    said = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return " ".join(said.split())[:200]


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
                except DefaultCredentialsError as exc:
                    raise StorageError(
                        StorageProblem.ACCESS_DENIED,
                        f"no Google credentials for {self.where}: tried {adc_source()} ({_first_line(exc)}); set "
                        "GOOGLE_APPLICATION_CREDENTIALS to a key file, run `gcloud auth application-default login`, or run where "
                        "the metadata server gives one (litestream reads the same)",
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
        except auth.RefreshError as exc:  # the token endpoint said no: an expired or revoked login, a deleted key
            raise StorageError(
                StorageProblem.ACCESS_DENIED,
                f"Google refused the credential from {adc_source()} {doing} {where} ({_first_line(exc)}): renew it "
                "(`gcloud auth application-default login`, a new key file)",
            ) from None
        except (api.Forbidden, api.Unauthorized) as exc:
            raise StorageError(
                StorageProblem.ACCESS_DENIED,
                f"Google refused the credentials {doing} {where} ({type(exc).__name__}): check {adc_source()} "
                "and the account's storage.objects.list/get permissions",
            ) from None
        except api.RetryError as exc:  # the retries ran out of time: say what the last attempt met
            if isinstance(exc.cause, auth.TransportError):  # the token endpoint or the metadata server, not Cloud Storage
                raise StorageError(
                    StorageProblem.ACCESS_DENIED,
                    f"cannot get a Google token from {adc_source()} {doing} {where}: its token endpoint did not answer within "
                    f"{self.timeout:g}s ({_first_line(exc.cause)})",
                ) from None
            if isinstance(exc.cause, requests.ConnectionError) and not isinstance(exc.cause, requests.Timeout):
                raise StorageError(
                    StorageProblem.UNREACHABLE,
                    f"Cloud Storage endpoint unreachable {doing} {where} ({type(exc.cause).__name__}, retried for {self.timeout:g}s)",
                ) from None
            raise StorageError(StorageProblem.TIMEOUT, f"Cloud Storage did not answer within {self.timeout:g}s {doing} {where}") from None
        except (requests.Timeout, api.DeadlineExceeded):
            raise StorageError(StorageProblem.TIMEOUT, f"Cloud Storage did not answer within {self.timeout:g}s {doing} {where}") from None
        except auth.TransportError as exc:  # the token endpoint or the metadata server did not answer
            raise StorageError(
                StorageProblem.ACCESS_DENIED,
                f"cannot get a Google token from {adc_source()} {doing} {where}: its token endpoint did not answer ({_first_line(exc)})",
            ) from None
        except requests.ConnectionError as exc:
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
    credentials=(
        "GOOGLE_APPLICATION_CREDENTIALS (a service account key, an authorized user or a workload identity federation file)",
        "or gcloud's `gcloud auth application-default login` (~/.config/gcloud), or the metadata server (GCE, GKE, Cloud Run)",
    ),
    check_url=check_url,
    litestream_replica=litestream_replica,
    delete_prefix=lambda url, timeout: delete_listed(GCSStorage(url, timeout=timeout, writable=True)),
)
