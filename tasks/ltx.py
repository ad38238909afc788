"""The LTX format as drillbook reads it: file names in a replica, the header, and litestream's own JSON listing.

litestream 0.5 keeps a replica as LTX files, one per TXID range, at compaction
levels 0-9 (9: snapshots). Their place below the replica's root:

    file://   ltx/<level>/<min TXID>-<max TXID>.ltx              (level in decimal)
    s3:// &c  <level as 4 hex digits>/<min TXID>-<max TXID>.ltx   (TXIDs: 16 hex digits)

`ltx_files` reads either from a storage listing; nothing else is needed to know
the newest position, the files per level and what a restore would fetch.

The header (100 bytes, big-endian) starts: magic "LTX1", flags, page size,
commit (pages), min TXID, max TXID, timestamp (ms since the epoch, when
litestream wrote the file). `parse_ltx_header` needs its first 40 bytes.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from drillbook.tasks.storage.base import StoredObject

LTX_MAGIC = b"LTX1"
LTX_HEADER_BYTES = 100
HEADER_PREFIX = 40  # magic .. timestamp: all drillbook reads of a header
SNAPSHOT_LEVEL = 9

_KEY = re.compile(r"(?:^|/)(?P<level>[0-9a-f]{1,4})/(?P<min>[0-9a-f]{16})-(?P<max>[0-9a-f]{16})\.ltx\Z")


class LtxFile(BaseModel):
    """One LTX file as listed: its level, TXID range (16 hex digits), size, the store's time, and its key."""

    level: int
    min_txid: str
    max_txid: str
    size: int
    timestamp: datetime = Field(description="The object store's time (LastModified, mtime), not litestream's.")
    key: str = Field(default="", description="Its key below the replica's root, as listed.")

    @property
    def low(self) -> int:
        return int(self.min_txid, 16)

    @property
    def high(self) -> int:
        return int(self.max_txid, 16)


class LtxHeader(BaseModel):
    """What drillbook reads from an LTX file's header."""

    page_size: int
    commit: int
    min_txid: str
    max_txid: str
    written_at: datetime = Field(description="The header's timestamp: when litestream wrote the file.")


def parse_ltx_header(data: bytes) -> LtxHeader:
    """Decode an LTX header; ValueError when the bytes are not one (short, wrong magic)."""
    if len(data) < HEADER_PREFIX:
        raise ValueError(f"only {len(data)} bytes, an LTX header has {LTX_HEADER_BYTES}")
    if data[:4] != LTX_MAGIC:
        raise ValueError(f"starts with {data[:4]!r}, not {LTX_MAGIC!r}")
    _flags, page_size, commit, min_txid, max_txid, millis = struct.unpack(">IIIQQq", data[4:HEADER_PREFIX])
    return LtxHeader(
        page_size=page_size,
        commit=commit,
        min_txid=f"{min_txid:016x}",
        max_txid=f"{max_txid:016x}",
        written_at=datetime.fromtimestamp(millis / 1000, UTC),
    )


def ltx_file(item: StoredObject) -> LtxFile | None:
    """The LTX file an object is, from its key; None for anything else (a 0.3 generation, a stray object)."""
    match = _KEY.search(item.key)
    if match is None:
        return None
    level_text = match.group("level")
    level = int(level_text, 16) if len(level_text) == 4 else int(level_text)  # 0-9: the same digits either way
    return LtxFile(
        level=level, min_txid=match.group("min"), max_txid=match.group("max"), size=item.size, timestamp=item.modified, key=item.key
    )


def ltx_files(listing: Iterable[StoredObject]) -> list[LtxFile]:
    """Every LTX file in a storage listing (other objects left out)."""
    return [f for f in map(ltx_file, listing) if f is not None]


def parse_ltx_json(stdout: str) -> list[LtxFile]:
    """`litestream ltx -json -level all` output, parsed whole; ValueError when it is not that listing."""
    items = json.loads(stdout or "[]")
    if not isinstance(items, list):
        raise ValueError("not a JSON list")
    return [LtxFile.model_validate(item) for item in items]


def newest_file(files: Iterable[LtxFile]) -> LtxFile:
    """The file holding the newest position: highest max TXID, lowest level (the newest L0 before its compaction)."""
    return max(files, key=lambda f: (f.high, -f.level))
