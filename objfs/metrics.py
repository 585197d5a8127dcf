"""objfs.metrics — the node's Prometheus metrics, one registry per node.

Two kinds, both served at the admin listener's /metrics:

- **Events the faces count** as they happen: S3 requests by operation and
  status, their latency and bytes; FUSE operations and the errnos they
  answered. These are prometheus-client counters and histograms on `Metrics`,
  which the node hands to each face.
- **State the core already keeps** (WAL commits and flush latency, device I/O,
  space, checksum failures, erasure timings, scrub progress): read from the
  store at scrape time by `StoreCollector`, so the core stays free of any
  metrics library (objfs.store.stats holds its distributions). A scrape runs on
  the event loop, where that state lives; it only reads counters.

Names follow Prometheus' conventions: `objfs_` prefix, base units in the name
(`_seconds`, `_bytes`), `_total` on counters.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from objfs import __version__
from objfs.store import Store
from objfs.store.stats import Histogram as CoreHistogram

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# S3 request latency in seconds: a cached 4 KiB GET (~1 ms) to a multi-GiB PUT.
_REQUEST_BOUNDS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)


class Metrics:
    """The registry of one node and the counters its faces move."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.s3_requests = Counter(
            "objfs_s3_requests",
            "S3 requests answered, by operation and HTTP status",
            ["operation", "status"],
            registry=registry,
        )
        self.s3_request_seconds = Histogram(
            "objfs_s3_request_seconds",
            "Time from a request's headers to the end of its response body",
            ["operation"],
            buckets=_REQUEST_BOUNDS_S,
            registry=registry,
        )
        self.s3_received_bytes = Counter(
            "objfs_s3_received_bytes", "Request body bytes read", registry=registry
        )
        self.s3_sent_bytes = Counter(
            "objfs_s3_sent_bytes", "Response body bytes sent", registry=registry
        )
        self.fuse_operations = Counter(
            "objfs_fuse_operations",
            "FUSE requests handled, by operation",
            ["operation"],
            registry=registry,
        )
        self.fuse_errors = Counter(
            "objfs_fuse_errors",
            "FUSE requests answered with an error, by operation and errno name",
            ["operation", "errno"],
            registry=registry,
        )
        self._store_collector: StoreCollector | None = None

    def watch_store(self, store: Store) -> None:
        """Export what `store` keeps (until `forget_store`)."""
        self.forget_store()
        self._store_collector = StoreCollector(store)
        self.registry.register(self._store_collector)

    def forget_store(self) -> None:
        if self._store_collector is not None:
            self.registry.unregister(self._store_collector)
            self._store_collector = None

    def render(self) -> bytes:
        """The text exposition format (what /metrics answers)."""
        return generate_latest(self.registry)


class StoreCollector(Collector):
    """Reads the core's own counters and distributions at each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> list[Metric]:
        return []  # the families depend on the store's devices: no fixed description

    def collect(self) -> Iterator[Metric]:
        store = self.store
        info = GaugeMetricFamily(
            "objfs_build_info", "The objfs version and erasure policy", labels=["version", "policy"]
        )
        info.add_metric([__version__, store.policy.describe()], 1)
        yield info
        yield from self._wal()
        yield from self._devices()
        yield from self._health()
        yield from self._erasure()
        yield from self._scrub()
        stats = store.statistics()
        yield _gauge("objfs_buckets", "Buckets", stats.buckets)
        yield _gauge("objfs_objects", "Objects (latest versions)", stats.objects)
        yield _gauge("objfs_versions", "Object versions, delete markers included", stats.versions)
        yield _gauge("objfs_logical_bytes", "Bytes of every stored version", stats.logical_bytes)

    def _wal(self) -> Iterator[Metric]:
        wal = self.store.wal
        yield _counter("objfs_wal_commits", "WAL group commits (write + flush)", wal.batches)
        yield _counter("objfs_wal_records", "Records committed to the WAL", wal.records)
        yield _counter("objfs_wal_flushes", "WAL device flushes, one per mirror", wal.flushes)
        yield _histogram(
            "objfs_wal_commit_seconds",
            "Time to write and flush one group commit on every mirror",
            wal.commit_seconds,
        )
        yield _histogram("objfs_wal_batch_records", "Records per group commit", wal.batch_records)
        yield _gauge("objfs_wal_used_bytes", "WAL ring bytes not yet checkpointed", wal.used_bytes)
        yield _gauge("objfs_wal_size_bytes", "WAL ring size", wal.size_bytes)
        yield _counter(
            "objfs_checkpoints", "Checkpoints written since open", self.store.checkpoints
        )

    def _devices(self) -> Iterator[Metric]:
        store = self.store
        labels = ["device", "path"]
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            "size": GaugeMetricFamily("objfs_device_size_bytes", "Device size", labels=labels),
            "free": GaugeMetricFamily(
                "objfs_device_free_bytes", "Unallocated data space", labels=labels
            ),
            "used": GaugeMetricFamily(
                "objfs_device_used_bytes", "Allocated data space", labels=labels
            ),
            "read": CounterMetricFamily("objfs_device_read_bytes", "Bytes read", labels=labels),
            "written": CounterMetricFamily(
                "objfs_device_written_bytes", "Bytes written", labels=labels
            ),
            "flushes": CounterMetricFamily(
                "objfs_device_flushes", "fdatasync calls", labels=labels
            ),
            "errors": CounterMetricFamily(
                "objfs_device_io_errors", "Reads, writes and flushes that failed", labels=labels
            ),
        }
        up = GaugeMetricFamily(
            "objfs_device_up", "1 when the device is open and in use", labels=["device"]
        )
        allocators = store.space.allocators
        devices = store.devices
        for index in store.health.device_indexes:
            up.add_metric([str(index)], 0 if index in store.health.down else 1)
            device = devices.get(index)
            if device is None:
                continue
            key = [str(index), device.path]
            io = device.statistics()
            families["size"].add_metric(key, io.size_bytes)
            allocator = allocators.get(index)
            if allocator is not None:
                families["free"].add_metric(key, allocator.free_bytes)
                families["used"].add_metric(key, allocator.total_bytes - allocator.free_bytes)
            families["read"].add_metric(key, io.read_bytes)
            families["written"].add_metric(key, io.written_bytes)
            families["flushes"].add_metric(key, io.flushes)
            families["errors"].add_metric(key, io.io_errors)
        yield up
        yield from families.values()

    def _health(self) -> Iterator[Metric]:
        health = self.store.health.statistics()
        yield _counter(
            "objfs_checksum_failures",
            "Fragments that failed their checksum or a read",
            health.bad_fragments,
        )
        yield _counter(
            "objfs_degraded_reads",
            "Segments read with data fragments missing",
            health.degraded_reads,
        )
        yield _counter(
            "objfs_unreadable_segments",
            "Reads that met fewer than k intact fragments",
            health.unreadable_segments,
        )
        yield _counter(
            "objfs_healed_fragments", "Fragments rebuilt and written back", health.healed_fragments
        )
        yield _gauge("objfs_heal_queue", "Segments waiting to be healed", health.queued_heals)
        yield _gauge("objfs_degraded", "1 when a device is down or owed", int(health.degraded))

    def _erasure(self) -> Iterator[Metric]:
        datapath = self.store.datapath
        yield _histogram(
            "objfs_ec_encode_seconds",
            "Erasure encode of one segment, CRC32C of its fragments included",
            datapath.encode_seconds,
        )
        yield _histogram(
            "objfs_ec_decode_seconds",
            "Erasure decode of one segment that needed the codec",
            datapath.decode_seconds,
        )

    def _scrub(self) -> Iterator[Metric]:
        scrubber = self.store.scrubber
        yield _counter("objfs_scrub_passes", "Scrub and heal passes finished", scrubber.passes)
        yield _gauge(
            "objfs_scrub_segments_done",
            "Segments the pass under way has checked",
            scrubber.pass_done,
        )
        yield _gauge(
            "objfs_scrub_segments_total",
            "Segments the pass under way will check (0: no pass running)",
            scrubber.pass_total,
        )
        yield _counter(
            "objfs_scrub_repaired_fragments",
            "Fragments scrub passes found damaged and repaired",
            scrubber.fragments_repaired,
        )


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)


def _histogram(name: str, text: str, histogram: CoreHistogram) -> HistogramMetricFamily:
    buckets = [
        ("+Inf" if bound == float("inf") else repr(float(bound)), count)
        for bound, count in histogram.cumulative()
    ]
    return HistogramMetricFamily(name, text, buckets=buckets, sum_value=histogram.total)
