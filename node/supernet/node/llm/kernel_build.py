"""Building the fused C kernels (`supernet.node.llm.fused`) into a private cache: standard library only.

Kept apart from `fused` (which needs torch) so that an image's build stage, where the compiler is,
can build the library the node will load, with nothing but Python:

    python node/supernet/node/llm/kernel_build.py --out /kernels

The library is named by the hash of its source and flags (``decode_step-<key>.so``, a sha256
sidecar beside it), so a node finds a build of exactly the code it ships and builds again when
the source changes.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import stat
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "decode_step.c"
CFLAGS = ("-O3", "-mavx2", "-mfma", "-mf16c", "-pthread", "-shared", "-fPIC")


def kernel_dir() -> Path:
    """Where builds are cached: ``SUPERNET_KERNEL_DIR``, else ``~/.cache/supernet/kernels``."""
    return Path(os.environ.get("SUPERNET_KERNEL_DIR") or Path.home() / ".cache" / "supernet" / "kernels")


def private(path: Path) -> bool:
    """Owned by this user (or by root: an image's build step) and writable by nobody else (as
    ssh's StrictModes): only then is a library found there one this user's builds put there."""
    st = path.lstat()
    return not stat.S_ISLNK(st.st_mode) and st.st_uid in (os.geteuid(), 0) and not st.st_mode & 0o022


def library_name(source: Path = SOURCE) -> str:
    """The file name of a build of ``source`` with `CFLAGS`: named by what it computes, not by the
    compiler, so a cached build serves where no compiler is installed."""
    key = hashlib.sha256(source.read_bytes() + " ".join(CFLAGS).encode()).hexdigest()[:16]
    return f"decode_step-{key}.so"


def build(folder: Path | None = None, source: Path = SOURCE) -> Path:
    """The compiled library: the cached build of this source and flags if it is intact, else built now.

    The cache directory is used only when it is private (`private`; created 0700): in a directory
    others can write, a library planted under the predictable name would run as the node, so the
    build goes to a fresh private temporary directory instead (not kept). A cached file is loaded
    only if it is private and its sha256 matches the sidecar written with it: a file cut short by
    a crash (dlopen of a truncated library dies of SIGBUS) or damaged is built again. A build is
    fsynced before it is renamed into place, and the sidecar after it.

    Raises:
        OSError, subprocess.CalledProcessError: no compiler, or the build failed.
    """
    folder = folder or kernel_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not private(folder):
        log.warning("%s is writable by others: the fused kernels are built privately, not cached", folder)
        folder = Path(tempfile.mkdtemp(prefix="supernet-kernels-"))
    out = folder / library_name(source)
    sidecar = out.with_suffix(".sha256")
    if out.is_file() and sidecar.is_file() and private(out):
        if hashlib.sha256(out.read_bytes()).hexdigest() == sidecar.read_text().strip():
            return out
        log.warning("cached fused kernels %s are damaged: building them again", out)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        built = Path(tmp) / out.name
        subprocess.run(
            ["cc", *CFLAGS, "-o", str(built), str(source), "-lm"], capture_output=True, text=True, check=True
        )
        digest = _synced(built, None)
        os.replace(built, out)  # atomic: a concurrent process sees no file or the whole one
        _synced(Path(tmp) / sidecar.name, digest.encode())
        os.replace(Path(tmp) / sidecar.name, sidecar)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return out


def _synced(path: Path, data: bytes | None) -> str:
    """Write ``data`` to ``path`` (None: leave its content), fsync it; its sha256 hex."""
    if data is not None:
        path.write_bytes(data)
    with path.open("rb+") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
        os.fsync(f.fileno())
    return digest


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the fused C kernels into a cache directory.")
    parser.add_argument("--out", type=Path, default=None, help="the cache directory (default: kernel_dir())")
    args = parser.parse_args()
    print(build(args.out))


if __name__ == "__main__":
    main()
