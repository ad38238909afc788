"""The held-reader probe's parts: the reader process an application would be, and who holds a lock on a file.

The reader runs as a process of its own (as an application's would): POSIX
record locks belong to a process, and a file opened and closed anywhere in
drillbook's own process would silently drop a reader's lock held there.
"""

from __future__ import annotations

import os
from pathlib import Path

# argv: database, query, marker file. Opens read-only, begins a read transaction, runs the query, says so
# (the marker), and keeps the transaction open until its process group is killed.
HOLDER_SCRIPT = """
import pathlib, sqlite3, sys, time, urllib.parse
db, sql, marker = sys.argv[1:4]
connection = sqlite3.connect("file:" + urllib.parse.quote(db) + "?mode=ro", uri=True, isolation_level=None, timeout=30)
connection.execute("BEGIN")
connection.execute(sql).fetchall()
pathlib.Path(marker).write_text(str(connection))
while True:
    time.sleep(3600)
"""

_BASE_ENV = ("PATH", "HOME", "LANG", "TZ", "TMPDIR")


def holder_env() -> dict[str, str]:
    return {key: os.environ[key] for key in _BASE_ENV if key in os.environ}


def lock_holders(path: Path, locks: str = "/proc/locks") -> list[str]:
    """'pid 1234 READ (python3 -I -c ...)' for each process holding a POSIX lock on `path` (Linux; [] elsewhere)."""
    try:
        inode = os.stat(path).st_ino
        lines = Path(locks).read_text().splitlines()
    except OSError:
        return []
    found: list[str] = []
    for line in lines:
        fields = line.split()
        # readers' SHARED locks only: not a waiter ("->", litestream itself), nor litestream's own PENDING write lock
        if "->" in fields or len(fields) < 8 or fields[1] != "POSIX" or fields[3] != "READ":
            continue
        pid, device = fields[4], fields[5]
        if device.rsplit(":", 1)[-1] != str(inode):
            continue
        try:
            command = " ".join(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split())
        except OSError:
            command = "?"
        entry = f"pid {pid} ({command[:48]}{'…' if len(command) > 48 else ''})"
        if entry not in found:
            found.append(entry)
    return found
