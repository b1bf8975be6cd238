"""Review: chain reorganisations, and what the off-chain parties believe about the chain (real
Anvil, real contracts; the real validator `Follower`, `Database`, `TaskManagerClient` and
`Disputes`; the real node `NodeService`, `Batcher`, `Redeemer` and `Web3Chain`).

A reorg is played with Anvil's ``evm_snapshot`` / ``evm_revert`` (the blocks after the snapshot
are orphaned, their transactions dropped), then a new branch is mined, longer than the old one,
optionally carrying the orphaned transaction again (its raw bytes re-sent: what a mempool does).
Every party reads at ``latest`` with ``[chain] confirmations = 0`` (the default), so a reorg of
one block is enough. Such reorgs are routine on L1 (1-2 blocks) and rare but real on rollups (a
sequencer's unsafe head); with a ``confirmations`` above the deepest reorg every finding below
is out of reach, which is why the fix is either that or a fork check (below).

Found:

- MEDIUM, FIXED (test_defence_a_batch_replaced_by_a_reorg_is_kept_and_the_new_one_missed): the
  validator's `Follower` has no fork check: it never compares the hash of a block it scanned with
  the chain's. A reorg below its cursor leaves in its database a batch that is no longer on chain
  (``INSERT OR IGNORE`` keeps the orphaned row even when the same id now holds another node's
  batch) and never reads the batches of the new branch below the cursor: the node's batch, moved
  to the next id, is never sampled or checked by any validator that followed the old head; a
  cheat in it is never challenged. Fixed: the follower keeps checkpoints (the hash of each
  scanned range's last block) with its cursor and, past a `forks.fork_point`, undoes the orphaned
  blocks' rows in one transaction (`Database.undo_after`) and reads them again.
- MEDIUM, FIXED (test_defence_a_batch_reincluded_by_a_reorg_is_never_checked): the same batch
  re-included at another height (the commit back from the mempool: same id, root and count, a
  new ``commitBlock``/``committedAt``). The follower's header cache and row keep the orphaned
  header, so ``batchSeed`` / ``isSampled`` revert ``UnknownBatch`` on every step
  (`service._deferred`: "retried next step") until the challenge window is over: the batch is
  never checked (a restart would heal the cache, not the row). Fixed: the fork check deletes the
  row and drops the cached header (`TaskManagerClient.forget_batches`); the rescan re-records it.
- MEDIUM, FIXED (test_defence_a_challenge_id_reused_after_a_reorg_keeps_the_orphaned_leaf): a
  challenge opened in an orphaned block keeps its row; the next challenge on the new branch takes
  the same id (ids are sequential) and the row still names the orphaned batch and leaf. The
  validator checks the orphaned leaf and seals its vote on the new challenge (a vote commitment
  names the challenge id only): a fraud vote on an honest receipt, or an honest vote on a real
  fault. Fixed: the fork check drops the orphaned challenge rows (with the votes on them) and
  re-reads the new one; `Disputes.vote_open` compares the row's batch and leaf with ``challenges(id)``.
- LOW, FIXED (test_defence_an_orphaned_challenge_stops_the_validators_settlement): until such an id
  is reused, the orphaned row makes ``resolve`` revert ``UnknownChallenge`` (not an expected race):
  `Disputes.settle` raises on it every step, so the rest of the settlement never runs (the claims
  of every resolved challenge, the withdrawal). While its vote is still open, `Disputes.vote_open`
  likewise reaches ``commitVote`` on it (not tested here). Fixed: the fork check drops the row;
  ``UnknownChallenge`` is "gone" (`Disputes._gone`: the row dropped) in settle, commit and reveal.
- MEDIUM, FIXED (test_defence_a_validators_own_challenge_reorged_out_is_never_sent_again): the
  validator's own challenge transaction is orphaned (not re-included: its nonce went to another
  transaction of the new branch, or the mempool dropped it). Its database keeps the challenge id
  on the check (`Database.set_check_challenge`), so `Validator._open_batch` never retries it
  (`_retry_challenge` runs only for a check without a challenge id) and the batch is ``done``: the
  fault it found is never challenged and the cheating node keeps its stake. Fixed: the check
  records its challenge's block (looked up on chain at a checkpointed head, then its event's); a
  fork below it resets the check to "not challenged" and `check_entry` re-sends it in the window.
- HIGH, FIXED (test_defence_a_node_believes_a_reorged_out_commit_is_on_chain): the node's
  batcher marked a batch ``committed`` as soon as its ``commitBatch`` receipt was seen, and never
  looked at the chain again. When the commit was orphaned and not re-included (its nonce taken by
  the node's next transaction: the next commit, a redemption), the node's receipts were committed
  nowhere, its database said they were, it never committed them again, and it served proofs for a
  batch id the chain did not hold (or held another node's batch at). Every user of the batch could
  then claim the omission against the honest node's signed promise (`OmissionManager`) and have it
  slashed. (Re-included after another node's commit, it landed at another id than the one the node
  stored and served: the same wrong proofs.) Fixed: the node stores each commit's block (number,
  hash) and its batcher's reorg watch (``[chain] reorg_watch`` blocks, default 64) re-checks it with
  `supernet.sdk.chain.forks` before each new batch and every 5 s: orphaned and found again by root,
  the new batch id and block are stored (test_defence_a_commit_reincluded_under_another_id_is_moved_there);
  gone, the batch goes back to ``sent`` and is committed again before any newer batch.

Residuals of the fork check, all FIXED (what an undo keeps or redoes, docs/validator.md "Reorgs"):

- MEDIUM (test_defence_a_sealed_vote_reincluded_by_a_reorg_is_still_revealed): an undo deleted a
  challenge's row with the salt of this validator's sealed vote; with the commit re-included on
  the new branch the vote could not be revealed (its bond lost). The same below every checkpoint.
  Now the secrets are kept apart (``sealed_votes``), put back on a challenge read again with the
  same id, batch and leaf, and a commit on chain is matched by its commitment.
- MEDIUM (test_defence_a_database_from_before_the_fork_check_survives_a_shallow_reorg,
  test_defence_checkpoints_reach_back_to_the_first_block_read): a migrated database had one
  checkpoint after its first step, so a one-block reorg undid everything from the deploy block;
  checkpoints were one per scanned range and only the latest 256. Now blocks below the cursor and
  below each range's end (distances 1, 2, 4, ...) are kept, and older checkpoints thin out instead
  of going.
- MEDIUM (test_defence_an_availability_claim_reorged_out_is_claimed_again): this validator's own
  availability claim orphaned by a reorg was followed by its dead id forever, never sent again.
- MEDIUM (test_defence_a_settlement_orphaned_on_a_surviving_challenge_is_redone): a resolve and a
  claim orphaned on a challenge that survived left the row ``claimed``: never resolved or claimed
  again. Settlement steps now carry a block (checkpointed); an undo past it makes them due again.

Checked and holding:

- The node's redemptions: `Redeemer.due` reads each channel's ``redeemed`` from the chain, so a
  settlement orphaned with its commit is due again at the next round
  (test_defence_a_settlement_orphaned_with_its_commit_is_due_again).
- The client: a receipt's batch is read at ``latest`` each time `Client.verify` runs. After a
  reorg that dropped the commit, `TaskManager.batch` finds no such batch (LookupError, so
  ``verify`` fails, never passes), and the promise kept on the first verify still backs an
  omission claim (test_known_limit_a_receipts_batch_is_read_at_latest_without_confirmations).
  What it cannot do: a ``verify`` that passed before the reorg passed on an unconfirmed commit.
- ``confirmations`` defaults to 0 for the validator; nothing in the validator or the node reads
  the ``safe`` or ``finalized`` tags (only the ``chain_read`` tool does:
  tests/unit/test_review_chain_read.py) (test_known_limit_followers_default_to_zero_confirmations).
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest
from chain_fixtures import Actors, cast_votes, make_receipts
from supernet.node.service import batcher as node_batcher
from supernet.node.service import chain as node_chain
from supernet.node.service import db as node_db
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import advance_to, mine, revert, snapshot
from supernet.sdk.chain.errors import ContractError
from supernet.sdk.chain.forks import Checkpoint
from supernet.sdk.chain.tasks import vote_commitment
from supernet.sdk.sqlite import DurableSQLite
from supernet.validator import follower as validator_follower
from supernet.validator import service as validator_service
from supernet.validator.availability import Availability
from supernet.validator.chain import ChallengeStatus, TaskManagerClient
from supernet.validator.config import ChainSettings
from supernet.validator.db import CHECKPOINTS, CheckRow, Database
from supernet.validator.evidence import Verdict
from supernet.validator.follower import Follower

from tests.unit import test_review_crash_consistency as crash
from tests.unit import test_review_validator_game as vgame
from tests.unit.test_review_validator_game import (
    Game,
    _challenged,
    _claimed,
    _commit,
    _faulty,
    _open,
    _past_vote_window,
)

game = vgame.game  # fixture: real Anvil, contracts and two embedded stores
rig = crash.rig  # fixture: a real node service on the real chain (FAKE executor)

session_loop = pytest.mark.asyncio(loop_scope="session")


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _follower(c: Contracts, tmp: Path, name: str = "v") -> Follower:
    """A validator's follower (validator 0's client) on a fresh database, at the deploy block."""
    dep = c.deployment
    client = TaskManagerClient(
        c.w3, dep.address("TaskManager"), None, omission_address=dep.address("OmissionManager")
    )
    return Follower(client, Database(tmp / f"{name}.sqlite"), dep.deploy_block)


def _commit_raw(c: Contracts, actors: Actors, node_index: int, tag: str) -> tuple[int, bytes, bytes]:
    """Node ``node_index`` (0: ``node``, 1: ``node2``) commits a batch of two receipts; returns
    (batch id, root, the commit's raw signed transaction)."""
    node = (actors.node, actors.node2)[node_index]
    receipts = make_receipts(c, actors.users, node.address, 2)
    tree = ReceiptTree.from_receipts(receipts)
    got = c.as_account(node).task_manager.commit_batch(tree.root, len(tree), f"bafy-{tag}")
    raw = bytes(c.w3.eth.get_raw_transaction(got.tx_hash))  # type: ignore[arg-type]
    return int(got.value.batch_id), tree.root, raw


def _chain_batches(c: Contracts) -> dict[int, tuple[str, str]]:
    """Every batch on the chain now: id -> (node, root hex)."""
    logs = c.task_manager.contract.events.BatchCommitted().get_logs(from_block=c.deployment.deploy_block)
    return {int(e["args"]["batchId"]): (str(e["args"]["node"]), bytes(e["args"]["root"]).hex()) for e in logs}


# ------------------------------------------------------------------------------------------------
# The validator's follower
# ------------------------------------------------------------------------------------------------


def test_defence_a_batch_replaced_by_a_reorg_is_kept_and_the_new_one_missed(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """MEDIUM. The node commits batch N; the validator scans past it. A one-block reorg: on the
    new branch node2's commit lands first (batch N is node2's), then the node's commit comes back
    from the mempool as batch N + 1, below the validator's cursor. The validator's database keeps
    N as the node's orphaned batch and never learns of N + 1: node2's batch is checked against
    the node's root (every read of it reverts ``UnknownBatch``) and the node's batch is never
    sampled by any validator that followed the old head. Who gains: whichever node's batch fell
    through (a cheat in it is never challenged). Fix by design: a fork check in `Follower.step`
    (the scanned block's hash kept with the cursor and compared each step, the orphaned range's
    rows deleted and rescanned, as `Indexer.check_reorg` does), or following ``finalized`` only."""
    c = network
    f = _follower(c, tmp_path)
    fork = snapshot(c.w3)
    batch_id, root, raw = _commit_raw(c, actors, 0, "node")
    mine(c.w3, 2)
    f.catch_up()
    assert f.db.batch(batch_id) is not None, "the validator saw the node's batch"
    revert(c.w3, fork)  # the reorg: the commit's block is orphaned
    _commit_raw(c, actors, 1, "node2")  # the new branch: node2 first ...
    c.w3.eth.send_raw_transaction(raw)  # ... then the node's commit again, from the mempool
    mine(c.w3, 3)  # the new branch is the longer one
    f.catch_up()
    on_chain = _chain_batches(c)
    assert on_chain[batch_id + 1] == (actors.node.address, root.hex()), "the node's batch moved to N + 1"
    seen = {b: (row.node, row.root.hex()) for b in f.db.batch_ids() if (row := f.db.batch(b)) is not None}
    assert seen == on_chain, "the validator's batches are not the chain's after a reorg"


def test_defence_a_batch_reincluded_by_a_reorg_is_never_checked(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """MEDIUM. The node's commit is orphaned and re-included one block later (same batch id, root
    and count; another ``commitBlock`` and ``committedAt``), below the validator's cursor. The
    validator's cached header and row are the orphaned ones: its sampling seed (what
    `Validator._open_batch` asks first) reverts ``UnknownBatch`` on every step until the window
    closes, so the batch is never checked. Fix by design: the fork check (see the first test)."""
    c = network
    f = _follower(c, tmp_path)
    fork = snapshot(c.w3)
    batch_id, _, raw = _commit_raw(c, actors, 0, "node")
    mine(c.w3, 2)
    f.catch_up()
    revert(c.w3, fork)
    mine(c.w3, 1)  # the new branch's first block does not carry the commit
    c.w3.eth.send_raw_transaction(raw)
    mine(c.w3, 3)
    f.catch_up()
    header = c.task_manager.batch(batch_id)  # the chain's (from its event)
    assert c.task_manager.is_committed(header)
    assert c.as_account(actors.validators[0]).task_manager.seal_seed_block(header)  # (a validator's)
    try:
        seed = f.chain.batch_seed(batch_id)
    except ContractError as exc:  # UnknownBatch: the orphaned header
        pytest.fail(f"the validator cannot sample the re-included batch: {exc.error_name}")
    assert seed
    row = f.db.batch(batch_id)
    assert row is not None and row.commit_block == header.commit_block, "the validator's row is orphaned"


@session_loop
async def test_defence_a_challenge_id_reused_after_a_reorg_keeps_the_orphaned_leaf(game: Game) -> None:
    """MEDIUM. Validator 1 challenges entry 0 of the node's batch; validator 0 records the
    challenge. The block is orphaned, and on the new branch validator 2 challenges entry 1: the
    same challenge id (sequential). Validator 0's row still names entry 0's leaf and validator 1:
    it would check entry 0 and seal its verdict as a vote on the challenge of entry 1 (a vote
    commitment names the id alone). Who gains: a cheating node whose fault is voted "honest" by
    validators that judged another receipt (or an honest node voted "fraud"). Fix by design: the
    fork check drops the orphaned range's challenge rows; `Disputes._vote_one` compares the row's
    leaf with ``challenges(id)`` before it votes."""
    g = game
    batch_id, receipts, _ = await _commit(g)
    watcher = g.party(g.actors.validators[0], g.stores["full"], "watcher")
    watcher.follower.catch_up()
    fork = snapshot(g.chain.w3)
    orphaned = _open(g.party(g.actors.validators[1], g.stores["full"], "v1"), batch_id, receipts, 0)
    mine(g.chain.w3, 1)
    watcher.follower.catch_up()
    revert(g.chain.w3, fork)
    again = _open(g.party(g.actors.validators[2], g.stores["full"], "v2"), batch_id, receipts, 1)
    mine(g.chain.w3, 3)
    watcher.follower.catch_up()
    assert again == orphaned, "the new branch's challenge took the orphaned one's id"
    view = watcher.client.challenge(again)
    [row] = [r for r in watcher.db.challenges() if r.challenge_id == again]
    assert view.leaf == receipts[1].leaf()
    assert (row.leaf, row.challenger) == (view.leaf, view.challenger), "the row is the orphaned challenge"


@session_loop
async def test_defence_an_orphaned_challenge_stops_the_validators_settlement(game: Game) -> None:
    """LOW. As above, but no challenge has reused the orphaned id yet: its row stays ``open``,
    and once its vote deadline is past `Disputes.settle` sends ``resolve`` for a challenge the
    chain does not know: ``UnknownChallenge`` is not an expected race, so settle raises on every
    step and the rest of the settlement (the claims of resolved challenges, the withdrawal) never
    runs, until another challenge reuses the id (then the test above applies).
    Fix by design: the fork check; ``UnknownChallenge`` in settle drops the row."""
    g = game
    batch_id, receipts, _ = await _commit(g)
    watcher = g.party(g.actors.validators[0], g.stores["full"], "watcher")
    fork = snapshot(g.chain.w3)
    _open(g.party(g.actors.validators[1], g.stores["full"], "v1"), batch_id, receipts, 0)
    mine(g.chain.w3, 1)
    watcher.follower.catch_up()
    assert [r.status for r in watcher.db.challenges()] == ["open"]
    revert(g.chain.w3, fork)
    mine(g.chain.w3, 3)
    watcher.follower.catch_up()
    _past_vote_window(g.chain)
    try:
        await watcher.disputes.settle(watcher.client.timestamp())
    except ContractError as exc:
        pytest.fail(f"settlement stops at the orphaned challenge: {exc.error_name}")


@session_loop
async def test_defence_a_validators_own_challenge_reorged_out_is_never_sent_again(game: Game) -> None:
    """MEDIUM. Validator 0 checks entry 0 of the node's batch, finds it faulty, records the verdict
    and opens its challenge (the real `Disputes.challenge`). The challenge's block is orphaned and
    the transaction not re-included. The validator's check keeps the challenge id, which is what
    `Validator._open_batch` looks at (`_retry_challenge` runs only for a check without one): the
    fault is never challenged while the chain has no challenge on the leaf. Who gains: the
    cheating node (keeps its stake). Fix by design: a challenge is "unconfirmed" until its block
    is final, and sent again while ``leafChallenge`` is 0 and the window is open."""
    g = game
    batch_id, receipts, _ = await _commit(g)
    me = g.party(g.actors.validators[0], g.stores["full"], "me")
    me.follower.catch_up()
    batch = me.db.batch(batch_id)
    assert batch is not None
    leaf = receipts[0].leaf()
    me.db.record_check(CheckRow(batch_id, 0, False, "trace", "bafy-evidence", None))  # `_settle`
    fork = snapshot(g.chain.w3)
    cid = await me.disputes.challenge(batch, _faulty(batch_id, 0, leaf, me.account.address), "bafy-evidence")
    assert cid and me.client.leaf_challenge(batch_id, leaf) == cid
    mine(g.chain.w3, 1)
    me.follower.catch_up()
    revert(g.chain.w3, fork)
    mine(g.chain.w3, 3)
    me.follower.catch_up()
    assert me.client.leaf_challenge(batch_id, leaf) == 0, "the challenge is gone from the chain"
    check = me.db.check(batch_id, 0)
    assert check is not None
    assert check.challenge_id is None, "the validator believes the fault is challenged: it never retries"


# ------------------------------------------------------------------------------------------------
# The node's batcher and redeemer
# ------------------------------------------------------------------------------------------------


async def _orphaned_commit(r: crash.NodeRig) -> tuple[crash.RealNode, int, bytes]:
    """The node finishes two tasks and commits their batch (settling the user's voucher in the
    same transaction); the commit's block is orphaned and not re-included; the new branch is
    longer. Returns (the node, its local batch id, the root)."""
    c = r.network
    node = await r.start()
    for i in range(2):
        await r.done_task(node, f"q{i}", crash.FEE * (i + 1))
    fork = snapshot(c.w3)
    batch = await node.batcher.flush()
    assert batch is not None and batch.status == "committed"
    root = bytes.fromhex(batch.root[2:])
    assert crash._commits_of(c, r.actors.node.address, root) == [batch.chain_batch_id]
    mine(c.w3, 2)
    revert(c.w3, fork)
    mine(c.w3, 4)
    assert crash._commits_of(c, r.actors.node.address, root) == [], "the reorg dropped the commit"
    return node, batch.id, root


@session_loop
async def test_defence_a_node_believes_a_reorged_out_commit_is_on_chain(rig: crash.NodeRig) -> None:
    """HIGH, FIXED. The node's commit is orphaned and not re-included. The node's database said the
    batch was ``committed`` (chain batch id and proofs stored), and a round of the batcher (what
    `Batcher.run_forever` does: unfinished batches, then new ones) sent nothing: its receipts were
    committed nowhere, while the node served proofs into a batch id the chain did not hold. Every
    user of the batch could claim the omission against the node's signed promise and have the
    honest node slashed. Fixed: the round's reorg watch (`Batcher._watch_reorgs`) sees the commit's
    block orphaned, finds no commit of the root on chain, puts the batch back to ``sent`` and
    commits it again (the stored transaction re-broadcast)."""
    node, local_id, root = await _orphaned_commit(rig)
    try:
        for b in node.db.unfinished_batches():  # one round of `Batcher.run_forever`
            await node.batcher.commit(b)
        await node.batcher._maybe_flush()
        mine(rig.network.w3, 1)
        recommitted = crash._commits_of(rig.network, rig.actors.node.address, root)
        row = node.db.batch(local_id)
        assert row is not None
        assert recommitted or row.status != "committed", "the node believes its receipts are committed"
    finally:
        await rig.kill(node)


@session_loop
async def test_defence_a_settlement_orphaned_with_its_commit_is_due_again(rig: crash.NodeRig) -> None:
    """DEFENCE. The user's voucher was settled in the orphaned commit. `Redeemer.due` reads each
    channel's ``redeemed`` from the chain (the database copy is not trusted), so the voucher is due
    again at the next round and redeemed on the new branch: the node does not lose the fees."""
    node, _, _ = await _orphaned_commit(rig)
    user = rig.actors.users[0].address
    try:
        assert node.db.redeemed(user) == 2 * crash.FEE, "the database copy still says settled"
        assert rig.network.payments.channel(user, rig.actors.node.address).redeemed == 0
        redeemer = node.service.redeemer
        assert redeemer is not None
        assert [v.user for v, _ in await redeemer.due()] == [user], "due again"
        assert await redeemer.redeem_once()
        assert rig.network.payments.channel(user, rig.actors.node.address).redeemed == 2 * crash.FEE
    finally:
        await rig.kill(node)


@session_loop
async def test_defence_a_commit_reincluded_under_another_id_is_moved_there(rig: crash.NodeRig) -> None:
    """DEFENCE (finding 6, the re-included case). The node's commit is orphaned; on the new branch
    node2's commit lands first and the node's comes back from the mempool under the next batch id.
    The batcher's reorg watch finds it there by root: the batch stays ``committed`` under the
    chain's id and block now, its receipts are served under that id, and nothing is committed
    twice."""
    c = rig.network
    node = await rig.start()
    try:
        for i in range(2):
            await rig.done_task(node, f"m{i}", crash.FEE * (i + 1))
        fork = snapshot(c.w3)
        batch = await node.batcher.flush()
        assert batch is not None and batch.chain_batch_id is not None and batch.commit_block is not None
        stored = node.db.commit_tx(batch.id)
        assert stored is not None
        root = bytes.fromhex(batch.root[2:])
        mine(c.w3, 1)
        revert(c.w3, fork)
        _commit_raw(c, rig.actors, 1, "node2")  # the new branch: node2 first ...
        c.w3.eth.send_raw_transaction(stored[1])  # ... then the node's commit, from the mempool
        mine(c.w3, 3)
        [moved] = crash._commits_of(c, rig.actors.node.address, root)
        assert moved == batch.chain_batch_id + 1
        await node.batcher._maybe_flush()  # a round: the watch looks before anything is cut
        row = node.db.batch(batch.id)
        assert row is not None and (row.status, row.chain_batch_id) == ("committed", moved)
        assert row.commit_block is not None and row.commit_block.canonical(c.w3)
        entry = node.db.receipt_at(moved, 0)
        assert entry is not None and entry.batch_id == batch.id and entry.proof is not None
        assert crash._commits_of(c, rig.actors.node.address, root) == [moved], "committed once"
    finally:
        await rig.kill(node)


def test_defence_an_older_node_database_gains_the_commit_blocks(tmp_path: Path) -> None:
    """DEFENCE (finding 6's migration). A node database from before the reorg watch (schema version
    0: no commit block columns) opens migrated, once: its committed batches read with no commit
    block and are not watched (committed long before, deeper than any reorg by now)."""
    path = tmp_path / "node.sqlite3"
    old = DurableSQLite(path, node_db.SCHEMA)
    with old.transaction() as conn:
        conn.execute(
            "INSERT INTO batches (root, count, manifest_cid, status, tx_hash, chain_batch_id, created_at) "
            "VALUES ('0x' || printf('%064d', 1), 2, 'bafy', 'committed', '0x01', 7, 0)"
        )
    old.close()
    for _ in range(2):  # the second open finds it migrated already
        db = node_db.Database.open(path)
        try:
            assert db.schema_version() == len(node_db._MIGRATIONS)
            row = db.batch(1)
            assert row is not None and (row.chain_batch_id, row.commit_block) == (7, None)
            assert db.watched_batches(0) == []
        finally:
            db.close()


# ------------------------------------------------------------------------------------------------
# The client, and the confirmations setting
# ------------------------------------------------------------------------------------------------


def test_known_limit_a_receipts_batch_is_read_at_latest_without_confirmations(
    network: Contracts, actors: Actors
) -> None:
    """KNOWN LIMIT. `Client.verify` reads the receipt's batch with `TaskManager.batch` (its event,
    up to ``latest``): a commit one block old passes, and the same read after a reorg that dropped
    it raises LookupError (``verify`` fails, it never passes a dropped receipt). A ``verify`` that
    passed before the reorg passed on an unconfirmed commit; the promise it kept then
    (`Client._keep_promise`) still backs an omission claim, so the user loses nothing. What would
    close it: a ``verify`` that reports "committed, not final" until the commit block is
    ``finalized``."""
    c = network
    fork = snapshot(c.w3)
    batch_id, root, _ = _commit_raw(c, actors, 0, "node")
    assert c.task_manager.batch(batch_id).root == root, "found at the head, unconfirmed"
    revert(c.w3, fork)
    mine(c.w3, 2)
    with pytest.raises(LookupError):
        c.task_manager.batch(batch_id)


def test_known_limit_followers_default_to_zero_confirmations() -> None:
    """KNOWN LIMIT. ``[chain] confirmations`` defaults to 0 (right for the devnet's instant blocks,
    not for a public chain: every attack above needs only a one-block reorg), and no follower of
    the validator or committer of the node reads the ``safe``/``finalized`` tags. Acceptable only
    with the operator setting ``confirmations`` above the chain's deepest reorg (docs do not say
    so); the fix by design is the fork check plus a default taken from the chain (``finalized``
    where the RPC has it), and the same for the node's batcher, which has no such setting."""
    assert ChainSettings.model_fields["confirmations"].default == 0
    assert Follower.__dataclass_fields__["confirmations"].default == 0
    for module in (validator_follower, validator_service, node_batcher, node_chain):
        source = inspect.getsource(module)
        assert '"finalized"' not in source and '"safe"' not in source, module.__name__


# ------------------------------------------------------------------------------------------------
# What survives an undo (the fork check's residuals)
# ------------------------------------------------------------------------------------------------


def _raw_of(c: Contracts, event: str, **filters: object) -> bytes:
    """The raw signed transaction that emitted the TaskManager's one ``event`` matching ``filters``."""
    [found] = getattr(c.task_manager.contract.events, event)().get_logs(
        argument_filters=filters, from_block=c.deployment.deploy_block
    )
    return bytes(c.w3.eth.get_raw_transaction(found["transactionHash"]))  # type: ignore[arg-type]


@session_loop
@pytest.mark.parametrize("depth", ["fork-found", "below-every-checkpoint"])
async def test_defence_a_sealed_vote_reincluded_by_a_reorg_is_still_revealed(game: Game, depth: str) -> None:
    """MEDIUM (residual 1 and 2). Validator 1 checks the challenge on entry 0 and seals its vote
    (side and salt on its challenge row). The challenge's block and the commit's are orphaned,
    and both transactions come back on the new branch (the mempool): the same challenge id, the
    same commitment. The fork check removed the challenge's row with the salt on it and read the
    challenge again without it, so the voter found its vote sealed on chain with no salt to open
    it ("cannot be revealed"): its bond lost, its fraud vote never counted. The same when the
    reorg is below every checkpoint kept (everything undone from the deploy block). Fixed: the
    secret of every vote sealed is kept apart from the rows (``sealed_votes``, never undone); a
    challenge read again with the same id, batch and leaf gets it back, and a commit on chain
    that is not the row's is matched by its commitment (read from the commit's transaction)."""
    g = game
    c, a = g.chain, g.actors
    me = a.validators[1].address
    batch_id, receipts, _ = await _commit(g)
    voter = g.party(a.validators[1], g.stores["full"], "v1")
    voter.follower.catch_up()
    leaf = receipts[0].leaf()

    async def faulty(*args: object, **kwargs: object) -> Verdict:  # its own check: a fault
        return _faulty(batch_id, 0, leaf, me)

    voter.disputes.verifier.verify = faulty  # type: ignore[method-assign]
    # the seed block sealed before the fork: the challenge's own transaction is all that is replayed
    assert c.as_account(a.validators[0]).task_manager.seal_seed_block(c.task_manager.batch(batch_id))
    fork = snapshot(c.w3)
    cid = _open(g.party(a.validators[0], g.stores["full"], "c"), batch_id, receipts)
    voter.follower.catch_up()
    await voter.disputes.vote_open(voter.client.timestamp())
    [row] = [r for r in voter.db.challenges() if r.challenge_id == cid]
    assert row.status == "voted" and row.salt is not None
    sealed = row.salt
    opened, committed = (
        _raw_of(c, "ChallengeOpened", challengeId=cid),
        _raw_of(c, "VoteCommitted", challengeId=cid),
    )
    mine(c.w3, 1)
    voter.follower.catch_up()
    if depth == "below-every-checkpoint":  # the newest checkpoint only (a reorg deeper than all kept)
        with voter.db._tx() as conn:
            conn.execute("DELETE FROM checkpoints WHERE number < (SELECT MAX(number) FROM checkpoints)")
    revert(c.w3, fork)
    c.w3.eth.send_raw_transaction(opened)  # the new branch: the challenge again, then the commit
    c.w3.eth.send_raw_transaction(committed)
    mine(c.w3, 3)
    voter.follower.catch_up()
    assert c.task_manager.get_vote(cid, me).weight != 0, "the commit is on the new branch"
    assert voter.client.committed_vote(cid, me) == vote_commitment(cid, me, True, sealed)  # its commitment
    [row] = [r for r in voter.db.challenges() if r.challenge_id == cid]
    assert row.salt == sealed, "the challenge was read again without the vote sealed on it"
    if depth == "fork-found":  # in the commit phase: the vote found on chain, not sealed again
        await voter.disputes.vote_open(voter.client.timestamp())
        [row] = [r for r in voter.db.challenges() if r.challenge_id == cid]
        assert (row.status, row.reveal, row.salt) == ("voted", "pending", sealed)
    advance_to(c.w3, c.task_manager.reveals_at(cid))
    await voter.disputes.vote_open(voter.client.timestamp())
    vote = c.task_manager.get_vote(cid, me)
    assert vote.revealed and vote.fraud, "the re-included sealed vote was never opened: its bond is lost"
    assert c.task_manager.get_challenge(cid).committed == 1, "one commit, one bond"


def test_defence_a_database_from_before_the_fork_check_survives_a_shallow_reorg(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """MEDIUM (residual 2). A validator database from before the fork check (migrated: a cursor, no
    checkpoint) keeps one checkpoint after its first step, the block it read last. A one-block
    reorg of that block left no checkpoint canonical (an "unknown fork"): everything was undone
    and followed again from the deploy block, every verdict, vote and own challenge with it.
    Fixed: a database without checkpoints first keeps blocks below its cursor (at distances 1, 2,
    4, ...), and each scanned range keeps blocks below its end the same way, so the fork is found
    next to where the branches part."""
    c = network
    f = _follower(c, tmp_path)
    first, _, _ = _commit_raw(c, actors, 0, "before")
    mine(c.w3, 2)
    head = int(c.w3.eth.block_number)
    f.db.record_events(f.chain.events(f.start_block, head), head + 1)  # read before the upgrade
    f.db.record_check(CheckRow(first, 0, True, "trace", "bafy-verdict", None))
    assert f.db.checkpoints() == []
    fork = snapshot(c.w3)
    second, _, _ = _commit_raw(c, actors, 1, "after")
    f.step()  # the first step after the upgrade
    assert f.db.batch(second) is not None
    revert(c.w3, fork)
    mine(c.w3, 3)
    f.catch_up()
    assert f.db.batch(second) is None, "the orphaned batch is undone"
    assert f.db.check(first, 0) is not None, "a one-block reorg undid everything from the deploy block"
    assert set(_chain_batches(c)) == set(f.db.batch_ids())


def test_defence_checkpoints_reach_back_to_the_first_block_read() -> None:
    """DEFENCE (residual 2). The most recent ``CHECKPOINTS`` are kept and older ones thin out to two
    per power of two of distance: a database that has followed for long still finds the fork of a
    reorg far deeper than the recent ones, at most about twice as deep, and a few hundred rows
    reach back to the first block it read."""
    db = Database(":memory:")
    newest = 3_000
    for n in range(1, newest + 1):
        db.add_checkpoints([Checkpoint(n, n.to_bytes(32, "big"))])
    kept = [cp.number for cp in db.checkpoints()]
    assert kept[0] == 1 and kept[-1] == newest
    assert len(kept) <= CHECKPOINTS + 2 * newest.bit_length()
    assert kept[-CHECKPOINTS:] == list(range(newest - CHECKPOINTS + 1, newest + 1))
    for depth in range(CHECKPOINTS, newest - 1, 7):  # the fork: the newest kept at or below it
        fork = max(n for n in kept if n <= newest - depth)
        assert newest - fork <= 2 * depth, depth


@session_loop
async def test_defence_an_availability_claim_reorged_out_is_claimed_again(game: Game) -> None:
    """MEDIUM (residual 3). A validator that cannot read entry 0's trace retries, then claims it
    unavailable (bonded ``challengeAvailability``). The claim's block is orphaned and the claim
    not re-included. The row kept the orphaned claim's id (``challenged``): following it reverted
    ``UnknownAvailabilityChallenge`` every step (a reused id would have been another entry's), the
    claim was never sent again, and the node that withholds the trace was never made to post it
    or be slashed. Fixed: the claim's row records a block it was seen by (kept as a checkpoint);
    a fork below it sends the row back to ``retrying`` (`Database.undo_after`), and a followed claim
    the chain does not hold for the entry is claimed again."""
    g = game
    c, a = g.chain, g.actors
    batch_id, _, _ = await _commit(g)
    v = g.party(a.validators[1], g.stores["partial"], "v")  # the trace of entry 0 is withheld from it
    v.follower.catch_up()
    batch = v.db.batch(batch_id)
    assert batch is not None

    async def settle(*args: object) -> bool:
        return True

    av = Availability(v.client, v.db, v.disputes, v.disputes.verifier, settle, retries=1, backoff_s=0.01)
    av.note(batch, 0, "trace withheld")
    await asyncio.sleep(0.02)
    fork = snapshot(c.w3)
    await av.step(v.client.timestamp())
    aid = v.client.entry_availability(batch_id, 0)
    assert aid and [(r.status, r.availability_id) for r in v.db.missing()] == [("challenged", aid)]
    mine(c.w3, 1)
    v.follower.catch_up()
    revert(c.w3, fork)
    mine(c.w3, 3)
    v.follower.catch_up()
    assert v.client.entry_availability(batch_id, 0) == 0, "the claim is gone from the chain"
    assert [(r.status, r.availability_id) for r in v.db.missing()] == [("retrying", None)]
    await av.step(v.client.timestamp())
    again = v.client.entry_availability(batch_id, 0)
    assert again, "the validator's availability claim was never sent again"
    assert [(r.status, r.availability_id) for r in v.db.missing()] == [("challenged", again)]


@session_loop
async def test_defence_a_settlement_orphaned_on_a_surviving_challenge_is_redone(game: Game) -> None:
    """MEDIUM (residual 4). Validator 0's challenge ends in a fraud verdict; its settlement resolves
    it and claims its payout (the row ``claimed``). The blocks of the resolve and the claim are
    orphaned (the challenge's own block survives) and not re-included. The row said ``claimed``,
    so settle never looked again: the challenge stayed open on chain, the node unslashed, the
    challenger's bond and reward unpaid (unless someone else resolved it). Fixed: a settlement
    step is recorded with a block it was seen by (kept as a checkpoint; a resolve the follower read
    with its block); a fork below it makes the challenge unsettled again, and settle reads the
    chain again (resolved? claimed?) and redoes what the new branch lacks."""
    g = game
    c, a = g.chain, g.actors
    me = a.validators[0].address
    _, _, challenger, cid, _ = await _challenged(g)
    cast_votes(c, cid, [(v, True) for v in a.validators[1:]])
    _past_vote_window(c)
    challenger.follower.catch_up()
    await challenger.disputes.vote_open(challenger.client.timestamp())  # opening counts as a fraud vote
    fork, forked_at = snapshot(c.w3), int(c.w3.eth.block_number)
    await challenger.disputes.settle(challenger.client.timestamp() + 1)
    assert c.task_manager.get_challenge(cid).status == ChallengeStatus.FRAUD
    assert [r.status for r in challenger.db.challenges() if r.challenge_id == cid] == ["claimed"]
    paid = _claimed(c, cid, me)
    assert paid
    mine(c.w3, 1)
    challenger.follower.catch_up()
    orphaned_head = int(c.w3.eth.block_number)
    revert(c.w3, fork)
    mine(c.w3, orphaned_head - forked_at + 2)  # the new branch is the longer one
    assert c.task_manager.get_challenge(cid).status == ChallengeStatus.OPEN, "the resolve is orphaned"
    challenger.follower.catch_up()
    await challenger.disputes.settle(challenger.client.timestamp() + 1)
    assert c.task_manager.get_challenge(cid).status == ChallengeStatus.FRAUD, "never resolved again"
    assert _claimed(c, cid, me) == paid, "the payout was never claimed again"
    assert [r.status for r in challenger.db.challenges() if r.challenge_id == cid] == ["claimed"]
    await challenger.disputes.settle(challenger.client.timestamp() + 1)
    assert _claimed(c, cid, me) == paid, "claimed once"
