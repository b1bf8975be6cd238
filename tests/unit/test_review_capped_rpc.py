"""Review: a hosted RPC that caps ``eth_getLogs`` block ranges, from the side of the VALIDATOR, the
USER'S CLIENT and the EXPLORER (the node's claim responder was reviewed and fixed last session:
tests/unit/test_review_node_answers.py).

The RPC here is `capped_rpc`: a real JSON-RPC proxy (tests/rpc_proxy.py) in front of the real Anvil
that answers an ``eth_getLogs`` over more than ``CAP`` blocks with a JSON-RPC error, as hosted
providers do (10,000 blocks on many L1 providers; 2,000, 1,000, 500 or fewer on others and on free
tiers). That refusal is the one FAKE (Anvil has no cap); every other part is real: Anvil, the
compiled contracts, the embedded content stores, `TaskManagerClient`, `Follower`, `Database`,
`Disputes`, `Verifier`, the SDK's `Client`, the explorer's `Indexer`. ``CAP`` is 64 blocks, a
scale model of 10,000 (Anvil mines 10,000 blocks too slowly for the time limit); what matters is
only "older than the cap". Where the validator's follower must keep up, the chain is aged in
steps it follows (`_age`), as a running validator does.

Scope: every ``eth_getLogs`` the validator, the client and the explorer make; which duties need a
query wider than the cap; whether a node can steer an honest party into one. Line numbers are at
commit a255ce0.

Found:

- HIGH, test_defence_a_restarted_validator_cannot_sample_or_challenge_a_batch_it_recorded: a batch
  header not in the validator's memory is looked up from block 0 (`TaskManager.batch`,
  sdk/supernet/sdk/chain/tasks.py:423-436, called by `TaskManagerClient.batch`,
  validator/supernet/validator/chain.py:358-364), a query over the whole chain, refused by every
  capped RPC of any public chain whatever the deployment's or the batch's age (the batch here is 2
  blocks old). After a restart the validator cannot sample, tell a window, challenge, claim
  availability or claim a manifest for any batch it recorded before; the database row it holds has
  the commit block (`BatchRow.commit_block`) and is not used.
- HIGH, test_defence_a_flood_of_commits_evicts_the_cheats_header_so_no_challenge_can_be_sent: the
  same lookup without a restart. The header cache keeps the last ``BATCH_CACHE`` = 4,096 headers
  (chain.py:40, 366-369); a node that commits its cheat and then 4,096 one-entry batches (or a busy
  network: 4,096 batches a day is one every 21 s) pushes the cheat's header out of every validator
  at once, and no validator on a capped RPC can challenge it. (Scaled: a cache of 4, a flood of 4.)
- HIGH, test_defence_an_entry_the_node_posts_late_cannot_be_read_by_its_voters: the entries posted
  on chain by availability answers are read from the batch's commit block to the head
  (`TaskManagerClient.availability_answers`, chain.py:521-523, from `Disputes.posted`,
  challenger.py:284; `manifest_receipts` the same, omission.py:187-190). The node chooses when it
  answers (up to a vote window after the claim, itself up to a challenge window after the commit),
  so it can post the withheld trace of its challenged cheat where no voter on a capped RPC can read
  it: `vote_open` raises an RPC error (not a `ManifestError`), no vote is sealed, the fraud vote
  misses its quorum. On L1 a late challenge suffices at 10,000 blocks; on a 2 s L2 (5.5 h) or a
  2,000-block cap, every answered claim.
- HIGH on chains with ``seed_source = BLOCKHASH``,
  test_defence_on_a_blockhash_chain_no_challenge_once_the_sealed_seed_block_is_older_than_the_cap:
  `TaskManager.seal_seed_block` (tasks.py:527-559) asks `SeedBeacon.sealed` (beacon.py:144-151:
  ``Sealed`` logs from the seed block to the head) on every challenge and availability claim; once
  someone sealed the seed and the seed block is older than the cap, the refusal is a ``Web3RPCError``, not a
  `ChainError`, so `_sealed_ref` (tasks.py:471-481) lets it abort the challenge, even with the
  header in hand. On a 0.25 s chain the cap is 42 minutes of a 1-day window.
- MEDIUM, test_defence_a_user_cannot_verify_a_committed_receipt_through_a_capped_rpc: `Client.verify`
  looks its batch up from block 0 (sdk/supernet/sdk/client/client.py:857-860): on a capped RPC
  every committed receipt's verification raises; the receipt's own ``txHash`` is not used.
- MEDIUM, test_defence_a_user_cannot_claim_a_refund_once_the_deployment_is_older_than_the_cap:
  `Client.claim_refunds` (client.py:990-991, and the CLI, client_cli.py:224) reads every
  ``ChallengeOpened`` from the deployment block to the head in one query
  (`TaskManager.challenged_receipts`, tasks.py:401-407): refused; the refund a fraud verdict holds
  for the user is never credited.
- MEDIUM, test_defence_a_validator_or_explorer_behind_by_more_than_the_cap_never_catches_up: the
  follower and the explorer's indexer read fixed 2,000-block ranges (follower.py:64,83;
  indexer.py:90,104), not configurable (service.py:312, explorer/cli.py:79) and not narrowed when
  refused: on an RPC capping below 2,000 blocks a fresh validator or explorer, or one that was down
  for more than the cap, never advances (every batch unchecked, the explorer frozen).

All seven FIXED in the twenty-seventh session, by design: one ranged log reader
(`supernet.sdk.chain.logs.LogRanges`: ranges halved when refused, grown back after a few read;
`Binding.logs` / `last_logs`) for every log query of the SDK, the node, the validator (follower,
refusals, votes, posted entries) and the explorer; a batch header read in its commit block (the
validator's database, `TaskManagerClient.commit_block_of`; the user's receipt document's commit
transaction) or searched back from the head, never from block 0, and an id never committed refused
at once (`batchCount`); `SeedBeacon.sealed` reads the beacon's storage (no log query); refunds read
from a mark kept in the client's state. The tests above were ``test_attack_*`` and are now
``test_defence_*``.

Checked and holding:

- test_defence_a_restarted_validator_votes_reveals_resolves_and_collects_by_id: a restarted voter
  with no header cached seals, reveals, resolves, claims its reward and withdraws through the capped
  RPC (all by challenge id: no log range); a refused ``VoteCommitted`` read is caught
  (`Disputes._committed`).
- (read) the follower and the indexer themselves work on a cap of at least 2,000 blocks (ranged);
  `Manifests._follow_refusals` reads in 2,000-block ranges (same limit as the follower);
  `committed_vote` starts at the challenge's block and degrades to "unknown"; the explorer's pages
  read headers from its own index (tests/unit/test_review_explorer2.py), never from block 0; the
  node responder is ranged and halves (test_review_node_answers.py).
- (read) a node cannot make a header unreadable to a validator whose lookup is ranged: the event
  sits at ``commitBlock``, which the header carries and the contract checks (`isCommitted`); a
  wrong block from a node finds nothing, it never finds another batch.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from chain_fixtures import CHAIN_TEST_PARAMS, Actors, cast_votes, make_receipts, make_request, stake_network
from rpc_proxy import rpc_proxy
from sqlalchemy.orm import Session
from supernet.explorer.chain import ChainReader
from supernet.explorer.db.engine import open_database
from supernet.explorer.indexer import Indexer, get_cursor
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import advance_to, increase_time, mine
from supernet.sdk.chain.contracts import make_web3
from supernet.sdk.client.client import Client, RefundClaimed
from supernet.sdk.client.state import ClientState, TaskRecord
from supernet.sdk.store.cids import compute_cid, encode_dag
from supernet.validator import chain as vchain
from supernet.validator.chain import TaskManagerClient
from supernet.validator.challenger import Disputes
from supernet.validator.db import Database
from supernet.validator.evidence import Check, Finding, Verdict
from supernet.validator.follower import Follower
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import Verifier

from tests.unit import test_review_validator_game as vgame
from tests.unit.test_review_client_verify import FEE, MODEL, _receipt_doc, _serve, _trace
from tests.unit.test_review_validator_funds import _commit
from tests.unit.test_review_validator_game import Game, Party, _open

game = vgame.game  # the fixture: real Anvil, the staked network and two embedded stores

pytestmark = [pytest.mark.anvil, pytest.mark.asyncio(loop_scope="session")]

CAP = 64
"""Blocks a query may span on the capped RPC: a scale model of a hosted provider's 10,000."""


# ------------------------------------------------------------------------------------------ helpers


def _head(upstream: str) -> int:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}).encode()
    request = urllib.request.Request(upstream, body, {"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return int(json.loads(resp.read())["result"], 16)


def _number(tag: Any, upstream: str) -> int:
    if tag is None or tag in ("latest", "pending", "safe", "finalized"):  # JSON-RPC's default: latest
        return _head(upstream)
    if tag == "earliest":
        return 0
    return int(tag, 16) if isinstance(tag, str) else int(tag)


@contextmanager
def capped_rpc(upstream: str, cap: int = CAP) -> Iterator[tuple[str, list[tuple[int, int]]]]:
    """FAKE (Anvil has no cap): the real Anvil behind a JSON-RPC proxy that refuses an
    ``eth_getLogs`` over more than ``cap`` blocks with a JSON-RPC error, as a hosted provider does.
    Yields (its URL, the (first, last) of every query it refused)."""
    refused: list[tuple[int, int]] = []

    def rewrite(request: dict[str, Any], _forward: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        if request.get("method") != "eth_getLogs":
            return None
        query = request["params"][0]
        if query.get("blockHash"):
            return None
        first, last = _number(query.get("fromBlock"), upstream), _number(query.get("toBlock"), upstream)
        if last - first + 1 <= cap:
            return None
        refused.append((first, last))
        error = {"code": -32005, "message": f"eth_getLogs is limited to a {cap} block range"}
        return {"jsonrpc": "2.0", "id": request["id"], "error": error}

    with rpc_proxy(upstream, rewrite) as (url, _seen):
        yield url, refused


def _party(g: Game, account: Any, url: str, name: str, store: str = "full") -> Party:
    """A validator's dispute stack (as `Game.party`) connected to the RPC at ``url`` the way the
    service connects (`TaskManagerClient.connect`); its database is ``name``'s (a restart reopens it)."""
    dep = g.chain.deployment
    client = TaskManagerClient.connect(url, dep, account)
    db = Database(g.tmp / f"{name}.sqlite")
    follower = Follower(client, db, dep.deploy_block)
    st = g.stores[store]
    verifier = Verifier(st, None, RegistryRunner(st), g.chain.domain, account.address)
    disputes = Disputes(client, db, verifier, st, account.address)
    return Party(account, client, db, follower, disputes)


def _age(c: Contracts, blocks: int, *parties: Party) -> None:
    """Mine ``blocks`` blocks while the parties' followers keep up (a running validator polls every
    few seconds: each of its log reads spans the blocks new since the last, within the cap)."""
    while blocks > 0:
        n = min(blocks, CAP // 2)
        mine(c.w3, n)
        blocks -= n
        for p in parties:
            p.follower.catch_up()


def _try(duties: dict[str, Callable[[], Any]]) -> dict[str, str]:
    failed = {}
    for name, duty in duties.items():
        try:
            duty()
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {str(exc)[:90]}"
    return failed


def _never_stored(tag: str) -> str:
    return compute_cid(encode_dag({"capped rpc review, never stored": tag}), "dag-cbor")


# ------------------------------------------------------------------------------------ the validator


async def test_defence_a_restarted_validator_cannot_sample_or_challenge_a_batch_it_recorded(
    game: Game,
) -> None:
    """HIGH. No attacker needed: the honest validator restarts (an upgrade, a crash) with a batch
    recorded and pending in its database. Safe: the restarted validator samples the batch, tells its
    window, and can challenge an entry and claim another unavailable. Today each of these looks the
    header up with one ``eth_getLogs`` from block 0 to the head (`TaskManagerClient.batch` ->
    `TaskManager.batch`, ``from_block=0``): refused by the capped RPC, for a batch 2 blocks old. The
    batch stays pending and unchecked for good (`_deferred`, every step); its cheat is never
    challenged by this validator."""
    g = game
    c, a = g.chain, g.actors
    me = a.validators[1]
    with capped_rpc(str(c.deployment.rpc_url)) as (url, refused):
        before = _party(g, me, url, "restart")
        before.follower.catch_up()
        _age(c, CAP, before)  # the chain's head is past the cap (a public chain's is by millions)
        batch_id, receipts = await _commit(g, a.node, 2, "restart")
        before.follower.catch_up()
        row = before.db.batch(batch_id)
        assert row is not None and row.status == "pending", "recorded by the follower, not checked yet"
        before.db.close()
        after = _party(g, me, url, "restart")  # the restart: a new process, the same database
        after.follower.catch_up()
        tree = ReceiptTree(receipts)
        failed = _try(
            {
                "sample (Validator._open_batch -> batch_seed)": lambda: after.client.batch_seed(batch_id),
                "window (Validator._window_over -> batch)": lambda: after.client.batch(batch_id),
                "challenge (open_challenge)": lambda: after.client.open_challenge(
                    batch_id, 0, receipts[0], tree.proof_at(0), "bafy-evidence"
                ),
                "availability claim (challenge_availability)": lambda: after.client.challenge_availability(
                    batch_id, 1
                ),
            }
        )
        age = c.w3.eth.block_number - row.commit_block
        after.db.close()
    assert not failed, (
        f"after a restart the validator cannot act on batch {batch_id} ({age} blocks old; its database "
        f"holds its commit block {row.commit_block}): {failed}; the capped RPC refused {len(refused)} "
        f"queries, e.g. blocks {refused[:1]} (TaskManager.batch reads from block 0)"
    )


async def test_defence_a_flood_of_commits_evicts_the_cheats_header_so_no_challenge_can_be_sent(
    game: Game, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HIGH. Attack (the node, alone): it commits its cheat, then ``BATCH_CACHE`` one-entry batches
    (scaled down here: a cache of 4 for 4,096, monkeypatched; the code is otherwise the real one).
    Every validator's follower reads them all and its header cache (the last ``BATCH_CACHE``) drops
    the cheat's header; the validator that found the cheat then challenges it and the header is
    looked up from block 0: refused. Safe: the challenge is opened. At 4,096 commits of the gas
    measured here (~68,000), the flood costs ~280 M gas: ~2.8 ether on L1 at 10 gwei, cents on an L2, for a
    cheat no validator on a capped RPC can challenge; a busy network evicts as much on its own."""
    flood = 4
    monkeypatch.setattr(vchain, "BATCH_CACHE", flood)
    g = game
    c, a = g.chain, g.actors
    with capped_rpc(str(c.deployment.rpc_url)) as (url, refused):
        v = _party(g, a.validators[1], url, "evicted")
        v.follower.catch_up()
        _age(c, CAP, v)
        cheat, receipts = await _commit(g, a.node, 2, "cheat")
        v.follower.catch_up()
        assert cheat in v.client._batches, "the cheat's header was read with its event: cached"
        tm = c.as_account(a.node).task_manager
        gas = [
            int(tm.commit_batch(bytes([i + 1]) * 32, 1, _never_stored(f"flood {i}")).receipt["gasUsed"])
            for i in range(flood)
        ]
        v.follower.catch_up()
        failed = _try(
            {
                "challenge": lambda: v.client.open_challenge(
                    cheat, 0, receipts[0], ReceiptTree(receipts).proof_at(0), "bafy-evidence"
                )
            }
        )
        v.db.close()
    per_commit = sum(gas) // len(gas)
    assert not failed, (
        f"{flood} one-entry commits ({per_commit} gas each; 4,096 of them: "
        f"{4096 * per_commit / 1e6:.0f} M gas) evicted the cheat's header (batch {cheat}); its "
        f"challenge failed: {failed} ({len(refused)} refused queries, e.g. {refused[:1]})"
    )


async def test_defence_an_entry_the_node_posts_late_cannot_be_read_by_its_voters(game: Game) -> None:
    """HIGH. Attack (the node): it withholds the trace of its cheat (entry 0) from everyone but the
    validator it baits, which challenges. Voters cannot read the trace; it is claimed unavailable;
    the node answers the claim late (its answer window is a vote window; here after 2 x CAP blocks),
    posting the trace on chain. Safe: the voters read the posted entry (`Disputes.posted`) and
    vote. Today `posted` reads ``AvailabilityAnswered`` from the batch's commit block to the head:
    refused; `vote_open` raises an RPC error (not a `ManifestError`) and no vote is sealed."""
    g = game
    c, a = g.chain, g.actors
    withheld = encode_dag({"kind": "the cheat's trace, withheld, then posted late", "n": 0})
    with capped_rpc(str(c.deployment.rpc_url)) as (url, refused):
        voter = _party(g, a.validators[1], url, "late-voter")
        voter.follower.catch_up()
        batch_id, receipts = await _commit(g, a.node, 2, "late", withheld={0: withheld})
        challenge = _open(g.party(a.validators[0], g.stores["full"], "bait"), batch_id, receipts, 0)
        voter.follower.catch_up()
        aid = c.as_account(a.validators[2]).task_manager.challenge_availability(batch_id, 0).value
        _age(c, 2 * CAP, voter)  # the node waits (the chain's clock does not move: still in time)
        node_tm = c.as_account(a.node).task_manager
        node_tm.answer_availability(aid, receipts[0], ReceiptTree(receipts).proof_at(0), withheld)
        voter.follower.catch_up()
        row = voter.db.batch(batch_id)
        assert row is not None
        errors: list[str] = []
        try:
            await voter.disputes.vote_open(voter.client.timestamp())
        except Exception as exc:  # what `Validator.step` would log and retry, every step
            errors.append(f"vote_open: {type(exc).__name__}: {str(exc)[:90]}")
        readable = False
        try:
            readable = (await voter.disputes.posted(row)).readable(0)
        except Exception as exc:
            errors.append(f"posted: {type(exc).__name__}: {str(exc)[:90]}")
        sealed = c.task_manager.get_vote(challenge, a.validators[1].address).weight
        voter.db.close()
    assert readable and not errors, (
        f"the voter cannot read the trace the node posted on chain for challenge {challenge} "
        f"(vote sealed: {bool(sealed)}): {errors}; refused queries {refused[:2]} "
        "(Disputes.posted reads from the batch's commit block)"
    )


async def test_defence_on_a_blockhash_chain_no_challenge_once_the_sealed_seed_block_is_older_than_the_cap(
    network: Contracts, actors: Actors
) -> None:
    """HIGH where the deployment's seed source is ``BLOCKHASH`` (chains whose prevrandao is
    constant). A validator challenges entry 0 (its challenge seals the seed block). Later than the
    cap (here 300 blocks, past the 256 of ``blockhash`` too) another validator, holding the batch's
    header (no lookup needed), challenges entry 1. Safe: the challenge is opened. Today
    `seal_seed_block` asks `SeedBeacon.sealed`, one ``eth_getLogs`` from the seed block to the head:
    refused, and the ``Web3RPCError`` is not a `ChainError`, so `_sealed_ref` does not catch it and
    the challenge is never sent (an availability claim goes the same way)."""
    a = actors
    c = Contracts.deploy(
        str(network.deployment.rpc_url), a.deployer, replace(CHAIN_TEST_PARAMS, seed_source=0)
    )
    stake_network(c, a)  # reverted with the rest by the `chain` fixture's snapshot
    receipts = make_receipts(c, a.users, a.node.address, 2)
    tree = ReceiptTree(receipts)
    header = c.as_account(a.node).task_manager.commit_batch(tree.root, 2, _never_stored("bh")).value
    mine(c.w3, 3)
    first = c.as_account(a.validators[0]).task_manager
    first.challenge(header, 0, receipts[0], tree.proof_at(0), "bafy-evidence")
    seed_block = first.seed_block(header)
    assert first.seed_beacon.sealed(seed_block), "the first challenge sealed the seed block"
    mine(c.w3, 300)
    with capped_rpc(str(c.deployment.rpc_url)) as (url, refused):
        second = Contracts.connect(url, c.deployment, a.validators[1]).task_manager
        failed = _try(
            {"challenge": lambda: second.challenge(header, 1, receipts[1], tree.proof_at(1), "bafy-evidence")}
        )
    assert not failed, (
        f"a challenge with the batch's header in hand failed {c.w3.eth.block_number - seed_block} blocks "
        f"after its sealed seed block: {failed}; refused {refused[:1]} (SeedBeacon.sealed from its block)"
    )


async def test_defence_a_restarted_validator_votes_reveals_resolves_and_collects_by_id(game: Game) -> None:
    """A voter restarted with no header in memory, on the capped RPC, after the chain passed the
    cap: it seals its vote (`Disputes.vote_open`; the batch row and manifest come from its database
    and store), reveals it (`reveal_due`), resolves the challenge, claims its reward and withdraws
    (`settle`): all by challenge id, no log range. (The re-execution is a stand-in verdict, as in
    tests/unit/test_review_validator_liveness.py: the checks are not under review here.)"""
    g = game
    c, a = g.chain, g.actors
    me = a.validators[1]
    with capped_rpc(str(c.deployment.rpc_url)) as (url, refused):
        first = _party(g, me, url, "voter-restart")
        first.follower.catch_up()
        _age(c, CAP, first)
        batch_id, receipts = await _commit(g, a.node, 2, "vote")
        challenge = _open(g.party(a.validators[0], g.stores["full"], "c"), batch_id, receipts, 0)
        first.follower.catch_up()
        first.db.close()
        voter = _party(g, me, url, "voter-restart")  # restarted
        voter.follower.catch_up()

        async def verify(batch: int, node: str, index: int, manifest: Any, **_kw: Any) -> Verdict:
            found = (Finding(Check.TRACE, "output is not the trace's"),)
            return Verdict(batch, index, manifest.leaf(index), findings=found, validator=me.address)

        voter.disputes.verifier.verify = verify  # type: ignore[method-assign]
        await voter.disputes.vote_open(voter.client.timestamp())
        sealed = c.task_manager.get_vote(challenge, me.address)
        advance_to(c.w3, c.task_manager.reveals_at(challenge))
        mine(c.w3)
        await voter.disputes.reveal_due()
        revealed = c.task_manager.get_vote(challenge, me.address).revealed
        increase_time(c.w3, c.task_manager.vote_window() + 60)
        mine(c.w3)
        before = c.w3.eth.get_balance(me.address)
        await voter.disputes.settle(voter.client.timestamp())
        status = c.task_manager.get_challenge(challenge).status
        gained = c.w3.eth.get_balance(me.address) - before
        voter.db.close()
    assert sealed.weight and revealed, "sealed and revealed through the capped RPC"
    assert status.name == "FRAUD" and gained > 0, (status, gained, refused)


# ---------------------------------------------------------------------------------------- the user


async def test_defence_a_user_cannot_verify_a_committed_receipt_through_a_capped_rpc(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """MEDIUM. No attacker needed: the user verifies a receipt committed 2 blocks ago, through its
    wallet's hosted RPC. Safe: the report checks the receipt's inclusion in the on-chain root.
    Today `Client.verify` looks the batch up from block 0 (client.py:857-860): refused, and
    `verify` raises: no report at all, for any committed receipt, on any capped RPC (the receipt
    document carries the commit's ``txHash``, which would find the event with no range).
    (The node's HTTP answers are stand-ins, tests/unit/test_review_client_verify.py `_serve`; the
    chain and the `Client` are real.)"""
    c, a = network, actors
    mine(c.w3, CAP)
    user = a.users[0]
    task_id = "0x" + hashlib.sha256(b"capped rpc: verify").hexdigest()
    trace = _trace(task_id, user.address)
    doc, receipt = _receipt_doc(a.node, task_id=task_id, user=user.address, trace_doc=trace, commit_by=None)
    # a one-entry batch: its root is the leaf, its proof empty
    tx = c.as_account(a.node).task_manager.commit_batch(receipt.leaf(), 1, doc["batch"]["manifestCid"])
    doc["batch"].update(
        chainBatchId=tx.value.batch_id, txHash="0x" + bytes(tx.receipt["transactionHash"]).hex()
    )
    mine(c.w3, 2)
    checks: dict[str, bool] = {}
    error = None
    with capped_rpc(str(c.deployment.rpc_url)) as (url, refused):
        client = Client(Contracts.connect(url, c.deployment, user), state_dir=tmp_path)
        client.state.tasks[task_id] = TaskRecord(
            a.node.address,
            "http://node",
            "hi",
            MODEL,
            FEE,
            output="hello",
            status="done",
            sent_seq=1,
            done_seq=2,
        )
        _serve(client, a.node, doc, trace)
        try:
            report = await client.verify(task_id, wait_committed=0)
            checks = {ch.name: ch.ok for ch in report.checks}
        except Exception as exc:
            error = f"{type(exc).__name__}: {str(exc)[:100]}"
        finally:
            await client.aclose()
    assert error is None and checks.get("merkle inclusion") and checks.get("batch node"), (
        f"the user could not verify receipt {task_id[:10]} of batch {tx.value.batch_id}: {error or checks}; "
        f"refused {refused[:1]} (Client.verify -> TaskManager.batch from block 0)"
    )


async def test_defence_a_user_cannot_claim_a_refund_once_the_deployment_is_older_than_the_cap(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """MEDIUM. No attacker needed: the user's task was proven faulty (fraud verdict) and its refund
    waits for ``claimRefund``. Safe: `Client.claim_refunds` (``supernet`` CLI's refunds command)
    credits it. Today it reads every ``ChallengeOpened`` from the deployment block to the head in
    one query: refused once the deployment is older than the cap; the refund stays unclaimed."""
    c, a = network, actors
    receipts = make_receipts(c, a.users, a.node.address, 3)
    tree = ReceiptTree(receipts)
    batch_id = c.as_account(a.node).task_manager.commit_batch(tree.root, 3, _never_stored("refund")).value
    bad = receipts[1]
    user = next(u for u in a.users if u.address == bad.user)
    task_id = "0x" + bad.request_hash.hex()
    state = ClientState.open(tmp_path)
    state.tasks[task_id] = TaskRecord(
        a.node.address, "http://127.0.0.1:9", "task 1", "0x" + bad.model_id.hex(), bad.fee,
        status="done", request=make_request(a.users, a.node.address, 1).to_json(),
    )  # fmt: skip
    state.save()
    mine(c.w3, 2)
    challenger = c.as_account(a.validators[0]).task_manager
    cid = challenger.challenge(batch_id, 1, bad, tree.proof_at(1), "bafy-evidence").value
    cast_votes(c, cid, [(a.validators[1], True)])
    increase_time(c.w3, c.params.vote_window + 1)
    assert challenger.resolve(cid).value["fraud"]
    mine(c.w3, CAP)  # the deployment is older than the cap (10,000 L1 blocks: 1.4 days)
    got: list[RefundClaimed] | str
    with capped_rpc(str(c.deployment.rpc_url)) as (url, refused):
        async with Client(Contracts.connect(url, c.deployment, user), state_dir=tmp_path) as client:
            try:
                got = await client.claim_refunds()
            except Exception as exc:
                got = f"{type(exc).__name__}: {str(exc)[:100]}"
    assert got == [RefundClaimed(task_id, cid, bad.fee)], (
        f"the user's refund of challenge {cid} ({bad.fee} wei) was not claimed: {got}; refused {refused[:1]} "
        "(claim_refunds reads ChallengeOpened from the deployment block in one query)"
    )


# ------------------------------------------------------------------------- following: both daemons


async def test_defence_a_validator_or_explorer_behind_by_more_than_the_cap_never_catches_up(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """MEDIUM. No attacker needed: an RPC capping below the follower's and the indexer's fixed
    2,000-block range (here 64: providers cap at 1,000, 500 or fewer), and a validator or an
    explorer more than the cap behind (a fresh one starts at the deployment block; any downtime
    longer than the cap). Safe: both read in ranges the RPC accepts and reach the batch committed
    since. Today each step asks for the same refused range again, for ever: the validator checks
    nothing, the explorer shows nothing new."""
    c, a = network, actors
    mine(c.w3, CAP)
    header = c.as_account(a.node).task_manager.commit_batch(b"\x07" * 32, 1, _never_stored("follow")).value
    mine(c.w3, 2)
    dep = c.deployment
    errors: list[str] = []
    with capped_rpc(str(dep.rpc_url)) as (url, refused):
        db = Database(tmp_path / "fresh.sqlite")
        follower = Follower(TaskManagerClient.connect(url, dep, a.validators[1]), db, dep.deploy_block)
        engine = open_database("sqlite://")
        indexer = Indexer(engine, ChainReader(make_web3(url), dep), None, start_block=dep.deploy_block)
        for name, step in (("validator", follower.step), ("explorer", indexer.step)):
            for _ in range(3):  # three polls
                try:
                    step()
                except Exception as exc:
                    errors.append(f"{name}: {type(exc).__name__}")
        validator_at = db.cursor(default=dep.deploy_block)
        with Session(engine) as s:
            explorer_at = get_cursor(s, dep.deploy_block)
        db.close()
    assert min(validator_at, explorer_at) > header.commit_block, (
        f"after three polls the validator reads from block {validator_at} and the explorer from "
        f"{explorer_at}; batch {header.batch_id} is in block {header.commit_block}: {errors}; "
        f"{len(refused)} refused queries, e.g. {refused[:1]} (fixed 2,000-block ranges)"
    )
