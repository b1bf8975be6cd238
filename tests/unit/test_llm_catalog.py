"""The model catalog and ``supernet model`` CLI, without downloading anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from supernet.node.llm import catalog
from supernet.node.llm.cli import app
from supernet.node.llm.errors import ModelNotFoundError
from supernet.sdk.models import served_model_id
from typer.testing import CliRunner

WEIGHTS_ID = "0x" + "ab" * 32


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SUPERNET_HOME", str(tmp_path))
    return tmp_path


def _fake_pulled(home: Path) -> Path:
    d = home / "models" / "smollm2-135m"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"x")
    (d / "manifest.json").write_text(json.dumps({"model_id": WEIGHTS_ID}))
    return d


def test_unpulled_and_unknown_models_raise(home: Path) -> None:
    assert catalog.models_dir() == home / "models"
    assert not catalog.is_pulled("smollm2-135m")
    with pytest.raises(ModelNotFoundError, match="supernet model pull"):
        catalog.resolve_model_dir("smollm2-135m")
    with pytest.raises(ModelNotFoundError):
        catalog.resolve_model_dir("no-such-model")
    with pytest.raises(ModelNotFoundError):
        catalog.pull("no-such-model")
    assert catalog.resolve_model_dir(home) == home


def test_pull_is_idempotent(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _fake_pulled(home)

    def no_download(*args: object) -> None:
        raise AssertionError("a pulled model must not be downloaded again")

    monkeypatch.setattr(catalog, "_download_gguf", no_download)
    assert catalog.pull("smollm2-135m") == d
    result = CliRunner().invoke(app, ["pull", "smollm2-135m"])
    assert result.exit_code == 0 and "already" in result.output


def test_cli_list_shows_pulled_model_id(home: Path) -> None:
    runner = CliRunner()
    assert "no" in runner.invoke(app, ["list"]).output
    _fake_pulled(home)
    out = runner.invoke(app, ["list"]).output
    assert "smollm2-135m" in out and WEIGHTS_ID in out
    for compute in ("float32", "bfloat16"):  # the ids a node serves, which users sign
        assert served_model_id(WEIGHTS_ID, compute) in out
    assert runner.invoke(app, ["pull", "bogus"]).exit_code == 2
