"""Store-read grants are kept in a table of their own, added with each receipt (`Database.grants`).

The node used to persist the whole ownership index (every CID every namespace ever wrote) inside the
roots snapshot, rewritten at the end of every task of every user: a task's end cost O(the node's
whole write history) (docs/node.md, "a known limit" until this change). Now a receipted task's
snapshot carries only the grants its own writes added (`Kernel.namespace_roots(receipting=...)`),
inserted in its receipt's transaction; a task that is not receipted adds none; a restart reads them
all back; a database from before has its grants moved out of the snapshot once (migration 3).

Real parts: the node's own kernel on the embedded store (`node_kernel` of test_review_aios_kernel,
stand-in engine: no LLM call is made) and the node's real `Database` on a file.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from supernet.node.kernel.access import namespace_of
from supernet.node.service.db import _MIGRATIONS, Database
from supernet.node.service.ports import RootsSnapshot
from supernet.sdk.store.cids import link
from supernet.sdk.store.embedded import EmbeddedStore

from tests.unit.test_review_aios_kernel import ALICE, MALLORY, node_kernel, spec


async def _seed(kernel, ns: str) -> str:  # type: ignore[no-untyped-def]
    """A one-file namespace, as an earlier receipted task left it; returns the file's CID."""
    version = str(await kernel.store.add_file(b"v1", pin=True))
    async with kernel.storage.roots.lock(ns):
        await kernel.storage.roots.commit(ns, {"files": {"a.txt": [link(version)]}}, "0x01")
    kernel.access.owned.grant(ns, [version])
    return version


async def _run_and_save(kernel, db: Database, n: int, user: str, task_input: dict) -> str:  # type: ignore[no-untyped-def]
    """Run task ``n`` as the node does: a receipted task's roots (and grants) are saved with it."""
    task = spec(n, "restorer", task_input, user)
    seq = 100 + n

    async def receipted(_outcome: object) -> None:
        db.save_roots(RootsSnapshot(seq, kernel.namespace_roots(receipting=task.task_id)))

    run = kernel.submit(task, on_success=receipted)
    outcome = await run.outcome()
    db.save_roots(RootsSnapshot(seq + 1000, kernel.namespace_roots()))  # the task's end, as the node's
    return outcome.status


async def test_a_task_end_writes_its_own_grants_not_the_whole_index(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "node.sqlite3")
    async with node_kernel(EmbeddedStore(tmp_path / "store", fsync=False)) as kernel:
        alice, mallory = namespace_of(ALICE, "restorer"), namespace_of(MALLORY, "restorer")
        await _seed(kernel, alice)
        await _seed(kernel, mallory)
        assert await _run_and_save(kernel, db, 1, ALICE, {"path": "a.txt", "times": 20}) == "ok"
        after_one = db.grant_count()
        stored = json.loads(
            sqlite3.connect(tmp_path / "node.sqlite3")
            .execute("SELECT roots FROM namespace_roots")
            .fetchone()[0]
        )
        # an unbilled task of another user adds no grant, and no task's end rewrites the index
        assert (
            await _run_and_save(kernel, db, 2, MALLORY, {"path": "a.txt", "times": 20, "fail": True})
            == "error"
        )
        assert db.grant_count() == after_one
        held = kernel.access.owned.snapshot()
    assert after_one >= 20, after_one  # each rollback's new root, granted to Alice's namespace
    assert "grants" not in stored and "granted" not in stored, sorted(stored)
    # a restart reads every kept grant back (the seeded ones were set directly, as if from before)
    saved = db.load_roots()
    assert saved is not None
    assert set(saved.roots["grants"][alice]) <= set(held[alice])
    assert len(saved.roots["grants"][alice]) == after_one


def test_a_database_from_before_has_its_grants_moved_out_of_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite3"
    db = Database.open(path)
    db.close()
    old = {"memory": {"0xab/notes": "bafyroot"}, "storage": {}, "grants": {"0xab/notes": ["bafy1", "bafy2"]}}
    raw = sqlite3.connect(path)
    raw.execute("INSERT INTO namespace_roots VALUES (1, 7, ?)", (json.dumps(old),))
    raw.execute("PRAGMA user_version = 2")  # the schema before the grants table's migration
    raw.commit()
    raw.close()
    db = Database.open(path)
    assert db.schema_version() == len(_MIGRATIONS) >= 3 and db.grant_count() == 2
    saved = db.load_roots()
    assert saved is not None and saved.seq == 7
    assert saved.roots == {
        "memory": {"0xab/notes": "bafyroot"},
        "storage": {},
        "grants": {"0xab/notes": ["bafy1", "bafy2"]},
    }
    stored = sqlite3.connect(path).execute("SELECT roots FROM namespace_roots").fetchone()[0]
    assert "grants" not in json.loads(stored)
    db.close()
