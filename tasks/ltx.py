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

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from drillbook.tasks.storage.base import StoredObject

LTX_MAGIC = b"LTX1"
LTX_HEADER_BYTES = 100
HEADER_PREFIX = 40  # magic .. timestamp: all drillbook reads of a header
SNAPSHOT_LEVEL = 9

_KEY = re.compile(r"(?:^|/)(?P<level>[0-9a-f]{1,4})/(?P<min>[0-9a-f]{16})-(?P<max>[0-9a-f]{16})\.ltx\Z")


@dataclass(slots=True)
class LtxFile:
    """One LTX file as listed: its level, TXID range (16 hex digits), size, the store's time (not litestream's), and its key.

    A plain slotted dataclass: a busy replica lists 100,000 of them, and a model's validation would cost seconds.
    """

    level: int
    min_txid: str
    max_txid: str
    size: int
    timestamp: datetime
    key: str = ""

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


def newest_file(files: Iterable[LtxFile]) -> LtxFile:
    """The file holding the newest position: highest max TXID, lowest level (the newest L0 before its compaction)."""
    return max(files, key=lambda f: (f.high, -f.level))


# -- litestream 0.3: generations of snapshots and WAL segments -------------------------------------------------------
#
#     generations/<generation>/snapshots/<index>.snapshot.lz4
#     generations/<generation>/wal/<index>_<offset>.wal.lz4        (index, offset: 8 hex digits; older: wal/<index>/<offset>.wal.lz4)
#
# A generation starts when litestream starts on a database it has no position for (a restart after the WAL
# was lost, or a second primary). 0.3 writes no time of its own inside these files: the only time is the
# object store's. litestream 0.5.11+ restores them (`restore`, `-timestamp`), but lists nothing with `ltx`
# and refuses `-txid` and `-dry-run`: there are no TXIDs.

LEGACY_LAYOUT = "litestream 0.3 (generations)"
LTX_LAYOUT = "litestream 0.5 (LTX)"

_SNAPSHOT = re.compile(r"(?:^|/)generations/(?P<gen>[0-9a-f]{16})/snapshots/(?P<index>[0-9a-f]{8})\.snapshot\.lz4$")
_SEGMENT = re.compile(r"(?:^|/)generations/(?P<gen>[0-9a-f]{16})/wal/(?P<index>[0-9a-f]{8})[_/](?P<offset>[0-9a-f]{8})\.wal\.lz4$")


class LegacyFile(BaseModel):
    """A 0.3 snapshot (offset None) or WAL segment, as listed."""

    generation: str
    index: int
    offset: int | None = None
    size: int
    timestamp: datetime = Field(description="The object store's time: 0.3 keeps no time of its own.")
    key: str = ""

    @property
    def snapshot(self) -> bool:
        return self.offset is None

    @property
    def position(self) -> str:
        """generation/index/offset, as litestream 0.3 names a position."""
        return f"{self.generation}/{self.index:08x}/{(self.offset or 0):08x}"


def legacy_file(item: StoredObject) -> LegacyFile | None:
    if match := _SEGMENT.search(item.key):
        offset = int(match.group("offset"), 16)
    elif match := _SNAPSHOT.search(item.key):
        offset = None
    else:
        return None
    return LegacyFile(
        generation=match.group("gen"),
        index=int(match.group("index"), 16),
        offset=offset,
        size=item.size,
        timestamp=item.modified,
        key=item.key,
    )


def legacy_files(listing: Iterable[StoredObject]) -> list[LegacyFile]:
    return [f for f in map(legacy_file, listing) if f is not None]


class Generation(BaseModel):
    """One 0.3 generation: its snapshots and WAL segments, and what they say."""

    name: str
    snapshots: list[LegacyFile]
    segments: list[LegacyFile]

    @property
    def files(self) -> list[LegacyFile]:
        return self.snapshots + self.segments

    @property
    def newest(self) -> LegacyFile:
        """The newest position: the last WAL segment (index, offset), else the newest snapshot."""
        if self.segments:
            return max(self.segments, key=lambda f: (f.index, f.offset or 0))
        return max(self.snapshots, key=lambda f: f.index)

    @property
    def last_written(self) -> datetime:
        return max(f.timestamp for f in self.files)

    @property
    def started(self) -> datetime:
        return min(f.timestamp for f in self.files)


def generations(files: Iterable[LegacyFile]) -> list[Generation]:
    """Generations oldest first (by when their first object was stored)."""
    grouped: dict[str, list[LegacyFile]] = {}
    for f in files:
        grouped.setdefault(f.generation, []).append(f)
    found = [
        Generation(name=name, snapshots=[f for f in group if f.snapshot], segments=[f for f in group if not f.snapshot])
        for name, group in grouped.items()
    ]
    return sorted(found, key=lambda g: (g.started, g.name))


@dataclass(slots=True, frozen=True)
class LtxLineage:
    """The rest of the header (bytes 40-80): where in which WAL the file came from, and its checksum flag.

    litestream 0.5.17 writes every file with the no-checksum flag (pre- and post-apply checksums zero), so the
    WAL position is what chains one L0 file to the next: the same salts and `wal_offset` = the previous file's
    offset + size, or new salts (salt-1 one higher after a checkpoint restarted the WAL). Compacted files (L1+)
    carry no WAL position (zeros).
    """

    flags: int
    commit: int
    min_txid: int
    max_txid: int
    written_ms: int
    pre_apply_checksum: int
    wal_offset: int
    wal_size: int
    salt1: int
    salt2: int

    @property
    def salts(self) -> tuple[int, int]:
        return self.salt1, self.salt2


LINEAGE_BYTES = 80


def parse_ltx_lineage(data: bytes) -> LtxLineage:
    """The header's first 80 bytes, decoded whole; ValueError when they are not an LTX header."""
    if len(data) < LINEAGE_BYTES or data[:4] != LTX_MAGIC:
        raise ValueError(f"not an LTX header ({len(data)} bytes, starting {data[:4]!r})")
    flags, _page_size, commit, low, high, millis, pre, offset, size, salt1, salt2 = struct.unpack(
        ">IIIQQqQqqII", data[4 : LINEAGE_BYTES - 8]
    )
    return LtxLineage(flags, commit, low, high, millis, pre, offset, size, salt1, salt2)
