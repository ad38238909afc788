"""Azure Blob Storage replicas (abs://), through azure-storage-blob.

URL: abs://[ACCOUNT@]CONTAINER/PATH, as litestream reads it. litestream takes the
endpoint only from its config file (`endpoint:`), never from the URL; drillbook
also accepts ?endpoint=URL (Azurite, sovereign clouds) and hands it to litestream
through `litestream_replica`. Credentials as litestream reads them:
LITESTREAM_AZURE_SAS_TOKEN first, else LITESTREAM_AZURE_ACCOUNT_KEY with the
account name from the URL. Without either, both fall back to Azure's default
credential chain as the vendor's SDK resolves it (azure-identity here, azidentity in
litestream): environment (AZURE_CLIENT_ID with AZURE_CLIENT_SECRET or a certificate,
AZURE_TENANT_ID), workload identity (AZURE_FEDERATED_TOKEN_FILE), managed identity, the
az and azd CLIs. drillbook asks the chain for a token before listing, so a missing or
expired credential is one line naming each source tried and what it said.

Layout, as litestream's abs client writes it: PATH/ltx/<level>/<minTXID>-<maxTXID>.ltx,
the level in decimal, the TXIDs 16 hex digits. Listing times are the blob's
Last-Modified (one-second resolution).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel

from drillbook.tasks.storage.base import Backend, StorageError, StorageProblem, StoredObject, delete_listed, server_place
from drillbook.tasks.text import redact_url

#: What litestream's abs client reads from its environment (the default credential chain's included).
_LITESTREAM_ENV = (
    "LITESTREAM_AZURE_ACCOUNT_KEY",
    "LITESTREAM_AZURE_SAS_TOKEN",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_CONFIG_DIR",  # the az CLI's login
    "IDENTITY_ENDPOINT",  # managed identity on App Service, Functions, Container Apps, Arc
    "IDENTITY_HEADER",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


class ABSLocation(BaseModel):
    account: str | None
    container: str
    prefix: str
    endpoint: str | None = None

    @property
    def account_url(self) -> str:
        return self.endpoint or f"https://{self.account}.blob.core.windows.net"

    @property
    def where(self) -> str:
        return f"abs://{self.container}/{self.prefix} at {self.account_url}"


def parse_abs_url(url: str) -> ABSLocation:
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    return ABSLocation(
        account=unquote(parts.username) if parts.username else None,
        container=parts.hostname or "",
        prefix=unquote(parts.path).strip("/"),
        endpoint=query.get("endpoint"),
    )


def check_url(url: str) -> str | None:
    """What the URL lacks for drillbook and litestream to find the replica; None when complete."""
    location = parse_abs_url(url)
    if not location.container:
        return f"{redact_url(url)}: no container: write abs://ACCOUNT@CONTAINER/PATH"
    if not location.account and not location.endpoint:
        return f"{redact_url(url)}: no storage account: write abs://ACCOUNT@{location.container}/{location.prefix} (litestream builds the endpoint from it)"
    return None


def litestream_replica(url: str) -> dict[str, str]:
    """The litestream config `replica:` entry for this URL; needed when an endpoint is set (litestream ignores URL queries)."""
    location = parse_abs_url(url)
    replica = {"type": "abs", "bucket": location.container, "path": location.prefix}
    if location.account:
        replica["account-name"] = location.account
    if location.endpoint:
        replica["endpoint"] = location.endpoint
    return replica


STORAGE_SCOPE = "https://storage.azure.com/.default"
#: The chain's sources litestream's azidentity tries too; the Python SDK's others (VS Code, PowerShell, a token cache,
#: a browser) are left out, so drillbook and litestream answer alike.
_CHAIN_EXCLUDES = dict(
    exclude_shared_token_cache_credential=True,
    exclude_visual_studio_code_credential=True,
    exclude_powershell_credential=True,
    exclude_interactive_browser_credential=True,
    exclude_broker_credential=True,
)


def _credential(location: ABSLocation):
    sas = os.environ.get("LITESTREAM_AZURE_SAS_TOKEN")
    if sas:
        return sas.lstrip("?")
    key = os.environ.get("LITESTREAM_AZURE_ACCOUNT_KEY")
    if key and location.account:
        return {"account_name": location.account, "account_key": key}
    return _default_chain(location)


def _default_chain(location: ABSLocation):
    """Azure's default credential chain, asked for a token now: what it tried, in one line, when none gives one."""
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import DefaultAzureCredential  # only when no key or SAS is set

    chain = DefaultAzureCredential(**_CHAIN_EXCLUDES)
    try:
        chain.get_token(STORAGE_SCOPE)
    except ClientAuthenticationError as exc:
        raise StorageError(
            StorageProblem.ACCESS_DENIED,
            f"no Azure credentials for {location.where}: set LITESTREAM_AZURE_SAS_TOKEN, or LITESTREAM_AZURE_ACCOUNT_KEY with the account "
            f"in the URL, or give Azure's default chain one (litestream reads the same); tried {chain_tried(exc.message or str(exc))}",
        ) from None
    if urlsplit(location.account_url).scheme != "https":
        raise StorageError(
            StorageProblem.ACCESS_DENIED,
            f"Azure's default chain gave a token, which Azure's SDKs send over https only, and {location.account_url} is not https: "
            "use the https endpoint, or LITESTREAM_AZURE_ACCOUNT_KEY / LITESTREAM_AZURE_SAS_TOKEN",
        )
    return chain


def chain_tried(message: str) -> str:
    """azure-identity's many-line "Attempted credentials:" report as one line: each source and the first sentence it said."""
    names = {
        "EnvironmentCredential": "environment (AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_CLIENT_SECRET or a certificate)",
        "WorkloadIdentityCredential": "workload identity (AZURE_FEDERATED_TOKEN_FILE)",
        "ManagedIdentityCredential": "managed identity",
        "AzureCliCredential": "az CLI",
        "AzureDeveloperCliCredential": "azd CLI",
    }
    tried = []
    for line in message.splitlines():
        name, colon, said = line.strip().partition(": ")
        if colon and name in names:
            said = said.removeprefix(f"{name} ").split(". ")[0].split("\n")[0].rstrip(".")
            tried.append(f"{names[name]}: {said[:160]}")
    return "; ".join(tried) or " ".join(message.split())[:400]


class ABSStorage:
    """A replica below abs://[account@]container/path."""

    def __init__(self, url: str, *, timeout: float):
        self.location = parse_abs_url(url)
        self.timeout = timeout
        self.where = self.location.where
        self.endpoint = self.location.endpoint
        self._container = None

    def _client(self):
        if self._container is None:
            from azure.storage.blob import ContainerClient, LinearRetry  # about 0.2 s: only for abs replicas

            self._container = ContainerClient(
                account_url=self.location.account_url,
                container_name=self.location.container,
                credential=_credential(self.location),
                connection_timeout=min(5.0, self.timeout),
                read_timeout=self.timeout,
                # Listing and ranged GETs are idempotent: retry twice, half a second apart. The SDK's default
                # (exponential from 15 s) held an unreachable endpoint for 45 s before saying so.
                retry_policy=LinearRetry(backoff=0.5, random_jitter_range=0.25, retry_total=2),
            )
        return self._container

    def key(self, relative: str) -> str:
        return f"{self.location.prefix}/{relative}" if self.location.prefix else relative

    def probe(self) -> None:
        self._call(lambda client: next(iter(client.list_blobs(name_starts_with=self.key(""), results_per_page=1)), None), "listing")

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        root = len(self.key(""))
        pages = self._call(lambda client: client.list_blobs(name_starts_with=self.key(prefix)).by_page(), "listing")
        while True:
            page = self._call(lambda _client: next(pages, None), "listing")
            if page is None:
                return
            for blob in self._call(lambda _client, page=page: list(page), "listing"):
                yield StoredObject(key=blob.name[root:], size=blob.size, modified=blob.last_modified)

    def read(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        full = self.key(key)
        return self._call(lambda client: client.download_blob(full, offset=start, length=length).readall(), "reading", full)

    def delete(self, key: str) -> None:
        full = self.key(key)
        self._call(lambda client: client.delete_blob(full), "deleting", full)

    def _call(self, call, doing: str, blob: str | None = None):
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceRequestTimeoutError,
            ServiceResponseError,
            ServiceResponseTimeoutError,
        )

        where = f"abs://{self.location.container}/{blob} at {self.location.account_url}" if blob else self.where
        try:
            return call(self._client())
        except ResourceNotFoundError as exc:
            if blob is not None and exc.error_code != "ContainerNotFound":
                raise StorageError(StorageProblem.STORAGE_ERROR, f"listed but missing: {where} ({_code(exc)})") from None
            raise StorageError(
                StorageProblem.MISSING, f"container {self.location.container!r} does not exist at {self.location.account_url}"
            ) from None
        except ClientAuthenticationError as exc:
            if "Attempted credentials" in (exc.message or ""):  # the chain's token ran out mid-drill, and no source gives another
                raise StorageError(
                    StorageProblem.ACCESS_DENIED, f"Azure's default chain gives no token {doing} {where}: tried {chain_tried(exc.message)}"
                ) from None
            raise StorageError(
                StorageProblem.ACCESS_DENIED,
                f"Azure refused the credentials {doing} {where} ({_code(exc)}): "
                "check LITESTREAM_AZURE_ACCOUNT_KEY / LITESTREAM_AZURE_SAS_TOKEN and the account name in the URL",
            ) from None
        except HttpResponseError as exc:
            if exc.status_code == 403:  # a wrong key or an expired SAS is a 403 too (AuthenticationFailed, AuthorizationFailure)
                raise StorageError(
                    StorageProblem.ACCESS_DENIED,
                    f"access denied {doing} {where} ({_code(exc)}): check LITESTREAM_AZURE_ACCOUNT_KEY / LITESTREAM_AZURE_SAS_TOKEN, "
                    "the account name in the URL, and that the SAS token allows list and read",
                ) from None
            raise StorageError(
                StorageProblem.STORAGE_ERROR, f"Azure answered HTTP {exc.status_code} ({_code(exc)}) {doing} {where}"
            ) from None
        except (ServiceRequestTimeoutError, ServiceResponseTimeoutError):
            raise StorageError(StorageProblem.TIMEOUT, f"Azure did not answer within {self.timeout:g}s {doing} {where}") from None
        except ServiceRequestError as exc:  # the request never got an answer: refused, DNS, TLS
            raise StorageError(
                StorageProblem.UNREACHABLE, f"Azure Blob endpoint unreachable {doing} {where} ({type(exc).__name__})"
            ) from None
        except ServiceResponseError as exc:  # connected, then the answer failed: reset, closed mid-response
            raise StorageError(StorageProblem.STORAGE_ERROR, f"Azure Blob error {doing} {where}: {type(exc).__name__}") from None


def _code(exc) -> str:
    """The service's error code as it sent it (AuthorizationFailure), not the SDK's enum repr."""
    code = getattr(exc, "error_code", None)
    return str(getattr(code, "value", code) or exc.status_code)


def store_scope(url: str) -> str:
    """'127.0.0.1:10000/devstoreaccount1/drills', 'account.blob.core.windows.net/container'."""
    parts = urlsplit(url)
    endpoint = (parse_qs(parts.query).get("endpoint") or [""])[-1]
    server = urlsplit(endpoint)
    account = server.netloc + server.path.rstrip("/") if endpoint else f"{parts.username}.blob.core.windows.net"
    return f"{account}/{parts.hostname or ''}"


BACKEND = Backend(
    schemes=("abs",),
    storage=ABSStorage,
    scope=store_scope,
    place=server_place,
    env=_LITESTREAM_ENV,
    secret_env=(
        "LITESTREAM_AZURE_ACCOUNT_KEY",
        "LITESTREAM_AZURE_SAS_TOKEN",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PASSWORD",
        "IDENTITY_HEADER",
        "MSI_SECRET",
    ),
    credentials=(
        "LITESTREAM_AZURE_ACCOUNT_KEY or LITESTREAM_AZURE_SAS_TOKEN",
        "or Azure's default chain: AZURE_CLIENT_ID / AZURE_CLIENT_SECRET / AZURE_TENANT_ID, workload identity "
        "(AZURE_FEDERATED_TOKEN_FILE), a managed identity, or `az login`",
    ),
    check_url=check_url,
    litestream_replica=litestream_replica,
    delete_prefix=lambda url, timeout: delete_listed(ABSStorage(url, timeout=timeout)),
)
