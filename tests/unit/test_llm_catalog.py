"""The model catalog and ``supernet model`` CLI, without downloading anything."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from supernet.node.llm import catalog
from supernet.node.llm.cli import app
from supernet.node.llm.errors import ModelNotFoundError
from supernet.sdk.models import WEIGHTS_MANIFEST_FORMAT, served_model_id
from typer.testing import CliRunner

WEIGHTS_ID = "0x" + "ab" * 32


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SUPERNET_HOME", str(tmp_path))
    return tmp_path


def _fake_pulled(home: Path, format: str = WEIGHTS_MANIFEST_FORMAT) -> Path:
    d = home / "models" / "smollm2-135m"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"x")
    (d / "manifest.json").write_text(json.dumps({"model_id": WEIGHTS_ID, "format": format}))
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


def test_a_copy_pulled_under_an_older_manifest_format_is_pulled_again(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy whose manifest hashed the weights alone (format 1) names ids no node of this version
    serves: it is not "pulled", the error says to pull, and `pull` converts it again."""
    _fake_pulled(home, format="supernet-weights-manifest/1")
    assert not catalog.is_pulled("smollm2-135m")
    with pytest.raises(ModelNotFoundError, match="older version"):
        catalog.resolve_model_dir("smollm2-135m")

    class Converting(Exception):
        pass

    def convert(*args: object, **kwargs: object) -> None:
        raise Converting

    monkeypatch.setattr(catalog, "_download_gguf", convert)  # no GGUF in the fake copy: fetched first
    with pytest.raises(Converting):
        catalog.pull("smollm2-135m")


def test_cli_list_shows_pulled_model_id(home: Path) -> None:
    runner = CliRunner()
    assert "no" in runner.invoke(app, ["list"]).output
    _fake_pulled(home)
    out = runner.invoke(app, ["list"]).output
    assert "smollm2-135m" in out and WEIGHTS_ID in out
    for compute in ("float32", "bfloat16"):  # the ids a node serves, which users sign
        assert served_model_id(WEIGHTS_ID, compute) in out
    assert runner.invoke(app, ["pull", "bogus"]).exit_code == 2


def test_the_devnet_registers_only_a_manifest_of_the_current_format(home: Path) -> None:
    """The devnet registers the pulled model's manifest on chain; one of format 1 hashes to an id no
    node of this version serves (its manifest lacks the tokenizer), so none is returned and the
    devnet falls back to its placeholder rather than register an id nobody serves."""
    from supernet.sdk.chain.receipts import canonical_json
    from supernet.sdk.devnet.network import pulled_model_manifest

    d = home / "models" / "smollm2-135m"
    d.mkdir(parents=True)
    for fmt in ("supernet-weights-manifest/1", WEIGHTS_MANIFEST_FORMAT):
        doc = {"format": fmt, "config": {}, "tensors": [], "tokenizer": None}
        recorded = "0x" + hashlib.sha256(canonical_json(doc)).hexdigest()
        (d / "manifest.json").write_text(json.dumps({"model_id": recorded, **doc}))
        got = pulled_model_manifest()
        assert (got == canonical_json(doc)) if fmt == WEIGHTS_MANIFEST_FORMAT else got is None
