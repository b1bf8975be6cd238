"""The docker/ files and .dockerignore, checked without a Docker engine (none runs on these machines).

Every path they name exists, every ``supernet`` command they run parses with today's CLI, every
``SUPERNET_*`` variable they set lands in the setting it is meant for, the compose files are valid
against the Compose Specification's JSON schema, keys arrive only as secrets, the image is a slim
non-root one, and a GPU is asked for only by the override file.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
APP_UID = "10001"  # the image's user (docker/Dockerfile), who must be able to read the key files


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DOCKER / name).read_text())
    return doc


def dockerfile_stages() -> list[str]:
    """The Dockerfile's stages (the text from each ``FROM`` to the next); the last is the image."""
    text = (DOCKER / "Dockerfile").read_text()
    return re.split(r"^(?=FROM )", text, flags=re.M)[1:]


def supernet_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose()["services"].items() if svc.get("image") == "supernet:latest"}


def test_compose_build_contexts_and_dockerfile_exist() -> None:
    for name, svc in supernet_services().items():
        build = svc["build"]
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build["dockerfile"]).is_file(), name


def _copy_sources() -> list[str]:
    """Build-context paths the Dockerfile copies (``COPY --from=stage`` reads a stage, not the context)."""
    text = (DOCKER / "Dockerfile").read_text()
    lines = [line for line in re.findall(r"^COPY (.+)$", text, re.M) if "--from=" not in line]
    return [s for line in lines for s in line.split()[:-1] if not s.startswith("--")]


def test_dockerfile_copies_only_existing_paths() -> None:
    sources = _copy_sources()
    assert sources, "no COPY lines found"
    for src in sources:
        assert (ROOT / src).exists(), src


def test_dockerfile_pins_torch_like_the_project() -> None:
    assert "torch==2.13.0" in dockerfile_stages()[-1]
    assert '"torch==2.13.0"' in (ROOT / "node" / "pyproject.toml").read_text()


def test_image_is_built_from_wheels_and_runs_slim_and_not_as_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a builder stage makes the wheels, the last stage installs them"
    assert "pip wheel" in "".join(stages[:-1])
    final = stages[-1]
    text = (DOCKER / "Dockerfile").read_text()
    assert "pip install -e" not in text and "--editable" not in text
    assert re.search(r"PYTHON_IMAGE=python:3\.11-slim", text) and "FROM ${PYTHON_IMAGE}" in final
    # no compilers, no Node.js toolchain, no sources in the image: only the wheels from the builder
    assert not re.search(r"apt-get install|\bnpm\b|build-essential|\bgcc\b", final)
    assert not re.findall(r"^COPY (?!--from=)", final, re.M), "the image copies nothing from the context"
    assert re.search(r"from=builder.*/wheels", final) and "/wheels/*.whl" in final
    users = re.findall(r"^USER (\S+)", final, re.M)
    assert users, "the image must not run as root"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0") and uid == APP_UID, users
    assert re.search(rf"useradd .*--uid {APP_UID}\b", final)
    # the last USER comes after every RUN that needs root (installs, the model pull)
    assert final.rindex("USER ") > final.rindex("RUN ")
    assert re.search(r"ENTRYPOINT \[\"supernet\"\]", final)


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
        settings = NodeSettings.load()  # the key: identity.key_file, a compose secret
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
        settings = ValidatorSettings.from_toml(None)  # the key: chain.key_file, a compose secret
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


def test_keys_reach_services_only_as_secrets_their_loaders_accept() -> None:
    doc = compose()
    top = doc.get("secrets", {})
    for name, svc in doc["services"].items():
        for key in _env(svc):
            assert not re.search(r"PRIVATE_KEY$|CHAIN__KEY$|PASSWORD$", key), f"{name}: a key in {key}"
        assert "env_file" not in svc, f"{name}: keys come as secrets, not env files"
        key_files = {v for k, v in _env(svc).items() if k.endswith(("KEY_FILE", "KEYSTORE", "PASSWORD_FILE"))}
        mounted = set()
        for ref in svc.get("secrets", []):
            assert isinstance(ref, dict), f"{name}: use the long syntax (uid, gid, mode)"
            assert ref["source"] in top, f"{name}: secret {ref['source']} is not declared"
            source = (DOCKER / top[ref["source"]]["file"]).resolve()
            assert source.parent == DOCKER / "secrets", f"{name}: {source} is not under docker/secrets"
            assert ref["mode"] == 0o400, f"{name}: the key loaders refuse group/other-readable files"
            assert ref["uid"] == ref["gid"] == APP_UID, f"{name}: the image's user must own its key"
            target: str = ref.get("target") or ref["source"]
            mounted.add(target if target.startswith("/") else f"/run/secrets/{target}")
        assert key_files <= mounted, f"{name}: {key_files - mounted} is not a mounted secret"
        if name in ("node1", "node2", "validator1", "validator2"):
            assert key_files and mounted, f"{name} has no key secret"
    # the secret files themselves stay out of git and out of the build context
    ignored = (DOCKER / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignored
    for spec in top.values():
        assert _excluded_from_context(str((DOCKER / spec["file"]).resolve().relative_to(ROOT)))


def test_key_secret_files_load_with_the_key_loaders(tmp_path: Path) -> None:
    """A secret as compose mounts it (owner-only mode) is accepted; the default 0444 is refused."""
    from supernet.sdk.keys import KeyLoadError, load_account

    path = tmp_path / "node_key"
    path.write_text("0x" + "11" * 32 + "\n")
    path.chmod(compose()["services"]["node1"]["secrets"][0]["mode"])
    assert load_account(key_file=path).address.startswith("0x")
    path.chmod(0o444)  # what compose would give without `mode:`
    with pytest.raises(KeyLoadError, match="chmod 600"):
        load_account(key_file=path)


def test_gpu_is_reserved_only_by_the_override() -> None:
    def devices(doc: dict[str, Any]) -> list[Any]:
        return [
            d
            for svc in doc["services"].values()
            for d in svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        ]

    base = compose()
    assert not devices(base) and "gpu" not in json.dumps(base).lower(), "compose.yaml must run on a CPU host"
    assert not any("profiles" in svc for svc in base["services"].values())
    gpu = compose("compose.gpu.yaml")
    assert set(gpu["services"]) <= {"node1", "node2"} and gpu["services"], "only nodes take a GPU"
    for name, svc in gpu["services"].items():
        assert name in base["services"], f"the override names an unknown service {name}"
        reserved = svc["deploy"]["resources"]["reservations"]["devices"]
        assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in reserved), name
        assert svc["image"] != "supernet:latest", (
            f"{name}: the CUDA build must not replace the CPU image's tag"
        )
        assert (DOCKER / svc["build"]["context"]).resolve() == ROOT
        assert svc["build"]["args"]["TORCH_PIP_ARGS"] == ""  # PyPI's torch wheel (with CUDA)
    assert "ARG TORCH_PIP_ARGS=" in dockerfile_stages()[-1]


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _matches(pattern: str, path: str) -> bool:
    """Whether a .dockerignore pattern matches ``path`` or a folder above it (``**/`` at any depth)."""
    parts = path.split("/")
    pat = pattern.removeprefix("**/")
    for end in range(1, len(parts) + 1):
        starts = range(end) if pattern.startswith("**/") else [0]
        if any(fnmatch.fnmatchcase("/".join(parts[s:end]), pat) for s in starts):
            return True
    return False


def _excluded_from_context(path: str) -> bool:
    """Docker's rule, simplified: the last pattern matching the path or a folder above it wins."""
    excluded = False
    for pattern in _dockerignore():
        negate = pattern.startswith("!")
        if _matches(pattern.removeprefix("!").strip("/"), path):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_the_context_to_what_the_image_copies() -> None:
    for path in (".venv/bin/python", ".git/HEAD", "node_modules/.bin/forge", "contracts/out/x.json",
                 "contracts/cache/solidity-files-cache.json", "tests/unit/test_docker_files.py",
                 "docs/node.md", ".supernet/devnet/deployment.json", "docker/secrets/node1.key",
                 "node/supernet/node/__pycache__/cli.cpython-311.pyc", ".mypy_cache/x", ".pytest_cache/x",
                 "sdk/supernet_sdk.egg-info/PKG-INFO"):  # fmt: skip
        assert _excluded_from_context(path), path
    for src in _copy_sources():
        for f in (p for p in (ROOT / src).rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            rel = str(f.relative_to(ROOT))
            if not rel.endswith((".pyc", ".sqlite")):
                assert not _excluded_from_context(rel), f"{rel} is needed by the build but ignored"


def _compose_schema() -> dict[str, Any]:
    """The Compose Specification's JSON schema, as check-jsonschema (PyPI) vendors it."""
    pytest.importorskip("check_jsonschema")
    from importlib.resources import files

    doc: dict[str, Any] = json.loads(
        files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    return doc


@pytest.mark.parametrize("name", ["compose.yaml", "compose.gpu.yaml"])
def test_compose_files_follow_the_compose_specification(name: str) -> None:
    import jsonschema

    schema = _compose_schema()
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(compose(name))]
    assert not errors, errors
    broken = compose(name)
    next(iter(broken["services"].values()))["no_such_key"] = 1  # the schema is strict enough to see it
    assert not validator.is_valid(broken)


def test_the_image_carries_the_fused_kernels_built_in_the_builder_stage() -> None:
    """The final image has no compiler, so the node's C kernels are built in the builder stage by
    the node's own build code and copied into the directory the node reads them from."""
    stages = dockerfile_stages()
    builder, final = "".join(stages[:-1]), stages[-1]
    assert "node/supernet/node/llm/kernel_build.py --out /kernels" in builder
    assert re.search(r"^COPY --from=builder /kernels (\S+)", final, re.M)
    target = re.search(r"^COPY --from=builder /kernels (\S+)", final, re.M)
    assert target and f"SUPERNET_KERNEL_DIR={target.group(1)}" in final
    assert (
        "--chown" not in final.split("/kernels")[0].rsplit("COPY", 1)[-1]
    )  # root-owned: read-only to the node
