"""objfs.cluster.entries — what one Raft log entry holds, as plain bytes.

pysyncobj pickles the arguments of a replicated call into its log; objfs passes
only one `bytes` argument, so nothing but bytes is ever pickled or unpickled
from a peer, and the log's meaning never depends on Python classes:

    entry   = version:u8 kind:u8 origin:u16 tag:u64 body      (little-endian)
    RECORD  body = record_type:u8 payload   (objfs.store.records.encode_record)
    CATALOG body = UTF-8 JSON object        (objfs.cluster.catalog)
    BARRIER body = empty                    (a read barrier: see replication.py)

`origin` is the node number of the node that proposed the entry and `tag` a
random number it chose: together they let that node find its waiting caller
when the entry is applied, and let every node apply an entry proposed twice
(a retry after a leader change) only once.
"""

from __future__ import annotations

import enum
import json
import secrets
import struct
from dataclasses import dataclass
from typing import Any

from objfs.errors import Corrupted
from objfs.store.records import Record, decode_record, encode_record

VERSION = 1
_HEADER = struct.Struct("<BBHQ")


class Kind(enum.IntEnum):
    RECORD = 1
    CATALOG = 2
    BARRIER = 3  # changes nothing: once applied, so is everything committed before it


@dataclass(frozen=True, slots=True)
class Entry:
    kind: Kind
    origin: int
    tag: int
    body: bytes

    def record(self) -> Record:
        assert self.kind == Kind.RECORD
        return decode_record(self.body[0], self.body[1:])

    def change(self) -> dict[str, Any]:
        assert self.kind == Kind.CATALOG
        change = json.loads(self.body)
        if not isinstance(change, dict):
            raise Corrupted("a catalog entry that is not a JSON object")
        return change


def new_tag() -> int:
    return secrets.randbits(64)


def record_entry(origin: int, tag: int, record: Record) -> bytes:
    record_type, payload = encode_record(record)
    return _HEADER.pack(VERSION, Kind.RECORD, origin, tag) + bytes([record_type]) + payload


def catalog_entry(origin: int, tag: int, change: dict[str, Any]) -> bytes:
    body = json.dumps(change, sort_keys=True, separators=(",", ":")).encode()
    return _HEADER.pack(VERSION, Kind.CATALOG, origin, tag) + body


def barrier_entry(origin: int, tag: int) -> bytes:
    return _HEADER.pack(VERSION, Kind.BARRIER, origin, tag)


def decode(raw: bytes) -> Entry:
    """Raises Corrupted: not an entry this version of objfs writes."""
    if len(raw) < _HEADER.size:
        raise Corrupted(f"a {len(raw)}-byte Raft entry is too short")
    version, kind, origin, tag = _HEADER.unpack_from(raw)
    if version != VERSION:
        raise Corrupted(f"a Raft entry of version {version} (this objfs writes {VERSION})")
    try:
        return Entry(Kind(kind), origin, tag, raw[_HEADER.size :])
    except ValueError:
        raise Corrupted(f"a Raft entry of unknown kind {kind}") from None
