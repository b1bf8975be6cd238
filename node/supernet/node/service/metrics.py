"""Prometheus metrics of the node (served at ``/metrics``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class NodeMetrics:
    """The node's metrics, in their own registry (so tests can build several apps)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter("supernet_http_requests", "HTTP requests", ["route", "status"], registry=r)
        self.tasks_admitted = Counter("supernet_tasks_admitted", "Paid tasks admitted", registry=r)
        self.tasks_rejected = Counter("supernet_tasks_rejected", "Paid tasks refused", ["code"], registry=r)
        self.tasks_finished = Counter("supernet_tasks_finished", "Tasks finished", ["status"], registry=r)
        self.task_seconds = Histogram(
            "supernet_task_seconds",
            "Task run time",
            registry=r,
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
        )
        self.batches_committed = Counter(
            "supernet_batches_committed", "Receipt batches committed", registry=r
        )
        self.receipts_committed = Counter("supernet_receipts_committed", "Receipts committed", registry=r)
        self.redeemed_wei = Counter("supernet_redeemed_wei", "Wei redeemed from vouchers", registry=r)
        self.pending_receipts = Gauge("supernet_pending_receipts", "Receipts waiting for a batch", registry=r)
        self.fault_tasks = Gauge(
            "supernet_fault_tasks", "Tasks an injected --fault fired on (test networks only)", registry=r
        )
        self.request_seconds = Histogram(
            "supernet_http_request_seconds",
            "HTTP request latency (to the response's first byte for streams)",
            ["route"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self._engine = {
            name: Gauge(f"supernet_engine_{name}", help_, registry=r)
            for name, help_ in (
                ("active", "Sequences in the engine's running batch"),
                ("waiting", "Sequences waiting for a batch slot"),
                ("steps", "Decode steps run (a counter, as a gauge of the engine's own count)"),
                ("sequence_steps", "Tokens produced (sequence-steps) since the engine started"),
                ("kv_cache_bytes", "Bytes of KV cache reserved (on CPU resident only once written)"),
                ("kv_releases", "Times the idle engine gave its KV cache's memory back"),
            )
        }

    def watch_faults(self, fired: Callable[[], int]) -> None:
        """Export how many tasks an injected fault (``--fault``) fired on: test networks only."""
        self.fault_tasks.set_function(lambda: float(fired()))

    def watch_engine(self, stats: Callable[[], dict[str, int]]) -> None:
        """Read the engine's numbers at every scrape (``LLMEngine.load_stats``)."""
        for name, gauge in self._engine.items():
            gauge.set_function(functools.partial(_stat, stats, name))


METRICS = NodeMetrics()
"""The process's metrics."""


def _stat(stats: Callable[[], dict[str, int]], name: str) -> float:
    return float(stats().get(name, 0))
