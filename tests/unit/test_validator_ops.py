"""The validator's /healthz states and /metrics counting (`supernet.validator.ops`)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from supernet.validator.ops import Health, ValidatorMetrics, ops_app


def test_healthz_is_ready_only_while_steps_keep_succeeding() -> None:
    health, metrics = Health(address="0xv"), ValidatorMetrics()
    client = TestClient(ops_app(metrics, health, stale_after_s=30))
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json()["status"] == "starting"
    health.ready, health.last_success = True, time.time()
    assert client.get("/healthz").status_code == 200
    health.last_success, health.last_error = time.time() - 31, "ConnectError: chain unreachable"
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json()["status"] == "stalled" and "chain" in r.json()["lastError"]
    health.last_success, health.draining = time.time(), True
    assert client.get("/healthz").json()["status"] == "draining"


def test_metrics_count_the_validators_events() -> None:
    metrics = ValidatorMetrics()
    metrics.on_event("batch", {})
    metrics.on_event("verdict", {"ok": True, "checks": []})
    metrics.on_event("verdict", {"ok": False, "checks": ["llm.token", "replay"]})
    metrics.on_event("verdict", {"ok": False, "unverifiable": "trace unavailable", "checks": []})
    metrics.on_event("challenge", {})
    metrics.on_event("vote", {"fraud": True})
    metrics.on_event("reveal", {"fraud": True})
    text = TestClient(ops_app(metrics, Health(), 30)).get("/metrics").text
    for line in (
        "supernet_validator_batches_total 1.0",
        'supernet_validator_receipts_total{result="ok"} 1.0',
        'supernet_validator_receipts_total{result="faulty"} 1.0',
        'supernet_validator_receipts_total{result="unverifiable"} 1.0',
        'supernet_validator_findings_total{check="replay"} 1.0',
        "supernet_validator_challenges_total 1.0",
        'supernet_validator_votes_total{fraud="true"} 1.0',
        "supernet_validator_reveals_total 1.0",
    ):
        assert line in text, line
