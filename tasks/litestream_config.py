"""How litestream is told where a replica is: its URL (s3://, file://), or a config file written into scratch.

litestream 0.5.17 ignores URL queries for abs:// (so an endpoint cannot be given
in the URL) and reads an SFTP key file, a WebDAV login and NATS credentials only
from a config file. For those backends a restore runs as

    litestream restore -config SCRATCH/litestream.yml -o OUT SCRATCH/replica-of/NAME.db

where the config names one database (a path nothing creates: only the config's key
for the replica) and its `replica:` entry from the backend (`storage.litestream_replica`).
Credentials appear there as ${VAR} references that litestream expands from its own
environment (tasks/litestream.py passes the backend's variables): the file never
holds a secret, lives in the drill's scratch directory and goes with it.

litestream expands ${VAR} in the file's text before parsing the YAML, so a value may
hold any character: each ${VAR} reference is written as a literal block scalar with
an explicit indentation, which YAML reads verbatim to the end of the line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from drillbook.tasks.storage import litestream_replica

CONFIG_NAME = "litestream.yml"
_REFERENCE = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*\}$")


def litestream_config_text(db_path: Path, replica: dict[str, str]) -> str:
    """The config for one database and one replica: plain values JSON-quoted (YAML reads JSON strings), ${VAR} as block scalars."""
    lines = ["dbs:", f"  - path: {json.dumps(str(db_path))}", "    replica:"]
    for key, value in replica.items():
        if _REFERENCE.match(value):
            # |2-: content indented two past the key (8 columns), read verbatim, no final newline; the expanded value may hold
            # quotes, '#', ': ' or leading spaces without changing what YAML sees.
            lines += [f"      {key}: |2-", f"        {value}"]
        else:
            lines.append(f"      {key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def restore_source(replica_url: str, directory: Path, name: str) -> list[str]:
    """The end of a `litestream restore` argv naming the replica: [URL], or ["-config", FILE, DB] with FILE written in `directory`."""
    replica = litestream_replica(replica_url)
    if replica is None:
        return [replica_url]
    db_path = directory / "replica-of" / f"{name}.db"  # never created: litestream only looks it up in the config
    config = directory / CONFIG_NAME
    config.write_text(litestream_config_text(db_path, replica))
    config.chmod(0o600)
    return ["-config", str(config), str(db_path)]
