"""The node-side parts of decoys (`supernet.node.service.decoys`) that need no chain: decoy
accounts, the fault that makes a decoy, and their durable records."""

from __future__ import annotations

from pathlib import Path

from eth_account import Account
from supernet.node.faults import FaultInjector, FaultKind, Generation
from supernet.node.service.db import Database
from supernet.node.service.decoys import decoy_account

NODE_KEY = bytes.fromhex("11" * 32)


def test_decoy_accounts_are_fresh_stable_and_only_the_nodes() -> None:
    first = [decoy_account(NODE_KEY, i).address for i in range(4)]
    assert len(set(first)) == 4, "one fresh account per decoy"
    assert first == [decoy_account(NODE_KEY, i).address for i in range(4)], "derived again after a restart"
    other = decoy_account(bytes.fromhex("22" * 32), 0).address
    assert other not in first, "another node's key derives other accounts"
    assert Account.from_key(NODE_KEY).address not in first


def test_a_decoy_gets_corrupted_tokens_and_other_tasks_do_not() -> None:
    faults = FaultInjector()
    faults.decoys.add("0xdecoy")
    gen = Generation(prompt_ids=(5, 6, 7, 8, 9), output_ids=(1, 2, 3, 4), logprobs=(-0.1,) * 4)
    assert faults.fires(FaultKind.TOKENS, "0xdecoy:0")
    assert faults.on_generation("0xdecoy:0", gen).output_ids != gen.output_ids
    assert faults.on_generation("0xreal:0", gen) == gen, "a user's task runs honestly"
    assert not faults.active, "decoys are not a fault the node runs with"
    assert not faults.fires(FaultKind.ANSWER, "0xdecoy"), "only the tokens fault"


def test_decoys_are_recorded_durably_and_marked_once_revealed(tmp_path: Path) -> None:
    db = Database.open(tmp_path / "node.sqlite3")
    db.insert_decoy("0xaa", 0, "0x" + "ab" * 65, 1.0)
    db.insert_decoy("0xbb", 1, "0x" + "cd" * 65, 2.0)
    db.close()
    db = Database.open(tmp_path / "node.sqlite3")  # as after a restart
    assert [r["task_id"] for r in db.decoys()] == ["0xaa", "0xbb"]
    record = db.decoy("0xbb")
    assert record is not None and record["account_index"] == 1 and record["revealed_challenge"] is None
    db.mark_decoy_revealed("0xbb", 7)
    record = db.decoy("0xbb")
    assert record is not None and record["revealed_challenge"] == 7
    assert db.decoy("0xcc") is None
    db.close()
