"""[[directories]]: a tenant fleet as `litestream replicate` writes it in directory mode (`dbs: - dir:`), one catalogue entry."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from drillbook.cli.main import main
from drillbook.tasks.config.directory import forget_discoveries
from drillbook.tasks.litestream import find_litestream, litestream_env
from drillbook.testing.sample import make_sample_database

TENANTS = ("t1.db", "t2.db", "team-a/db2.db")
NAMES = ("tenants.t1.db", "tenants.t2.db", "tenants.team-a--db2.db")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> tuple[Path, Path]:
    """Three tenants (one in a subfolder) replicated by litestream itself, from one `dir:` entry; (live dir, replica dir)."""
    root = tmp_path_factory.mktemp("tenants")
    live, replica = root / "live", root / "replica"
    (live / "team-a").mkdir(parents=True)
    replica.mkdir()
    config = root / "litestream.yml"
    config.write_text(
        "dbs:\n"
        f"  - dir: {json.dumps(str(live))}\n"
        '    pattern: "*.db"\n'
        "    recursive: true\n"
        "    watch: true\n"
        "    replica:\n"
        f"      url: {json.dumps(replica.as_uri())}\n"
    )
    for tenant in TENANTS:
        make_sample_database(live / tenant, customers=30)
    log = (root / "litestream.log").open("wb")
    process = subprocess.Popen(
        [find_litestream(), "replicate", "-config", str(config)], env=litestream_env(), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 45
        while not all(any((replica / tenant / "ltx").rglob("*.ltx")) for tenant in TENANTS):
            assert process.poll() is None, (root / "litestream.log").read_text()
            assert time.monotonic() < deadline, "litestream did not replicate every tenant: " + (root / "litestream.log").read_text()
            time.sleep(0.2)
        time.sleep(1.5)  # a sync interval more: the snapshot's files complete
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    return live, replica


@pytest.fixture(autouse=True)
def _fresh_discovery():
    forget_discoveries()
    yield
    forget_discoveries()


def catalogue(tmp_path: Path, replica: str, *extra: str) -> Path:
    path = tmp_path / "drillbook.toml"
    path.write_text(
        "\n".join(
            [
                "[drillbook]",
                f"evidence_dir = {json.dumps(str(tmp_path / 'evidence'))}",
                f"scratch_dir = {json.dumps(str(tmp_path / 'scratch'))}",
                "",
                "[[directories]]",
                'name = "tenants"',
                f"replica = {json.dumps(replica)}",
                "recursive = true",
                'rto_target = "2m"',
                'rpo_target = "1h"',
                "row_counts = { customers = 30 }",
                *extra,
            ]
        )
        + "\n"
    )
    return path


def test_check_config_counts_the_databases_a_directory_yields(tmp_path, fleet, capsys):
    _, replica = fleet
    assert main(["check-config", "--config", str(catalogue(tmp_path, replica.as_uri()))]) == 0
    out = capsys.readouterr().out
    assert "3 database(s) OK" in out and "directories tenants: 3 database(s)" in out
    for name in NAMES:
        assert f"  {name}: " in out


def test_not_recursive_yields_the_top_level_only(tmp_path, fleet, capsys):
    _, replica = fleet
    path = catalogue(tmp_path, replica.as_uri())
    path.write_text(path.read_text().replace("recursive = true", "recursive = false"))
    assert main(["check-config", "--config", str(path)]) == 0
    assert "directories tenants: 2 database(s)" in capsys.readouterr().out


def test_nightly_drills_every_tenant_and_run_takes_a_discovered_name(tmp_path, fleet, capsys):
    _, replica = fleet
    config = str(catalogue(tmp_path, replica.as_uri()))
    assert main(["nightly", "--config", config]) == 0
    assert "nightly drills: 3 PASS" in capsys.readouterr().out
    assert main(["run", "--config", config, "tenants.team-a--db2.db"]) == 0
    assert main(["run", "--config", config, "tenants.nobody.db"]) == 2


def test_an_override_applies_to_its_tenants_only(tmp_path, fleet, capsys):
    _, replica = fleet
    config = catalogue(tmp_path, replica.as_uri(), "", "[[directories.override]]", 'match = "team-a/*"', "row_counts = { customers = 31 }")
    assert main(["nightly", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "nightly drills: 1 FAIL, 2 PASS" in out, out
    assert main(["run", "--config", str(config), "tenants.team-a--db2.db"]) == 1
    assert main(["run", "--config", str(config), "tenants.t1.db"]) == 0


def test_an_override_with_an_unknown_key_is_a_config_error(tmp_path, fleet, capsys):
    _, replica = fleet
    config = catalogue(tmp_path, replica.as_uri(), "", "[[directories.override]]", 'match = "t1.db"', "rto_targt = 3")
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "override[0]" in err and "rto_targt" in err and "Traceback" not in err


def test_a_live_tenant_without_a_replica_is_a_fail_no_backup(tmp_path, fleet, capsys):
    live, replica = fleet
    late = live / "late.db"
    make_sample_database(late, customers=30)  # after litestream stopped: it never replicated
    try:
        config = str(catalogue(tmp_path, replica.as_uri(), f"live_dir = {json.dumps(str(live))}"))
        assert main(["nightly", "--config", config]) == 1
        out = capsys.readouterr().out
        assert "nightly drills: 1 FAIL, 3 PASS" in out, out
        assert main(["run", "--config", config, "tenants.late.db"]) == 1
        out = capsys.readouterr().out
        assert "tenants.late.db" in out and "no backup" in out, out
    finally:
        for file in live.glob("late.db*"):
            file.unlink()


def test_a_prefix_that_cannot_be_listed_is_an_error_naming_the_entry(tmp_path, capsys):
    config = catalogue(tmp_path, (tmp_path / "nowhere").as_uri())
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "directories 'tenants'" in err and "cannot list the replica prefix" in err and "Traceback" not in err
    assert len(err.splitlines()) == 1, err


def test_a_tenant_removed_from_the_replica_is_said_once_not_stale(tmp_path, fleet, capsys):
    _, replica = fleet
    copy = tmp_path / "replica"
    shutil.copytree(replica, copy)
    config = str(catalogue(tmp_path, copy.as_uri()))
    assert main(["nightly", "--config", config]) == 0
    shutil.rmtree(copy / "t2.db")
    forget_discoveries()
    capsys.readouterr()
    assert main(["stale", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "0 of 3 database(s) stale" in out, out
    assert "tenants.t2.db: tenant removed from the replica: last PASS" in out, out


def test_history_plan_runbook_and_metrics_take_the_discovered_tenants(tmp_path, fleet, capsys):
    _, replica = fleet
    config = str(catalogue(tmp_path, replica.as_uri()))
    assert main(["run", "--config", config, "tenants.t1.db"]) == 0
    capsys.readouterr()
    assert main(["history", "--config", config, "tenants.t1.db"]) == 0
    assert "tenants.t1.db" in capsys.readouterr().out
    assert main(["plan", "--config", config, "tenants.team-a--db2.db"]) == 0
    assert main(["runbook", "--config", config, "tenants.t2.db"]) == 0
    assert "tenants.t2.db" in capsys.readouterr().out
    assert main(["metrics", "--config", config, "--output", "-"]) == 0
    out = capsys.readouterr().out
    assert all(f'database="{name}"' in out for name in NAMES), out


def test_one_directory_that_cannot_be_listed_is_one_error_and_the_rest_is_drilled(tmp_path, fleet, capsys):
    _, replica = fleet
    nowhere = (tmp_path / "nowhere").as_uri()
    config = str(
        catalogue(
            tmp_path,
            replica.as_uri(),
            "",
            "[[directories]]",
            'name = "gone"',
            f"replica = {json.dumps(nowhere)}",
            'rto_target = "2m"',
            'rpo_target = "1h"',
        )
    )
    assert main(["check-config", "--config", config]) == 2
    captured = capsys.readouterr()
    assert "3 database(s) OK, 1 directory entry(ies) not listed" in captured.out, captured.out
    assert "directories gone: not listed from" in captured.out and "directories tenants: 3 database(s)" in captured.out
    assert (
        captured.err.count("\n") == 1
        and "drillbook: " in captured.err
        and "directories 'gone': cannot list the replica prefix" in captured.err
    ), captured.err
    assert "fix the replica URL or the store's credentials" in captured.err
    assert main(["check-config", "--config", config, "--json"]) == 2
    document = json.loads(capsys.readouterr().out)
    assert document["valid"] is False and document["directories"] == {"tenants": 3, "gone": None}
    assert len(document["databases"]) == 3 and "directories 'gone': cannot list" in document["errors"][0]

    assert main(["nightly", "--config", config]) == 2  # an ERROR among PASSes: the fleet's exit contract
    out = capsys.readouterr().out
    assert "nightly drills: 1 ERROR, 3 PASS" in out, out
    assert "gone" in out and "drill error" in out, out

    assert main(["stale", "--config", config]) == 2
    captured = capsys.readouterr()
    assert "0 of 3 database(s) stale" in captured.out, captured.out
    assert "directories 'gone': cannot list" in captured.err and "Traceback" not in captured.err

    assert main(["metrics", "--config", config, "--output", "-"]) == 2
    captured = capsys.readouterr()
    assert 'drillbook_directory_listed{directory="gone"} 0.0' in captured.out
    assert 'drillbook_directory_listed{directory="tenants"} 1.0' in captured.out
    assert all(f'drillbook_last_pass_timestamp_seconds{{database="{name}"}}' in captured.out for name in NAMES), captured.out
    assert "directories 'gone'" in captured.err


def test_a_listed_tenant_keeps_its_metrics_while_its_directory_cannot_be_listed(tmp_path, fleet, capsys):
    _, replica = fleet
    copy = tmp_path / "replica"
    shutil.copytree(replica, copy)
    config = str(catalogue(tmp_path, copy.as_uri()))
    assert main(["run", "--config", config, "tenants.t1.db"]) == 0
    shutil.rmtree(copy)  # the store is gone: nothing can be listed
    forget_discoveries()
    capsys.readouterr()
    assert main(["stale", "--config", config]) == 2
    captured = capsys.readouterr()
    assert "tenants.t1.db: its directory's replica could not be listed (not drilled): last PASS" in captured.out, captured.out
    assert main(["metrics", "--config", config, "--output", "-"]) == 2
    assert 'drillbook_last_pass_timestamp_seconds{database="tenants.t1.db"}' in capsys.readouterr().out
    assert main(["run", "--config", config, "tenants.t1.db"]) == 2
    err = capsys.readouterr().err
    assert "no database named 'tenants.t1.db'" in err and "cannot list the replica prefix" in err and len(err.splitlines()) == 1, err


def test_discovery_on_s3_lists_folders_not_every_ltx_file(tmp_path, s3_endpoint, capsys):
    from drillbook.tasks.storage.s3 import S3Storage
    from drillbook.testing.corpus import s3_client
    from drillbook.testing.s3 import s3_replica_url

    client = s3_client(s3_endpoint)
    keys = [f"fleet-s3/t{n}.db/0000/{i:016x}-{i:016x}.ltx" for n in range(1, 4) for i in range(1, 30)]  # litestream 0.5's S3 layout
    keys += ["fleet-s3/team-a/db2.db/0000/0000000000000001-0000000000000001.ltx", "fleet-s3/old.db/generations/abc/snapshots/0.lz4"]
    keys += ["fleet-s3/notes.txt", "fleet-s3/scratch.sqlite/0000/1.ltx"]  # not a folder; a folder the pattern does not fit
    for key in keys:
        client.put_object(Bucket="drills", Key=key, Body=b"x")
    url = s3_replica_url(s3_endpoint, "drills", "fleet-s3")
    listings = []
    S3Storage(url, timeout=120.0)._client().meta.events.register(
        "before-parameter-build.s3.ListObjectsV2", lambda params, **_: listings.append(dict(params))
    )
    assert main(["check-config", "--config", str(catalogue(tmp_path, url))]) == 0
    out = capsys.readouterr().out
    assert "directories tenants: 5 database(s)" in out, out
    for name in ("tenants.t1.db", "tenants.t3.db", "tenants.team-a--db2.db", "tenants.old.db"):
        assert f"  {name}: " in out
    # the probe, the prefix's folders, then team-a's and scratch.sqlite's (recursive): never the 90 LTX files below the tenants
    assert sorted((p["Prefix"], p.get("Delimiter", "")) for p in listings) == [
        ("fleet-s3/", ""),
        ("fleet-s3/", "/"),
        ("fleet-s3/scratch.sqlite/", "/"),
        ("fleet-s3/team-a/", "/"),
    ], listings


@pytest.mark.parametrize(
    ("match", "fits"),
    [
        ("*", {"t1.db", "big.db"}),  # `*` stays within one folder: the top level only
        ("*.db", {"t1.db", "big.db"}),
        ("team-a/*", {"team-a/db2.db"}),
        ("team-a/**", {"team-a/db2.db", "team-a/x/db3.db"}),
        ("**/big.db", {"big.db", "team-b/big.db"}),
        ("**", {"t1.db", "big.db", "team-a/db2.db", "team-a/x/db3.db", "team-b/big.db"}),
    ],
)
def test_override_match_is_folder_aware(match, fits):
    from drillbook.tasks.config.directory import DirectoryEntry

    directory = DirectoryEntry.model_validate(
        {
            "name": "f",
            "replica": "file:///r",
            "recursive": True,
            "rto_target": 60,
            "rpo_target": 60,
            "override": [{"match": match, "rto_target": 5}],
        }
    )
    paths = ("t1.db", "big.db", "team-a/db2.db", "team-a/x/db3.db", "team-b/big.db")
    assert {path for path in paths if directory.tenant(path).rto_target == 5} == fits


def test_an_override_match_that_is_not_relative_is_a_config_error(tmp_path, capsys):
    config = catalogue(tmp_path, (tmp_path / "r").as_uri(), "", "[[directories.override]]", 'match = "/team-a/*"', "rto_target = 3")
    assert main(["check-config", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "override.0.match" in err or "match is a path relative to the directory" in err, err


def test_the_page_counts_a_fleet_and_gives_sections_to_the_tenants_needing_attention_only(tmp_path, fleet, capsys, monkeypatch):
    import re

    from drillbook.tasks.report import html

    _, replica = fleet
    config = str(catalogue(tmp_path, replica.as_uri()))
    assert main(["run", "--config", config, "tenants.t1.db"]) == 0
    page = tmp_path / "drills.html"
    assert main(["report", "--config", config, "--html", str(page)]) == 0
    text = page.read_text()
    assert "3 database(s) from" in text and 'data-directory="tenants" data-tenants="3"' in text
    assert (
        "newest drills: 2 never drilled, 1 PASS. 2 need attention (stale, not passing, or never drilled): each has a section below." in text
    )
    assert re.findall(r'data-database="([^"]+)"', text) == ["tenants.t2.db", "tenants.team-a--db2.db"]  # t1 passed: counted, no section

    monkeypatch.setattr(html, "TENANT_SECTIONS", 1)
    monkeypatch.setattr(html, "STALE_LISTED", 1)
    assert main(["report", "--config", config, "--html", str(page)]) == 0
    text = page.read_text()
    assert "the worst 1 have a section below" in text and re.findall(r'data-database="([^"]+)"', text) == ["tenants.t2.db"]
    assert "and 1 more: <code>drillbook stale --json</code> lists them all." in text


CROWD = (
    tuple(f"c{n:02d}.db" for n in range(8))
    + tuple(f"team-a/a{n:02d}.db" for n in range(8))
    + tuple(f"team-b/x/b{n:02d}.db" for n in range(8))
)


def test_two_dozen_tenants_litestream_replicates_to_s3_are_discovered_by_folders_and_drilled(tmp_path, s3_endpoint, capsys):
    """The S3 layout made by litestream itself in directory mode: discovery by CommonPrefixes finds each tenant, nested ones too."""
    from drillbook.tasks.config.directory import tenant_prefixes
    from drillbook.testing.corpus import s3_client
    from drillbook.testing.s3 import s3_replica_url

    live = tmp_path / "live"
    for tenant in CROWD:
        (live / tenant).parent.mkdir(parents=True, exist_ok=True)
        make_sample_database(live / tenant, customers=30)
    url = s3_replica_url(s3_endpoint, "drills", "crowd")
    config = tmp_path / "litestream.yml"
    config.write_text(
        f'dbs:\n  - dir: {json.dumps(str(live))}\n    pattern: "*.db"\n    recursive: true\n    replica:\n      type: s3\n'
        f"      bucket: drills\n      path: crowd\n      endpoint: {json.dumps(s3_endpoint)}\n      region: us-east-1\n      force-path-style: true\n"
    )
    client = s3_client(s3_endpoint)

    def replicated() -> set[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket="drills", Prefix="crowd/")
        return tenant_prefixes(item["Key"].removeprefix("crowd/") for page in pages for item in page.get("Contents", ()))

    log = (tmp_path / "litestream.log").open("wb")
    process = subprocess.Popen(
        [find_litestream(), "replicate", "-config", str(config)], env=litestream_env(), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while replicated() != set(CROWD):
            assert process.poll() is None and time.monotonic() < deadline, sorted(replicated())
            time.sleep(0.3)
        time.sleep(1.5)  # a sync interval more: the snapshots complete
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    path = catalogue(tmp_path, url)
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "directories tenants: 24 database(s)" in out, out
    assert "  tenants.team-b--x--b07.db: " in out and "  tenants.c00.db: " in out
    assert main(["run", "--config", str(path), "tenants.team-b--x--b03.db"]) == 0  # restored from S3 by litestream, its URL the prefix's


def test_a_full_listing_finds_tenants_in_every_layout_litestream_writes():
    """Stores without folder listings (Azure, GCS, SFTP, WebDAV, NATS) list every object; each layout ends a tenant's prefix."""
    from drillbook.tasks.config.directory import tenant_prefixes

    ltx = "0000000000000001-0000000000000002.ltx"
    keys = [
        f"t1.db/0000/{ltx}",  # 0.5 on an object store: 4-hex-digit levels
        f"t1.db/0009/{ltx}",
        f"team-a/db2.db/0001/{ltx}",
        f"abc/0000/{ltx}",  # a tenant whose name looks like a level
        f"files.db/ltx/0/{ltx}",  # 0.5 on a file replica
        "old.db/generations/0123456789abcdef/snapshots/00000000.snapshot.lz4",  # 0.3
        "notes/readme.txt",
        "half.db/0000/not-an-ltx-name.ltx",
    ]
    assert tenant_prefixes(keys) == {"t1.db", "team-a/db2.db", "abc", "files.db", "old.db"}
