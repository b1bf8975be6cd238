"""The validator's operations surface: Prometheus metrics and a `/healthz` a supervisor can use.

`ValidatorMetrics` counts what the validator does from the events it already emits (batches,
verdicts with their findings, challenges, votes sealed and revealed) and how long each step takes.
`ops_app` serves ``/metrics`` and ``/healthz`` — 200 while steps keep succeeding, 503 before the
first one and when the last success is older than ``stale_after_s`` (a validator that cannot reach
the chain or the store is not healthy, even though its process runs). ``supernet validator run
--http-port`` starts it on the validator's own event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


@dataclass
class ValidatorMetrics:
    """The validator's metrics, in their own registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.batches = Counter("supernet_validator_batches", "Batches sampled", registry=r)
        self.receipts = Counter(
            "supernet_validator_receipts", "Receipts checked, by result", ["result"], registry=r
        )
        self.findings = Counter(
            "supernet_validator_findings", "Checks that failed, by check", ["check"], registry=r
        )
        self.challenges = Counter("supernet_validator_challenges", "Challenges opened", registry=r)
        self.votes = Counter("supernet_validator_votes", "Votes sealed, by verdict", ["fraud"], registry=r)
        self.reveals = Counter("supernet_validator_reveals", "Sealed votes revealed", registry=r)
        self.step_seconds = Histogram(
            "supernet_validator_step_seconds",
            "Time of one step (scan, verify, vote, settle)",
            registry=r,
            buckets=(0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
        )
        self.step_failures = Counter("supernet_validator_step_failures", "Steps that raised", registry=r)
        self.last_success = Gauge(
            "supernet_validator_last_success_timestamp", "Unix time of the last good step", registry=r
        )
        self.cursor = Gauge("supernet_validator_cursor_block", "Next block to scan", registry=r)

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Count one `ValidatorEvent` (``batch``, ``verdict``, ``challenge``, ``vote`` (sealed),
        ``reveal``)."""
        if kind == "batch":
            self.batches.inc()
        elif kind == "verdict":
            result = "unverifiable" if data.get("unverifiable") else "ok" if data.get("ok") else "faulty"
            self.receipts.labels(result=result).inc()
            for check in data.get("checks", ()):
                self.findings.labels(check=check).inc()
        elif kind == "challenge":
            self.challenges.inc()
        elif kind == "vote":
            self.votes.labels(fraud=str(bool(data.get("fraud"))).lower()).inc()
        elif kind == "reveal":
            self.reveals.inc()


@dataclass
class Health:
    """What `/healthz` reports; the validator updates it after each step."""

    address: str = ""
    ready: bool = False
    draining: bool = False
    last_success: float | None = None
    cursor: int | None = None
    last_error: str | None = None


def ops_app(metrics: ValidatorMetrics, health: Health, stale_after_s: float) -> FastAPI:
    """``/healthz`` and ``/metrics`` (nothing else: this port is for operators)."""
    app = FastAPI(title="Supernet validator", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        age = None if health.last_success is None else time.time() - health.last_success
        if health.draining:
            status = "draining"
        elif not health.ready or age is None:
            status = "starting"
        elif age > stale_after_s:
            status = "stalled"
        else:
            status = "ok"
        body = {
            "status": status,
            "validator": health.address,
            "cursor": health.cursor,
            "lastSuccessAgeS": None if age is None else round(age, 1),
            "lastError": health.last_error,
        }
        return JSONResponse(body, status_code=200 if status == "ok" else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
