"""Namespace roots are written when tasks finish, and tasks finish concurrently: the writes must not
collide on the temporary file (a FileNotFoundError once failed a demo task) nor go back in time."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from supernet.node.service.kernel_executor import KernelExecutor


class CountingKernel:
    """Stands in for the kernel's root bookkeeping only (the roots change as tasks finish)."""

    def __init__(self) -> None:
        self.n = 0

    def namespace_roots(self) -> dict[str, Any]:
        self.n += 1
        return {"memory": {"ns": f"root-{self.n}"}, "storage": {}}

    def restore_namespace_roots(self, roots: Any) -> None:
        self.restored = roots


async def test_concurrent_root_saves_keep_the_newest_and_never_collide(tmp_path: Path) -> None:
    path = tmp_path / "namespace_roots.json"
    kernel = CountingKernel()
    executor = KernelExecutor(kernel, "m", 1, path)  # type: ignore[arg-type]
    await asyncio.gather(*(executor._save_roots() for _ in range(64)))
    assert json.loads(path.read_text())["memory"]["ns"] == "root-64"  # the last snapshot won
    assert not path.with_suffix(".tmp").exists()
    again = CountingKernel()
    KernelExecutor(again, "m", 1, path)  # type: ignore[arg-type]
    assert again.restored["memory"]["ns"] == "root-64"
