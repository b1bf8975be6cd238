"""The published OpenAPI document is current, and the sample config loads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from supernet.node.service.config import NodeSettings

ROOT = Path(__file__).resolve().parents[2]


def test_openapi_json_is_current() -> None:
    spec = importlib.util.spec_from_file_location("gen_openapi", ROOT / "scripts" / "gen_openapi.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    committed = (ROOT / "docs" / "openapi.json").read_text()
    assert committed == mod.render(), "docs/openapi.json is stale: run `python scripts/gen_openapi.py`"
    paths = json.loads(committed)["paths"]
    task = "/v1/tasks/{task_id}"
    for route in (
        "/v1/tasks",
        task,
        f"{task}/receipt",
        f"{task}/events",
        "/v1/chat/completions",
        "/v1/models",
        "/healthz",
        "/metrics",
    ):
        assert route in paths


def test_sample_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = NodeSettings.load(ROOT / "node" / "node.example.toml")
    assert settings.api.port == 8700 and settings.chain.enabled is False
    assert settings.identity.private_key is None  # no secret in the sample
    monkeypatch.setenv("SUPERNET_API__PORT", "9001")
    assert NodeSettings.load(ROOT / "node" / "node.example.toml").api.port == 9001


def test_chain_settings_required_only_when_enabled() -> None:
    with pytest.raises(ValueError, match=r"chain\.rpc_url"):
        NodeSettings.load(None, chain={"enabled": True})
    with pytest.raises(ValueError, match="identity"):
        NodeSettings.load(None, chain={"enabled": True, "rpc_url": "http://x", "deployment": "d.json"})
    ok = NodeSettings.load(
        None,
        chain={"enabled": True, "rpc_url": "http://x", "deployment": "d.json"},
        identity={"key_file": "k"},
    )
    assert ok.chain.enabled
