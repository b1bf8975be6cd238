"""Review: crash consistency of the node and validator services ("nothing is lost on a crash").

Each test kills a service object at one persistence point (a `Crash` raised from inside the real
call it interrupts, after or before the transaction it wraps) and builds a fresh one on the same
database and data directory, as a restart would. Real Anvil and contracts (`network`), the real
embedded content store, the real node `Database`/`Batcher`/`Redeemer`/`Web3Chain` and the real
validator `Database`/`Follower`/`Disputes`. The node's executor is the FAKE one of
tests/node_fixtures.py (the model's output plays no part in what a crash does to billing and
batching; the real-model crash campaign is tests/integration/test_reliability.py).

Already covered elsewhere (not repeated): crash mid-task / refusal after the deadline
(test_node_batching, test_node_e2e), a lost 202 (test_node_e2e), a commit sent but not recorded on
a FAKE chain (test_node_batching), crash after a challenge / between seal, commit and reveal of a
vote (test_review_validator_game, test_review_sealed_votes), the follower's cursor
(test_validator_follower), SIGKILL of every role (test_reliability).

Found:

* defence: the node killed after its `commitBatch` (which also settled vouchers) was mined but
  before anything was recorded: the restart adopts the on-chain batch, commits nothing twice and
  charges nobody twice; the proofs it stores verify against the on-chain root.
* defence: the node killed after its own `redeem` landed, before recording it, redeems nothing
  again (the channel on chain is the authority) and settles nothing more in its next commit.
* defence: the validator killed after `resolve` or after `claimVoteReward`, before its record,
  reads the chain, claims once and still withdraws.
* fixed (was a known limit): a commit signed and persisted but never broadcast (crash between
  the two), whose nonce another transaction of the node takes at restart (its decoy escrow
  funding, a registration sync, an availability answer), was waited on for the full
  `wait_commit` timeout (120 s) before it was re-signed, although the chain said at once that it
  could never land: more than the 60 s the worker's promise margin allows for inclusion, and
  every later batch waited behind it. `Web3Chain.wait_commit` now looks at the nonce every poll.
* fixed (was a known limit): the challenger's courtesy refund delivery (`claimRefund` for the
  offline user) was lost for good by a crash between recording the challenge `resolved` and
  sending it, and never sent when anyone else resolved first. It now goes with the claim.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from chain_fixtures import Actors, cast_votes, to_reveal_phase
from node_fixtures import FakeExecutor, signed_task
from supernet.node.service.batcher import Batcher
from supernet.node.service.chain import Web3Chain
from supernet.node.service.config import NodeSettings
from supernet.node.service.db import Database as NodeDatabase
from supernet.node.service.models import TaskStatus
from supernet.node.service.ports import SignedCommit
from supernet.node.service.runner import NodeService
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.merkle import verify
from supernet.sdk.chain.receipts import Receipt
from supernet.sdk.client.read_grant import ReadGrantAuth
from supernet.sdk.store import StoreClient
from supernet.sdk.store.embedded import in_process_client
from supernet.validator.chain import ChallengeStatus

from tests.unit import test_review_validator_game as vgame
from tests.unit.test_review_sealed_votes import _sealed_voter, _won
from tests.unit.test_review_validator_game import Crash, Game, _challenged, _claimed, _past_vote_window

game = vgame.game  # fixture: real Anvil, contracts and two embedded stores

pytestmark = pytest.mark.asyncio(loop_scope="session")

FEE = 10**12  # the node's default task fee (NodeSettings.pricing)


# ------------------------------------------------------------------------------------------------
# A node service on the real chain (FAKE executor), started, "killed" and started again
# ------------------------------------------------------------------------------------------------


@dataclass
class RealNode:
    service: NodeService
    chain: Web3Chain
    http: httpx.AsyncClient

    @property
    def db(self) -> NodeDatabase:
        assert self.service.ctx is not None
        return self.service.ctx.db

    @property
    def batcher(self) -> Batcher:
        assert self.service.batcher is not None
        return self.service.batcher


@dataclass
class NodeRig:
    network: Contracts
    actors: Actors
    data_dir: Path
    store: StoreClient

    async def start(self) -> RealNode:
        """A node process on ``data_dir`` (first start or restart): setup resumes unfinished work."""
        cfg = NodeSettings.load(
            None,
            data_dir=self.data_dir,
            batch={"max_size": 2, "max_age_s": 0.2},
            redeem={"min_amount_wei": 1},  # every finished voucher is due: it rides on the commit
        )
        chain = Web3Chain(self.network, self.actors.node)
        service = NodeService(cfg, FakeExecutor(), self.actors.node, self.store, chain)
        await service.setup()
        assert service.app is not None
        user = self.actors.users[0]
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=service.app),
            base_url="http://node",
            auth=ReadGrantAuth(user, self.actors.node.address, self.network.domain),
        )
        return RealNode(service, chain, http)

    async def kill(self, node: RealNode) -> None:
        """The process dies: nothing more runs, in-memory state is gone, the file stays."""
        await node.http.aclose()
        await node.service.cleanup()

    async def done_task(self, node: RealNode, text: str, cumulative: int) -> str:
        user = self.actors.users[0]
        body = signed_task(user, self.actors.node.address, self.network.domain, text, cumulative=cumulative)
        r = await node.http.post("/v1/tasks", json=body)
        assert r.status_code == 202, r.text
        tid = str(r.json()["id"])
        assert node.service.ctx is not None
        await node.service.ctx.worker.wait(tid)
        task = node.db.task(tid)
        assert task is not None and task.status is TaskStatus.DONE, task
        return tid


@pytest_asyncio.fixture(loop_scope="session")
async def rig(network: Contracts, actors: Actors, tmp_path: Path) -> AsyncIterator[NodeRig]:
    store = in_process_client(tmp_path / "store")
    try:
        yield NodeRig(network, actors, tmp_path / "node", store)
    finally:
        await store.aclose()


def _commits_of(c: Contracts, node: str, root: bytes) -> list[int]:
    logs = c.task_manager.contract.events.BatchCommitted().get_logs(
        from_block=c.deployment.deploy_block, argument_filters={"node": node}
    )
    return [int(e["args"]["batchId"]) for e in logs if bytes(e["args"]["root"]) == root]


# ------------------------------------------------------------------------------------------------
# Node: the batch committer and the settlement riding on it
# ------------------------------------------------------------------------------------------------


async def test_defence_a_node_killed_after_its_settling_commit_landed_commits_and_charges_once(
    rig: NodeRig,
) -> None:
    """Crash point: `commitBatch` (carrying the user's due voucher) is mined, then the node dies
    before `wait_commit` returns: no batch id, no proofs, no `settled` record in the database, the
    batch still ``sent``. Restarted on the same data dir, the node finds its own `BatchCommitted`
    by root before sending anything, stores the proofs (which verify against the on-chain root),
    its redeemer sees on chain that the voucher is settled and redeems nothing more, and its
    database copy of what was redeemed is corrected. One commit, one charge of exactly the fees of
    the done tasks."""
    c, a = rig.network, rig.actors
    user = a.users[0].address
    node = await rig.start()
    tids = [await rig.done_task(node, f"q{i}", FEE * (i + 1)) for i in range(2)]
    assert node.service.redeemer is not None
    assert [v.user for v, _ in await node.service.redeemer.due()] == [user], "due: rides on the commit"

    real_broadcast = node.chain.broadcast

    async def broadcast_then_die(commit: SignedCommit) -> None:
        await real_broadcast(commit)
        c.w3.eth.wait_for_transaction_receipt(commit.tx_hash)  # type: ignore[arg-type]  # mined
        raise Crash

    node.chain.broadcast = broadcast_then_die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await node.batcher.flush()
    [batch] = node.db.unfinished_batches()
    assert batch.status == "sent" and batch.chain_batch_id is None
    root = bytes.fromhex(batch.root[2:])
    assert len(_commits_of(c, a.node.address, root)) == 1, "the commit is on chain"
    charged = c.payments.channel(user, a.node.address).redeemed
    assert charged == 2 * FEE, "settled in the commit's transaction"
    assert node.db.redeemed(user) == 0, "never recorded: the node died first"
    await rig.kill(node)

    again = await rig.start()
    try:
        for b in again.db.unfinished_batches():  # what `Batcher.run_forever` does first
            await again.batcher.commit(b)
        assert again.service.redeemer is not None
        assert await again.service.redeemer.redeem_once() == [], "nothing left to redeem"
        [chain_id] = _commits_of(c, a.node.address, root)
        done = again.db.batch(batch.id)
        assert done is not None and (done.status, done.chain_batch_id) == ("committed", chain_id)
        assert c.payments.channel(user, a.node.address).redeemed == 2 * FEE, "charged once"
        assert again.db.redeemed(user) == 2 * FEE, "the database copy caught up with the chain"
        for tid in tids:
            row = again.db.receipt(tid)
            assert row is not None and row.proof is not None and row.batch_index is not None
            proof = [bytes.fromhex(p[2:]) for p in json.loads(row.proof)]
            leaf = Receipt.from_json(row.receipt_json).leaf()
            assert verify(proof, root, leaf, row.batch_index, 2)
        assert again.db.unfinished_batches() == [] and again.db.pending_receipts(10) == []
    finally:
        await rig.kill(again)


async def test_defence_a_commit_whose_nonce_was_taken_at_restart_is_dropped_at_once(rig: NodeRig) -> None:
    """Crash point: the signed `commitBatch` (nonce N) is persisted (`record_commit_tx`, status
    ``sent``) and the node dies before broadcasting it. At restart the node sends another
    transaction before the batcher re-broadcasts (here `fund_escrow`, what `DecoyPlanter.setup`
    sends on start; equally `ensure_registered` syncing a changed endpoint or model list, or an
    availability answer sent through the SDK's own nonce lock): it reads the pending nonce, N,
    since the stored commit is in no pool. The re-broadcast gets "nonce too low".

    Found by this review: `Web3Chain.wait_commit` then waited its whole timeout (120 s by default)
    for a receipt that could not come, holding this batch and every later one back, longer than
    the 60 s for inclusion that the worker's promise margin (`TaskWorker.commit_margin_s`) allows:
    an honest node could be slashed by an omission claim on a promise falling due meanwhile. Now
    every poll of the wait also looks at the account's mined nonce: the dead commit is dropped
    at once (with the default timeout), a fresh one is signed, and it lands once."""
    c, a = rig.network, rig.actors
    node = await rig.start()
    await rig.done_task(node, "only", FEE)

    async def die_before_broadcast(commit: SignedCommit) -> None:
        raise Crash

    node.chain.broadcast = die_before_broadcast  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await node.batcher.flush()
    [batch] = node.db.unfinished_batches()
    stored = node.db.commit_tx(batch.id)
    assert batch.status == "sent" and stored is not None
    _, _, nonce = stored
    await rig.kill(node)

    again = await rig.start()
    try:
        await again.chain.fund_escrow(1)  # the restarted node's first transaction: it takes nonce N
        assert c.w3.eth.get_transaction_count(a.node.address, "latest") > nonce, "N is used already"
        default_wait = inspect.signature(Web3Chain.wait_commit).parameters["timeout_s"].default
        [sent] = again.db.unfinished_batches()
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="can never land"):
            await again.batcher.commit(sent)
        assert time.monotonic() - started < 10 < default_wait  # not the whole wait
        # the next attempt signs a fresh commit, which lands once
        [resigned] = again.db.unfinished_batches()
        committed = await again.batcher.commit(resigned)
        root = bytes.fromhex(batch.root[2:])
        assert _commits_of(c, a.node.address, root) == [committed.chain_batch_id]
    finally:
        await rig.kill(again)


async def test_defence_a_node_killed_after_its_redemption_landed_never_charges_again(rig: NodeRig) -> None:
    """Crash point: the redeemer's own `Payments.redeem` is mined, then the node dies before
    `Redeemer.settled` records it. Restarted, the redeemer reads the channel on chain (the
    authority), finds nothing owed and sends nothing; the next commit carries no voucher of that
    user either. The user is charged exactly the fees of the done tasks, once."""
    c, a = rig.network, rig.actors
    user = a.users[0].address
    node = await rig.start()
    for i in range(2):
        await rig.done_task(node, f"r{i}", FEE * (i + 1))
    real_redeem = node.chain.redeem

    async def redeem_then_die(vouchers: object) -> str:
        await real_redeem(vouchers)  # type: ignore[arg-type]
        raise Crash

    node.chain.redeem = redeem_then_die  # type: ignore[method-assign]
    assert node.service.redeemer is not None
    with pytest.raises(Crash):
        await node.service.redeemer.redeem_once()
    assert c.payments.channel(user, a.node.address).redeemed == 2 * FEE
    assert node.db.redeemed(user) == 0, "never recorded"
    await rig.kill(node)

    again = await rig.start()
    try:
        assert again.service.redeemer is not None
        assert await again.service.redeemer.redeem_once() == []
        assert await again.service.redeemer.for_commit() == [], "nothing rides on the next commit"
        committed = await again.batcher.flush()
        assert committed is not None and committed.status == "committed"
        assert c.payments.channel(user, a.node.address).redeemed == 2 * FEE, "charged once"
        assert again.db.redeemed(user) == 2 * FEE
    finally:
        await rig.kill(again)


# ------------------------------------------------------------------------------------------------
# Validator: settling, claiming, delivering the refund
# ------------------------------------------------------------------------------------------------


async def test_defence_a_validator_killed_between_claim_and_record_claims_once_and_withdraws(
    game: Game,
) -> None:
    """Crash point: `claimVoteReward` is mined (bond and share credited to ``claimable``), then
    the voter dies before `set_challenge_status('claimed')` and before `withdraw`. Restarted, it
    claims again (reverts ``RewardAlreadyClaimed``: an expected race, swallowed), marks the row
    claimed, and still withdraws what is claimable: nothing is claimed twice, nothing is left
    behind, and the step does not raise."""
    g = game
    c, a = g.chain, g.actors
    challenger, voter, _, cid = await _sealed_voter(g)
    to_reveal_phase(c, cid)
    await voter.disputes.reveal_due()
    assert c.task_manager.get_vote(cid, a.validators[1].address).revealed
    _past_vote_window(c)
    challenger.follower.catch_up()
    await challenger.disputes.settle(challenger.client.timestamp() + 1)
    assert c.task_manager.get_challenge(cid).status == ChallengeStatus.FRAUD

    claim = voter.client.claim_vote_reward

    def claim_then_die(challenge_id: int) -> int:
        claim(challenge_id)
        raise Crash

    voter.client.claim_vote_reward = claim_then_die  # type: ignore[method-assign]
    voter.follower.catch_up()
    with pytest.raises(Crash):
        await voter.disputes.settle(voter.client.timestamp() + 1)
    won = _won(g, voter, cid)
    assert voter.client.claimable(a.validators[1].address) >= won, "credited, not withdrawn"
    voter.db.close()

    restarted = g.party(a.validators[1], g.stores["full"], "v1")
    restarted.follower.catch_up()
    balance = c.w3.eth.get_balance(a.validators[1].address)
    await restarted.disputes.settle(restarted.client.timestamp() + 1)
    await restarted.disputes.settle(restarted.client.timestamp() + 1)
    assert _claimed(c, cid, a.validators[1].address) == [won], "claimed once"
    assert restarted.client.claimable(a.validators[1].address) == 0, "withdrawn after the restart"
    assert c.w3.eth.get_balance(a.validators[1].address) > balance
    assert [r.status for r in restarted.db.challenges() if r.challenge_id == cid] == ["claimed"]


async def test_defence_a_validator_killed_after_resolving_before_its_record_still_claims(game: Game) -> None:
    """Crash point: a voter's `resolve` is mined (FRAUD), then it dies before writing ``resolved``.
    Restarted, its `resolve` reverts ``ChallengeNotOpen`` (an expected race), it reads the verdict
    from the chain, records it and claims its bond and share once."""
    g = game
    c, a = g.chain, g.actors
    _, voter, _, cid = await _sealed_voter(g)
    to_reveal_phase(c, cid)
    await voter.disputes.reveal_due()
    _past_vote_window(c)
    resolve = voter.client.resolve

    def resolve_then_die(challenge_id: int) -> bool:
        resolve(challenge_id)
        raise Crash

    voter.client.resolve = resolve_then_die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await voter.disputes.settle(voter.client.timestamp() + 1)
    assert c.task_manager.get_challenge(cid).status == ChallengeStatus.FRAUD
    assert [r.status for r in voter.db.challenges() if r.challenge_id == cid] == ["voted"]
    voter.db.close()

    restarted = g.party(a.validators[1], g.stores["full"], "v1")
    await restarted.disputes.settle(restarted.client.timestamp() + 1)  # before the follower: the race
    [row] = [r for r in restarted.db.challenges() if r.challenge_id == cid]
    assert (row.status, row.fraud) == ("claimed", True)
    assert _claimed(c, cid, a.validators[1].address) == [_won(g, restarted, cid)]


async def test_defence_a_crash_before_the_refund_delivery_delivers_it_at_restart(game: Game) -> None:
    """Crash point: the challenger's `settle` resolves its challenge (FRAUD, node slashed), writes
    ``resolved`` to its database, and dies before `_deliver_refund` sends `claimRefund` for the
    user who signed the faulty receipt. The same situation arises with no crash whenever anyone
    else resolves first (a voter, any account: `resolve` is open to all): the follower records
    `ChallengeResolved` as ``resolved`` (shown on a second challenge).

    Found by this review: the delivery ran only right after this validator's own resolve, so in
    both cases it never happened and the fee stayed in ``refundDue`` until the user itself ran
    `supernet task refunds`, against docs/validator.md's promise that the challenger's
    `claimRefund` gets it to the request's signer "even if that user is offline" (low severity:
    no money lost). Now the delivery goes with the claim of every ``resolved`` fraud challenge of
    this validator: after the restart, and after another's resolve, the user's refund is credited
    once (a second delivery is a ``NothingToWithdraw`` race, swallowed)."""
    g = game
    c, a = g.chain, g.actors
    batch_id, receipts, challenger, cid, voter = await _challenged(g)
    cast_votes(c, cid, [(v, True) for v in a.validators[1:]])
    _past_vote_window(c)
    challenger.follower.catch_up()

    def die(*args: object) -> int:
        raise Crash

    challenger.client.claim_refund = die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        await challenger.disputes.settle(challenger.client.timestamp() + 1)
    assert c.task_manager.get_challenge(cid).status == ChallengeStatus.FRAUD
    due = c.task_manager.get_challenge(cid).refund_due
    assert due > 0
    challenger.db.close()

    restarted = g.party(a.validators[0], g.stores["full"], "c")
    restarted.follower.catch_up()
    await restarted.disputes.settle(restarted.client.timestamp() + 1)
    await restarted.disputes.settle(restarted.client.timestamp() + 1)
    assert [r.status for r in restarted.db.challenges() if r.challenge_id == cid] == ["claimed"]
    user = receipts[0].user
    assert c.task_manager.get_challenge(cid).refund_due == 0
    # the offline user can withdraw its fee: its signed maxFee (the receipt's fee), out of the held cap
    assert restarted.client.claimable(user) == receipts[0].fee < due

    # no crash: someone else resolves first; the challenger still delivers, once
    cid2 = vgame._open(restarted, batch_id, receipts, index=1)
    cast_votes(c, cid2, [(v, True) for v in a.validators[1:]])
    _past_vote_window(c)
    voter.follower.catch_up()
    await voter.disputes.settle(voter.client.timestamp() + 1)  # the voter wins the resolve race
    assert c.task_manager.get_challenge(cid2).status == ChallengeStatus.FRAUD
    due2 = c.task_manager.get_challenge(cid2).refund_due
    user2 = receipts[1].user
    before = restarted.client.claimable(user2)
    restarted.follower.catch_up()
    await restarted.disputes.settle(restarted.client.timestamp() + 1)
    assert c.task_manager.get_challenge(cid2).refund_due == 0 < due2
    assert restarted.client.claimable(user2) == before + receipts[1].fee
    [row2] = [r for r in restarted.db.challenges() if r.challenge_id == cid2]
    await restarted.disputes._deliver_refund(row2)  # again: a race, swallowed, nothing moves
    assert restarted.client.claimable(user2) == before + receipts[1].fee
