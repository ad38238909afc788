"""Cloud credentials as users have them: Azure's default credential chain and Google's Application Default Credentials.

Without an account key or SAS, drillbook asks Azure's default chain (azure-identity, the sources litestream's
azidentity tries too) for a token before it lists; without a key file, Google's ADC come from gcloud's
application-default login or the metadata server. A missing or expired credential is a FAIL "object storage
failure" whose one line names each source tried and what it said, through `drillbook run`, against Azurite and
a token endpoint on loopback that refuses the login as Google's does for a revoked one.
"""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from drillbook.cli.main import main
from drillbook.tasks.litestream import run_litestream
from drillbook.tasks.litestream_config import litestream_config_text
from drillbook.tasks.storage import litestream_replica
from drillbook.testing import servers
from tests.conftest import entry

pytestmark = pytest.mark.slow

AZURE_VARIABLES = (
    "LITESTREAM_AZURE_ACCOUNT_KEY",
    "LITESTREAM_AZURE_SAS_TOKEN",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "MSI_ENDPOINT",
)
TIMEOUTS = {"inspect_timeout": "20s", "restore_timeout": "30s"}


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    with servers.azurite(tmp_path_factory.mktemp("azurite")) as served:
        yield served


def _drill(capsys, write_catalogue, url: str) -> tuple[int, dict]:
    config = write_catalogue(entry("app", url, **TIMEOUTS))
    code = main(["run", "app", "--config", str(config), "--json"])
    return code, json.loads(capsys.readouterr().out)


def _finding(result: dict) -> str:
    return result["findings"][0]["detail"] if result["findings"] else ""


def _no_azure_credentials(monkeypatch, tmp_path) -> None:
    for name in AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no az login, no azd login
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "home" / ".azure"))


def test_no_azure_credential_at_all_names_every_source_tried(azurite, monkeypatch, tmp_path, capsys, write_catalogue):
    _no_azure_credentials(monkeypatch, tmp_path)
    url = f"abs://{servers.AZURITE_ACCOUNT}@drills/app-{uuid.uuid4().hex[:6]}?endpoint={azurite.endpoint}"

    code, result = _drill(capsys, write_catalogue, url)

    assert (code, result["verdict"], result["failure_mode"]) == (1, "FAIL", "object storage failure"), _finding(result)
    said = _finding(result)
    assert "\n" not in said, said  # one line
    assert said.startswith("no Azure credentials for abs://drills/app-"), said
    for source in (
        "environment (AZURE_CLIENT_ID",
        "workload identity (AZURE_FEDERATED_TOKEN_FILE)",
        "managed identity",
        "az CLI",
        "azd CLI",
    ):
        assert source in said, (source, said)
    assert "set LITESTREAM_AZURE_SAS_TOKEN, or LITESTREAM_AZURE_ACCOUNT_KEY" in said

    # litestream, given the same environment, falls back to the same chain and fails on it too.
    config = tmp_path / "litestream.yml"
    config.write_text(litestream_config_text(tmp_path / "app.db", litestream_replica(url)))
    record = run_litestream(
        ["restore", "-config", str(config), "-o", str(tmp_path / "out.db"), str(tmp_path / "app.db")], timeout=60
    ).record
    print(f"\nlitestream without Azure credentials (exit {record.exit_code}): {record.stderr_tail(600)}")
    assert not record.ok and not (tmp_path / "out.db").exists()


def test_an_unusable_azure_service_principal_is_named_with_what_it_said(azurite, monkeypatch, tmp_path, capsys, write_catalogue):
    _no_azure_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000000")
    monkeypatch.setenv("AZURE_CLIENT_ID", "11111111-1111-1111-1111-111111111111")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "expired-client-secret-value")
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", f"https://{servers.HOST}:{servers.free_port()}")  # nobody answers there
    url = f"abs://{servers.AZURITE_ACCOUNT}@drills/app?endpoint={azurite.endpoint}"

    code, result = _drill(capsys, write_catalogue, url)

    said = _finding(result)
    assert (code, result["failure_mode"]) == (1, "object storage failure"), said
    assert "\n" not in said and "tried environment (AZURE_CLIENT_ID" in said, said
    assert "expired-client-secret-value" not in json.dumps(result)


class _RefusingTokenEndpoint(BaseHTTPRequestHandler):
    """Google's token endpoint for a service account key that was deleted (or a login revoked)."""

    def do_POST(self):  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def google_env(tmp_path, monkeypatch):
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_a_deleted_service_account_key_is_named_as_the_source_google_refused(google_env, tmp_path, capsys, write_catalogue):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    server = ThreadingHTTPServer((servers.HOST, 0), _RefusingTokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = tmp_path / "drills-sa.json"
    key.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "drillbook",
                "private_key_id": "0123456789abcdef",
                "private_key": pem.decode(),
                "client_email": "drills@drillbook.iam.gserviceaccount.com",
                "client_id": "1234567890",
                "token_uri": f"http://{servers.HOST}:{server.server_port}/token",
            }
        )
    )
    google_env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    try:
        code, result = _drill(capsys, write_catalogue, "gs://drills/app")
    finally:
        server.shutdown()

    said = _finding(result)
    assert (code, result["failure_mode"]) == (1, "object storage failure"), said
    assert f"Google refused the credential from GOOGLE_APPLICATION_CREDENTIALS={key}" in said, said
    assert "invalid_grant" in said and "\n" not in said, said
    assert "PRIVATE KEY" not in json.dumps(result)


def test_a_gcloud_login_whose_token_endpoint_is_out_of_reach_is_named(google_env, tmp_path, capsys, write_catalogue):
    login = tmp_path / "home" / ".config" / "gcloud" / "application_default_credentials.json"
    login.parent.mkdir(parents=True)
    login.write_text(
        json.dumps({"type": "authorized_user", "client_id": "drill", "client_secret": "drill-secret", "refresh_token": "1//drill-refresh"})
    )
    config = write_catalogue(entry("app", "gs://drills/app", inspect_timeout="4s", restore_timeout="30s"))

    code = main(["run", "app", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)

    said = _finding(result)  # google-auth refreshes at Google's own endpoint, which this machine cannot reach
    assert (code, result["failure_mode"]) == (1, "object storage failure"), said
    assert f"cannot get a Google token from gcloud's application-default login {login}" in said and "\n" not in said, said
    assert "drill-refresh" not in json.dumps(result)


def test_a_gcloud_login_litestream_cannot_find_stops_the_catalogue(tmp_path, monkeypatch, capsys, write_catalogue):
    config_dir = tmp_path / "gcloud"
    config_dir.mkdir()
    (config_dir / "application_default_credentials.json").write_text("{}")
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(config_dir))

    code = main(["check-config", "--config", str(write_catalogue(entry("app", "gs://drills/app")))])

    err = capsys.readouterr().err
    assert code == 2, err
    assert f"litestream does not read there: set GOOGLE_APPLICATION_CREDENTIALS={config_dir}/application_default_credentials.json" in err
