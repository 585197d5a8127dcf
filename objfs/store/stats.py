"""objfs.store.stats — distributions the core keeps about itself, for whoever reads them.

The core counts (plain ints on the objects that do the work: `Wal.batches`,
`HealthMonitor.bad_fragments`, a device's I/O errors) and keeps a few
distributions here: WAL commit latency and batch sizes, erasure encode and
decode times. It never exports them; `objfs.metrics` reads them at scrape time,
so the core needs no metrics library and pays one list update per observation.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

# Seconds: from a fast NVMe flush (~50 us) to a stalled disk.
LATENCY_BOUNDS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
# Records per group commit: 1 when idle, up to hundreds under many writers.
BATCH_BOUNDS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class Histogram:
    """Counts of observations at or under each bound (not cumulative), plus the rest."""

    bounds: Sequence[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    observations: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.observations += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations at or under it), ending with +inf: Prometheus' shape."""
        running, out = 0, []
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


def latency_histogram() -> Histogram:
    return Histogram(LATENCY_BOUNDS_S)


def batch_histogram() -> Histogram:
    return Histogram(BATCH_BOUNDS)
