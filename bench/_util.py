"""Helpers shared by the bench_*.py scripts: scratch directories, summaries, printing.

Not a benchmark itself (run_all.py runs only bench_*.py). Every figure a script
prints is a median over repeated measurements with its min and max beside it.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

DEFAULT_BASE_DIR = "/var/tmp"
MB = 1_000_000  # throughputs are printed in MB/s (10^6 bytes), sizes in MiB


@dataclass(frozen=True, slots=True)
class Summary:
    """Median, min and max of repeated measurements of one figure."""

    median: float
    low: float
    high: float
    count: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("no measurements to summarise")
        return cls(statistics.median(values), min(values), max(values), len(values))

    def show(self, digits: int = 0, unit: str = "") -> str:
        suffix = f" {unit}" if unit else ""
        return (
            f"{self.median:,.{digits}f}{suffix} "
            f"(min {self.low:,.{digits}f}, max {self.high:,.{digits}f}, n={self.count})"
        )


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: percentile(v, 0.99) is the value 99 % of `v` do not exceed."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered) - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def verdict(ratio: float, target: float) -> str:
    """A label for a ratio against its target; never an assertion."""
    return "meets target" if ratio >= target else "BELOW target"


def print_row(name: str, value: str) -> None:
    print(f"  {name:<44} {value}", flush=True)


@contextmanager
def scratch_dir(base: str, prefix: str) -> Iterator[str]:
    """A fresh directory under `base` (default /var/tmp: a disk, not tmpfs), removed at exit."""
    os.makedirs(base, exist_ok=True)
    path = tempfile.mkdtemp(prefix=prefix, dir=base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def rss_bytes() -> int:
    """The resident set size of this process now (Linux /proc)."""
    with open("/proc/self/statm") as file:
        resident_pages = int(file.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """The highest resident set size of this process so far (VmHWM)."""
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not in /proc/self/status")


def md5_rate(data: memoryview, block_bytes: int) -> float:
    """MB/s of MD5 over `data` in `block_bytes` updates, on this thread."""
    digest = hashlib.md5()
    start = time.perf_counter()
    for offset in range(0, len(data), block_bytes):
        digest.update(data[offset : offset + block_bytes])
    digest.hexdigest()
    return len(data) / (time.perf_counter() - start) / MB


@dataclass
class Rounds:
    """Per-round figures, keyed by name; summaries and per-round ratios of them."""

    figures: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.figures.setdefault(name, []).append(value)

    def of(self, name: str) -> Summary:
        return Summary.of(self.figures[name])

    def ratio(self, numerator: str, denominator: str) -> Summary:
        pairs = zip(self.figures[numerator], self.figures[denominator], strict=True)
        return Summary.of([n / d for n, d in pairs])


def precondition(paths: list[str], size_bytes: int) -> None:
    """Write every block of every file once (O_DIRECT), so no extent is 'unwritten'."""
    block = mmap.mmap(-1, 8 * 1024 * 1024)  # page-aligned, as O_DIRECT wants
    try:
        for path in paths:
            fd = os.open(path, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
            try:
                for offset in range(0, size_bytes, len(block)):
                    length = min(len(block), size_bytes - offset)
                    os.pwritev(fd, [memoryview(block)[:length]], offset)
                os.fdatasync(fd)
            finally:
                os.close(fd)
    finally:
        block.close()
