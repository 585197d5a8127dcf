"""objfs.store.erasure — the erasure-coding policy of a node and the codecs that apply it.

A segment (one stripe) is stored as k data fragments plus m parity fragments, each
on a different device; any k of them rebuild the segment. This module owns:

- `Policy`: k, m and the scheme, chosen from the config and the device count and
  validated at load (the documented defaults are in `default_shape`);
- the codecs: `Replicas` (k = 1: every fragment is a whole copy, no pyeclib) and
  `PyECLib` (k >= 2: Reed-Solomon through pyeclib, ISA-L where the wheel has it);
- `tune_malloc`, the glibc settings without which ISA-L runs ~15x slower.

Codec calls are pure and CPU-bound; pyeclib holds the GIL, so the caller runs them
in a worker thread on bounded segments (about 1 MiB per fragment). A stored
fragment records its scheme, so a node whose config changes still reads what it
wrote before. No I/O.
"""

from __future__ import annotations

import bisect
import ctypes
import ctypes.util
import functools
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, final

import crc32c

from objfs.errors import ConfigError, Corrupted

log = logging.getLogger(__name__)

# Scheme numbers are stored with every segment (docs/format.md): never renumber.
SCHEME_REPLICAS = 0  # k = 1: each fragment is the segment's bytes
SCHEME_ISA_L_RS_VAND = 1
SCHEME_ISA_L_RS_CAUCHY = 2
SCHEME_LIBERASURECODE_RS_VAND = 3
BACKENDS = {
    SCHEME_ISA_L_RS_VAND: "isa_l_rs_vand",
    SCHEME_ISA_L_RS_CAUCHY: "isa_l_rs_cauchy",
    SCHEME_LIBERASURECODE_RS_VAND: "liberasurecode_rs_vand",
}
SCHEME_NAMES = {SCHEME_REPLICAS: "replicas", **BACKENDS}

MAX_FRAGMENTS = 32  # k + m; also bounded by the node's device count
MAX_VANDERMONDE_PARITY = 4  # above this plain Vandermonde may not decode every pattern

_SHAPE = re.compile(r"(\d+)\+(\d+)")


def default_shape(device_count: int) -> tuple[int, int]:
    """k and m for a node of `device_count` devices, when the config says "auto".

    1 device: 1+0 (no parity); 2: 1+1 (a mirror); 3: 2+1; 4: 2+2; 5: 3+2; 6 or
    more: 4+2. Every shape with 4+ devices survives the loss of any two.
    """
    if device_count <= 0:
        raise ValueError("a node has at least one device")
    table = {1: (1, 0), 2: (1, 1), 3: (2, 1), 4: (2, 2), 5: (3, 2)}
    return table.get(device_count, (4, 2))


@dataclass(frozen=True, slots=True)
class Policy:
    """How new segments are stored: k data + m parity fragments with one scheme."""

    data_fragments: int  # k
    parity_fragments: int  # m
    scheme: int

    @property
    def width(self) -> int:
        return self.data_fragments + self.parity_fragments

    @property
    def write_quorum(self) -> int:
        """Fragments that must be on disk before a segment counts as written: k.

        A segment written with fewer than k+m (devices down) is readable and owes
        the rest to heal; below k it would not be readable at all."""
        return self.data_fragments

    def describe(self) -> str:
        return f"{self.data_fragments}+{self.parity_fragments} ({SCHEME_NAMES[self.scheme]})"


def choose_policy(shape: str, backend: str, device_count: int) -> Policy:
    """The policy for a node, from `store.ec_policy` and `store.ec_backend`.

    Args:
        shape: "auto" or "K+M" (e.g. "4+2").
        backend: "auto" or a pyeclib backend name from `BACKENDS`.

    Raises:
        ConfigError: naming the key, when the shape is malformed or does not fit the
            devices, or the backend is unknown or not installed.
    """
    if shape == "auto":
        k, m = default_shape(device_count)
    else:
        match = _SHAPE.fullmatch(shape.strip())
        if match is None:
            raise ConfigError(f'store.ec_policy: {shape!r} is not "auto" or "K+M" like "4+2"')
        k, m = int(match.group(1)), int(match.group(2))
    if k < 1:
        raise ConfigError("store.ec_policy: needs at least one data fragment")
    if k > 1 and m == 0:
        raise ConfigError(
            f"store.ec_policy: {k}+0 stripes over devices with no parity (one lost device "
            "would lose every object); use 1+0, or add parity"
        )
    if k + m > MAX_FRAGMENTS:
        raise ConfigError(
            f"store.ec_policy: {k}+{m} makes stripes of {k + m} fragments; at most "
            f"{MAX_FRAGMENTS} are supported"
        )
    if k + m > device_count:
        raise ConfigError(
            f"store.ec_policy: {k}+{m} needs {k + m} devices (each fragment on its own "
            f"device), and this node has {device_count}"
        )
    if k == 1:
        if backend not in ("auto", "replicas"):
            raise ConfigError(
                f"store.ec_backend: {k}+{m} keeps whole copies; it takes no backend "
                f'(set "auto", not {backend!r})'
            )
        return Policy(1, m, SCHEME_REPLICAS)
    return Policy(k, m, _choose_scheme(backend, m))


def _choose_scheme(backend: str, parity: int) -> int:
    by_name = {name: scheme for scheme, name in BACKENDS.items()}
    if backend != "auto":
        if backend not in by_name:
            raise ConfigError(
                f"store.ec_backend: {backend!r} is not one of auto, {', '.join(by_name)}"
            )
        scheme = by_name[backend]
        if scheme != SCHEME_ISA_L_RS_CAUCHY and parity > MAX_VANDERMONDE_PARITY:
            raise ConfigError(
                f"store.ec_backend: {backend} cannot decode every loss of {parity} "
                "fragments; use isa_l_rs_cauchy for more than "
                f"{MAX_VANDERMONDE_PARITY} parity fragments"
            )
        if not backend_available(scheme):
            raise ConfigError(f"store.ec_backend: {backend} is not available in this pyeclib")
        return scheme
    preferred = SCHEME_ISA_L_RS_CAUCHY if parity > MAX_VANDERMONDE_PARITY else SCHEME_ISA_L_RS_VAND
    if backend_available(preferred):
        return preferred
    if parity <= MAX_VANDERMONDE_PARITY and backend_available(SCHEME_LIBERASURECODE_RS_VAND):
        log.warning(
            "ISA-L is not available: erasure coding falls back to liberasurecode_rs_vand, "
            "about ten times slower"
        )
        return SCHEME_LIBERASURECODE_RS_VAND
    raise ConfigError(
        "store.ec_backend: no usable pyeclib backend (install pyeclib with ISA-L, or use "
        "a 1+M policy, which needs none)"
    )


@functools.cache
def backend_available(scheme: int) -> bool:
    try:
        _driver(scheme, 2, 1)
    except Exception:  # pyeclib raises its own hierarchy, or ImportError
        return False
    return True


@functools.cache
def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds (32 MiB, 256 MiB) and cap its arenas
    (2), once per process, before worker threads make arenas of their own.

    Without them every ~1 MiB buffer pyeclib allocates is a fresh mmap and munmap
    and ISA-L encodes at ~0.5 GB/s instead of ~6-8 GB/s (../shared/FACTS.md).
    Returns whether the settings took (False off glibc).
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    ok = bool(mallopt(m_mmap_threshold, 32 * 1024 * 1024))
    ok = bool(mallopt(m_trim_threshold, 256 * 1024 * 1024)) and ok
    # With those thresholds every worker thread's arena keeps its freed segment
    # buffers: RSS plateaus 100+ MiB higher. Few arenas keep it flat.
    ok = bool(mallopt(m_arena_max, 2)) and ok
    if not ok:
        log.warning("mallopt refused the thresholds: erasure coding may run slowly")
    return ok


@final
class SegmentBytes:
    """A segment's bytes as a few buffers end to end: the payloads of its data
    fragments as read, so a healthy read of an erasure-coded segment copies
    nothing until the caller slices out what it returns (one copy, of that range).

    Slicing (`data[start:stop]`, step 1) gives `bytes`, like slicing `bytes`.
    """

    __slots__ = ("_ends", "_parts", "_size")

    def __init__(self, parts: Sequence[bytes | memoryview], size_bytes: int) -> None:
        self._parts: list[memoryview] = []
        self._ends: list[int] = []
        end = 0
        for part in parts:
            view = memoryview(part)[: max(size_bytes - end, 0)]
            if not view.nbytes:
                break
            end += view.nbytes
            self._parts.append(view)
            self._ends.append(end)
        self._size = end

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, key: slice) -> bytes:
        start, stop, step = key.indices(self._size)
        if step != 1:
            raise ValueError("SegmentBytes slices take no step")
        if start >= stop:
            return b""
        first = bisect.bisect_right(self._ends, start)
        chunks = []
        position = self._ends[first] - self._parts[first].nbytes
        for index in range(first, len(self._parts)):
            part = self._parts[index]
            if position >= stop:
                break
            chunks.append(part[max(start - position, 0) : stop - position])
            position += part.nbytes
        return bytes(chunks[0]) if len(chunks) == 1 else b"".join(chunks)

    def tobytes(self) -> bytes:
        return self[0 : self._size]


class Codec(Protocol):
    """Turns a segment's bytes into k+m fragments and back."""

    data_fragments: int
    parity_fragments: int

    def encode(self, data: bytes | memoryview) -> list[bytes]: ...

    def decode(self, fragments: Mapping[int, bytes], size_bytes: int) -> bytes: ...

    def reconstruct(
        self, fragments: Mapping[int, bytes], missing: Sequence[int]
    ) -> list[bytes]: ...


class Replicas:
    """k = 1: every fragment is a whole copy of the segment."""

    data_fragments = 1

    def __init__(self, parity_fragments: int) -> None:
        self.parity_fragments = parity_fragments

    def encode(self, data: bytes | memoryview) -> list[bytes]:
        copy = bytes(data)
        return [copy] * (1 + self.parity_fragments)

    def decode(self, fragments: Mapping[int, bytes], size_bytes: int) -> bytes:
        if not fragments:
            raise Corrupted("no copy of the segment is left")
        return next(iter(fragments.values()))[:size_bytes]

    def reconstruct(self, fragments: Mapping[int, bytes], missing: Sequence[int]) -> list[bytes]:
        if not fragments:
            raise Corrupted("no copy of the segment is left")
        copy = next(iter(fragments.values()))
        return [copy for _ in missing]


class PyECLib:
    """Reed-Solomon through pyeclib; fragments carry pyeclib's own small header."""

    def __init__(self, scheme: int, data_fragments: int, parity_fragments: int) -> None:
        self.scheme = scheme
        self.data_fragments = data_fragments
        self.parity_fragments = parity_fragments
        self._driver = _driver(scheme, data_fragments, parity_fragments)
        self.header_bytes, self.systematic = self._layout()

    def _layout(self) -> tuple[int, bool]:
        """The size of pyeclib's fragment header, and whether data fragment i holds
        bytes [i*p, (i+1)*p) of the segment right after it (p: its payload size).
        Then a read of a range needs only the data fragments that hold it."""
        sample = bytes(range(256)) * (self.data_fragments * 7) + b"objfs"
        fragments = self._driver.encode(sample)
        payload = int(self._driver.get_metadata(fragments[0], formatted=True)["size"])
        header = len(fragments[0]) - payload
        joined = b"".join(f[header:] for f in fragments[: self.data_fragments])
        return header, joined[: len(sample)] == sample

    def fragment_bytes(self, size_bytes: int) -> int:
        """The length of every fragment `encode` makes of `size_bytes` bytes."""
        info = self._driver.get_segment_info(size_bytes, max(size_bytes, 1))
        return int(info["fragment_size"])

    def encode(self, data: bytes | memoryview) -> list[bytes]:
        fragments: list[bytes] = self._driver.encode(bytes(data))
        return fragments

    def _chosen(self, fragments: Mapping[int, bytes]) -> list[bytes]:
        """k of the intact fragments, lowest numbers first (data before parity)."""
        if len(fragments) < self.data_fragments:
            raise Corrupted(
                f"only {len(fragments)} of the {self.data_fragments} fragments a segment "
                "needs are intact"
            )
        return [fragments[i] for i in sorted(fragments)[: self.data_fragments]]

    def decode(self, fragments: Mapping[int, bytes], size_bytes: int) -> bytes:
        chosen = self._chosen(fragments)
        try:
            data: bytes = self._driver.decode(chosen)
        except Exception as exc:  # pyeclib's ECDriverError family
            raise Corrupted(f"erasure decode failed: {exc}") from exc
        if len(data) != size_bytes:
            raise Corrupted(f"erasure decode gave {len(data)} bytes, not {size_bytes}")
        return data

    def reconstruct(self, fragments: Mapping[int, bytes], missing: Sequence[int]) -> list[bytes]:
        chosen = self._chosen(fragments)
        try:
            rebuilt: list[bytes] = self._driver.reconstruct(chosen, list(missing))
        except Exception as exc:
            raise Corrupted(f"erasure reconstruct failed: {exc}") from exc
        return rebuilt


def can_assemble_without_decode(codec: Codec, fragments: Mapping[int, bytes]) -> bool:
    """Whether `assemble` needs no pyeclib call: all k data fragments of a systematic
    code are there (their payloads, end to end, are the segment)."""
    return (
        isinstance(codec, PyECLib)
        and codec.systematic
        and all(n in fragments for n in range(codec.data_fragments))
    )


def assemble(codec: Codec, fragments: Mapping[int, bytes], size_bytes: int) -> bytes | SegmentBytes:
    """A segment's bytes from intact (checksum-verified) fragments: the data
    fragments' payloads as they are when all are there (no copy), else a decode
    (pyeclib holds the GIL: run that in a worker thread)."""
    if isinstance(codec, PyECLib) and can_assemble_without_decode(codec, fragments):
        header = codec.header_bytes
        return SegmentBytes(
            [memoryview(fragments[n])[header:] for n in range(codec.data_fragments)], size_bytes
        )
    return codec.decode(fragments, size_bytes)


def encode_with_checksums(codec: Codec, data: bytes | memoryview) -> tuple[list[bytes], list[int]]:
    """The fragments of a segment and the CRC32C of each: what the data path runs
    in a worker thread for every stripe it writes."""
    fragments = codec.encode(data)
    return fragments, [int(crc32c.crc32c(fragment)) for fragment in fragments]


@functools.cache
def _driver(scheme: int, data_fragments: int, parity_fragments: int) -> Any:
    from pyeclib.ec_iface import ECDriver  # imported late: only erasure-coded nodes need it

    tune_malloc()
    return ECDriver(k=data_fragments, m=parity_fragments, ec_type=BACKENDS[scheme])


@functools.cache
def codec(scheme: int, data_fragments: int, parity_fragments: int) -> Codec:
    """The codec for stored segments of this shape (cached per process).

    Raises:
        Corrupted: the scheme is unknown or its backend is missing here, so the
            segment cannot be decoded on this machine.
    """
    if scheme == SCHEME_REPLICAS:
        if data_fragments != 1:
            raise Corrupted(f"a replicated segment has one data fragment, not {data_fragments}")
        return Replicas(parity_fragments)
    if scheme not in BACKENDS:
        raise Corrupted(f"segment uses unknown erasure scheme {scheme}")
    try:
        return PyECLib(scheme, data_fragments, parity_fragments)
    except Exception as exc:
        raise Corrupted(
            f"segment needs pyeclib backend {BACKENDS[scheme]} ({data_fragments}+"
            f"{parity_fragments}), which is not usable here: {exc}"
        ) from exc
