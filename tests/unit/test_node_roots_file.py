"""Where the node keeps its namespace roots: in its database, numbered, the newest kept whatever
order saves land in, restored on restart; a node that kept them in ``namespace_roots.json`` (before
they were stored with the receipts) keeps them across the upgrade."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from supernet.node.service.db import Database
from supernet.node.service.kernel_executor import KernelExecutor, adopt_roots_file


class CountingKernel:
    """Stands in for the kernel's root bookkeeping only (the roots change as tasks finish)."""

    def __init__(self) -> None:
        self.n = 0
        self.restored: Any = None
        self.access = SimpleNamespace(journal=None)  # where the executor hooks its irreversible calls

    def namespace_roots(self, receipting: str | None = None) -> dict[str, Any]:
        self.n += 1
        return {"memory": {"ns": f"root-{self.n}"}, "storage": {}}

    def restore_namespace_roots(self, roots: Any) -> None:
        self.restored = roots


def test_saved_roots_survive_a_restart_and_numbering_continues(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "node.sqlite3")
    executor = KernelExecutor(CountingKernel(), "m", 1, db)  # type: ignore[arg-type]
    late = executor._roots_snapshot()  # taken first, stored last (a receipt's transaction)
    for _ in range(63):
        executor._save_roots()
    db.save_roots(late)
    again = CountingKernel()
    restarted = KernelExecutor(again, "m", 1, Database.open(tmp_path / "node.sqlite3"))  # type: ignore[arg-type]
    assert again.restored["memory"]["ns"] == "root-64"  # the newest snapshot won
    assert restarted._roots_snapshot().seq == 65


def test_a_node_upgraded_from_the_roots_file_keeps_its_roots(tmp_path: Path) -> None:
    legacy = tmp_path / "namespace_roots.json"
    legacy.write_text(json.dumps({"memory": {"0xabc/notes": "bafyold"}, "storage": {}, "grants": {}}))
    db = Database.open(tmp_path / "node.sqlite3")
    adopt_roots_file(db, legacy)
    kernel = CountingKernel()
    KernelExecutor(kernel, "m", 1, db)  # type: ignore[arg-type]
    assert kernel.restored["memory"] == {"0xabc/notes": "bafyold"}
    assert not legacy.exists()  # read once: a later start never goes back to it
    legacy.write_text(json.dumps({"memory": {"0xabc/notes": "stale"}}))
    adopt_roots_file(db, legacy)  # a file appearing again never replaces what the database holds
    saved = db.load_roots()
    assert saved is not None and saved.roots["memory"] == {"0xabc/notes": "bafyold"}
