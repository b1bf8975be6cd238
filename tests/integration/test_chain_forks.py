"""`supernet.sdk.chain.forks` against a real Anvil: a reorg is a snapshot, blocks, a revert to the
snapshot and a new, longer branch (the orphaned blocks' hashes differ: other timestamps)."""

from __future__ import annotations

from typing import Any

import pytest
from supernet.sdk.chain import anvil as anvil_rpc
from supernet.sdk.chain.forks import UNKNOWN_FORK, Checkpoint, block_hash, fork_point

pytestmark = pytest.mark.anvil


def _head(w3: Any) -> int:
    return int(w3.eth.block_number)


def _branch(w3: Any, blocks: int, step: int = 13) -> None:
    """Mine ``blocks`` empty blocks ``step`` seconds apart (a new branch takes another step, so its
    blocks differ from the orphaned ones: same parent and timestamp would make the same block)."""
    for _ in range(blocks):
        anvil_rpc.advance_to(w3, int(w3.eth.get_block("latest")["timestamp"]) + step)


def test_no_fork_while_the_checkpoints_are_canonical(chain: Any) -> None:
    w3 = chain.w3
    _branch(w3, 2)
    cps = [Checkpoint.of(w3, n) for n in (_head(w3) - 1, _head(w3))]
    _branch(w3, 3)  # the chain grows past them: nothing to undo
    assert fork_point(w3, cps) is None
    assert fork_point(w3, []) is None


def test_a_reorg_is_found_at_the_newest_checkpoint_still_canonical(chain: Any) -> None:
    w3 = chain.w3
    _branch(w3, 1)
    kept = Checkpoint.of(w3, _head(w3))
    snap = anvil_rpc.snapshot(w3)
    _branch(w3, 2)
    orphaned = [Checkpoint.of(w3, _head(w3) - 1), Checkpoint.of(w3, _head(w3))]
    anvil_rpc.revert(w3, snap)
    _branch(w3, 3, step=17)  # a longer branch: the orphaned numbers now hold other blocks
    assert all(not cp.canonical(w3) for cp in orphaned)
    assert fork_point(w3, [kept, *orphaned]) == kept.number


def test_a_shortened_chain_reads_as_a_fork(chain: Any) -> None:
    """The new branch is shorter than the old one: the newest checkpoint is past the head."""
    w3 = chain.w3
    _branch(w3, 1)
    kept = Checkpoint.of(w3, _head(w3))
    snap = anvil_rpc.snapshot(w3)
    _branch(w3, 3)
    gone = Checkpoint.of(w3, _head(w3))
    anvil_rpc.revert(w3, snap)
    assert block_hash(w3, gone.number) is None
    assert fork_point(w3, [gone, kept]) == kept.number


def test_no_checkpoint_canonical_is_an_unknown_fork(chain: Any) -> None:
    w3 = chain.w3
    snap = anvil_rpc.snapshot(w3)
    _branch(w3, 2)
    cps = [Checkpoint.of(w3, _head(w3) - 1), Checkpoint.of(w3, _head(w3))]
    anvil_rpc.revert(w3, snap)
    _branch(w3, 3, step=17)
    assert fork_point(w3, cps) == UNKNOWN_FORK


def test_a_checkpoint_of_a_block_not_yet_mined_is_refused(chain: Any) -> None:
    with pytest.raises(LookupError, match="not on the chain"):
        Checkpoint.of(chain.w3, _head(chain.w3) + 100)
