"""The promotion drill on every store drillbook restores from, each against its real server on loopback.

A restored copy becomes a primary replicating (real `litestream replicate`, through the backend's own config
entry) to a per-drill sub-prefix of the promotion replica, a write on it is restored back from there, and the
sub-prefix is removed after the PASS; the live replica is never written. On NATS, whose litestream client writes
at a bucket's root, the drill's place is a bucket of its own (the promotion bucket's name plus the drill's), made
by drillbook and deleted after the PASS.
"""

from __future__ import annotations

import json
import uuid

import pytest

from drillbook.cli.main import main
from drillbook.tasks.promote import delete_prefix, prepare_drill
from drillbook.tasks.storage import open_storage
from drillbook.tasks.storage.base import StorageError
from tests.conftest import entry
from tests.test_backends_drill import TIMEOUTS, backend, replicated, server  # noqa: F401 - the fixtures, per store

pytestmark = pytest.mark.slow

WRITE = "CREATE TABLE promoted_marker (x INTEGER); INSERT INTO promoted_marker VALUES (1)"


def _keys(url: str) -> list[str]:
    return sorted(item.key for item in open_storage(url, timeout=10).list())


def test_a_promotion_passes_on_every_store_and_removes_its_sub_prefix(backend, replicated, capsys, write_catalogue):  # noqa: F811
    name, url, _live = replicated
    promoted = f"promoted-{uuid.uuid4().hex[:8]}"
    backend.create_root(promoted)
    promote_url = backend.url(promoted)
    config = write_catalogue(entry("app", url, **TIMEOUTS, failover_rto_target="60s", promote={"replica": promote_url, "writes": [WRITE]}))
    live_keys = _keys(url)

    code = main(["run", "app", "--config", str(config), "--json"])
    result = json.loads(capsys.readouterr().out)

    assert code == 0, (result["findings"], result["phases"].get("promote"))
    phase = result["phases"]["promote"]
    assert phase["status"] == "passed" and "1 write(s) restorable from the new prefix at TXID " in phase["summary"], phase
    deleted = [note for note in result["notes"] if note.startswith("deleted the drill's promotion prefix ")]
    assert deleted, result["notes"]
    if backend.scheme == "nats":  # its own bucket, promoted-<drill>, made for the drill and gone after it
        drill_bucket = deleted[0].split()[5]
        assert drill_bucket.startswith(f"{promote_url}-"), deleted
        with pytest.raises(StorageError) as gone:
            _keys(drill_bucket)
        assert "does not exist" in str(gone.value)
        with pytest.raises(StorageError) as taken:  # a bucket that exists is never written into, nor deleted
            prepare_drill(promote_url)
        assert "exists already" in str(taken.value) and "will not write into it" in str(taken.value)
        with pytest.raises(StorageError, match="not made by this drill"):
            delete_prefix(url)
    assert _keys(promote_url) == []  # the drill's own sub-prefix is gone
    assert _keys(url) == live_keys  # the live replica, untouched
