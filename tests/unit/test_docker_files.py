"""The docker/ files, checked without a Docker engine (none runs on these machines).

Every path they name exists, every ``supernet`` command they run parses with today's CLI, and
every ``SUPERNET_*`` variable they set lands in the setting it is meant for.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return doc


def supernet_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if svc.get("image") == "supernet:latest"}


def test_compose_build_contexts_and_dockerfile_exist() -> None:
    for name, svc in supernet_services().items():
        build = svc["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build["dockerfile"]).is_file(), name


def test_dockerfile_copies_only_existing_paths() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    sources = [s for line in re.findall(r"^COPY (.+)$", text, re.M) for s in line.split()[:-1]]
    assert sources, "no COPY lines found"
    for src in sources:
        assert (ROOT / src).exists(), src


def test_dockerfile_pins_torch_like_the_project() -> None:
    assert "torch==2.13.0" in (DOCKER / "Dockerfile").read_text()
    assert '"torch==2.13.0"' in (ROOT / "node" / "pyproject.toml").read_text()


@pytest.mark.parametrize("service", sorted(supernet_services()))
def test_compose_commands_parse_with_the_cli(service: str) -> None:
    command = supernet_services()[service]["command"]
    words = [w for w in command if not w.startswith("-")]
    path = [w for w in words if re.fullmatch(r"[a-z]+", w)][:2]
    out = subprocess.run(
        [sys.executable, "-m", "supernet.sdk.cli", *path, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    for option in (w for w in command if w.startswith("--")):
        assert option in out.stdout, f"{service}: `supernet {' '.join(path)}` has no {option}"


def _env(svc: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in svc.get("environment", {}).items()}


def test_node_environment_reaches_node_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from supernet.node.service.config import NodeSettings

    for name, svc in supernet_services().items():
        env = _env(svc)
        if not any(k.startswith("SUPERNET_CHAIN__") for k in env):
            continue
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("SUPERNET_IDENTITY__PRIVATE_KEY", "0x" + "11" * 32)
        settings = NodeSettings.load()
        for key, value in env.items():
            obj: Any = settings
            for part in key.removeprefix("SUPERNET_").lower().split("__"):
                obj = getattr(obj, part)
            assert str(obj).lower() == value.lower(), f"{name}: {key}"


def test_validator_environment_reaches_validator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from supernet.validator.config import ValidatorSettings

    for name, svc in supernet_services().items():
        env = _env(svc)
        if not any(k.startswith("SUPERNET_VALIDATOR_") for k in env):
            continue
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("SUPERNET_VALIDATOR_CHAIN__KEY", "0x" + "11" * 32)
        settings = ValidatorSettings.from_toml(None)
        for key, value in env.items():
            obj: Any = settings
            for part in key.removeprefix("SUPERNET_VALIDATOR_").lower().split("__"):
                obj = getattr(obj, part)
            assert str(obj) == value, f"{name}: {key}"


def test_every_long_running_service_has_a_healthcheck_and_the_store_rpc_stays_private() -> None:
    services = compose()["services"]
    for name, svc in services.items():
        if name != "deployer":  # a one-shot job
            assert "healthcheck" in svc, f"{name} has no healthcheck"
    published = [p.split(":")[-1] for p in services["kubo"].get("ports", [])]
    assert "5001" not in published, "Kubo's RPC API (it can delete blocks) must not be published"
    for name in ("node1", "node2", "validator1", "validator2", "explorer"):
        mounts = [v.split(":")[0] for v in services[name]["volumes"]]
        assert any(m in compose()["volumes"] and m != "deployment" for m in mounts), f"{name}: no data volume"
