"""Review 16: the session's changes since 3e982e9, attacked from Python on the real parts.

Scope: (1) `bindings.next_nonce` taking max(pending, latest) and `Web3Chain.wait_commit`
judging a commit dead only when it still is one poll later; (2) held earnings as the SDK, the CLI
(`supernet node earnings|withdraw`) and the node see them; (3) the explorer's second review fixes
(reorg during a scan, `ChainReader.check_chain` / `WrongChain`, batch sampling computed locally).
The contracts alone were reviewed in contracts/test/Review13.t.sol and Review14.t.sol (not
repeated). Real parts: Anvil with the compiled contracts (``network``), the real node service with
the FAKE executor (``rig`` of test_review_crash_consistency), the real `Indexer`/`ChainReader`,
the Typer CLI, and tests/rpc_proxy.py (a real JSON-RPC proxy in front of Anvil) for a lying RPC.
Arranged timing (the only way to hit a window deterministically, named in each test): a real
reorg (``evm_revert`` then a different branch) or a real transaction sent from inside the proxy
or a reader call at the moment a test names.

Found (all five fixed: each test was a failing ``test_attack_*``, now a ``test_defence_*``):

- MEDIUM (an RPC failing over to another chain wipes the explorer's index, the very case
  `WrongChain` was added for): `Indexer.step` runs `check_reorg` before `_scan`, and only `_scan`
  calls `check_chain`. On another chain none of the recorded block hashes match, so `check_reorg`
  takes it for "a reorg with nothing in common", deletes every event, every receipt read from the
  manifests and every derived table, and rewinds the cursor to the deploy block, all before
  anything asks for the chain id. A moment's misrouting costs a full re-index and a re-read of
  every manifest (receipts whose manifests the store no longer holds are lost for good).
  ``test_defence_an_rpc_on_another_chain_is_refused_before_the_reorg_check``
  FIXED: `Indexer.step` checks the chain id first, from a client that caches nothing (the SDK's
  caches it per thread).
- MEDIUM (orphaned events kept for ever, the new branch's skipped): the pinned-hash check covers
  a reorg *inside* `_scan`, not one between `check_reorg` and `_scan` (the ``head()`` read lies
  between them). The new branch's range is then consistent with itself and is recorded on top of
  the index's old-branch blocks; its last block becomes the newest recorded hash, so every later
  `check_reorg` finds it on chain and never looks below: a ``deregister`` that is not on chain
  shows a live node as gone, and the new branch's event in the replaced block is never indexed.
  ``test_defence_a_reorg_between_the_reorg_check_and_the_scan_is_undone``
  FIXED: `_scan` also re-reads the newest block recorded before its range and records nothing
  when it changed (the next step's reorg check undoes it).
- MEDIUM (one wrong nonce answer stalls the node's commits until some other transaction happens
  to fill the gap): `next_nonce` now trusts the RPC's *latest* count too (max with pending). One
  answer too high (a lying RPC, a load balancer's backend on a longer branch that is then
  orphaned) and the commit is signed above a gap: the pool holds it queued, `wait_commit` sees
  the count at or below its nonce ("may still land") and raises `CommitPending` every time; the
  batcher re-broadcasts the same bytes for ever and cuts no new batch meanwhile (its promises
  fall due: omission claims). Nothing in the node looks for a gap below its own commit.
  ``test_defence_one_latest_nonce_count_too_high_is_a_gap_the_node_fills``
  FIXED: a commit broadcast again with a gap under it that nothing of the process holds gets the
  gap filled by 0-value transfers to itself (`bindings.fill_nonce_gap`, at most 8), and lands as
  signed (`test_defence_a_gap_filler_never_takes_a_nonce_this_process_holds`).
- LOW (the dead-commit re-check crashes): `wait_commit` re-polls a dead-looking commit once
  (node/supernet/node/service/chain.py, ``if receipt is _DEAD: ... receipt = mined()``), but
  `mined()` can answer None there (the nonce no longer used: the other transaction reorged out,
  or a lagging backend of a load balancer, the very case the re-check was added for), and the
  code then reads ``receipt["status"]``: ``TypeError: 'NoneType' object is not subscriptable``
  instead of waiting on for a commit that can now land (the batcher retries after `RETRY_S`).
  ``test_defence_a_dead_commit_whose_nonce_frees_again_is_waited_for``
  FIXED: dead only on two polls in a row, inside the poll loop (None keeps waiting).
- LOW (`supernet node withdraw` fails while the node's daemon settles): the CLI reads the
  earnings (`Payments.account`) and the held part (`heldEarnings`) in two calls at "latest";
  a redemption landing between them makes "withdrawable" negative, which is truthy, so the CLI
  sends `withdrawEarnings` and dies on ``EarningsHeld`` (exit 1) where nothing is free
  (`status` prints a negative amount).
  ``test_defence_a_redemption_between_the_clis_reads_never_fails_withdraw``
  FIXED: both read at one block number, and never below 0.

Checked and holding:

- the CLI shows held fees with their release time and withdraws only the free part, never
  reverting while everything is held, and pays them once the hold has passed
  (``test_defence_the_cli_withdraws_only_free_earnings_and_says_when_the_rest_is``);
- an RPC whose block hashes flap never makes `catch_up` spin or record a range: each step reads
  once, the cursor stays, and the range is indexed once the answers agree
  (``test_defence_flapping_block_hashes_never_spin_the_indexer_nor_record_a_range``);
- a contract committing several batches in one transaction: the explorer's `_seed` picks the
  ``BatchCommitted`` of the batch's own id (checked by reading; not repeated as a test);
- `WrongChain` at start refuses only another chain id: an unreachable RPC at start is a warning
  and the indexer retries (cli.py), so a legitimate restart is not blocked.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest
from chain_fixtures import Actors
from rpc_proxy import Forward, answer, rpc_proxy
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from supernet.explorer import queries
from supernet.explorer.chain import ChainReader, WrongChain
from supernet.explorer.db.engine import open_database
from supernet.explorer.db.models import Event, Operator
from supernet.explorer.indexer import Indexer, get_cursor
from supernet.node.service.chain import Web3Chain
from supernet.node.service.cli import app as node_app
from supernet.node.service.ports import CommitPending
from supernet.sdk.chain import Contracts, Voucher, bindings, sign_voucher
from supernet.sdk.chain.anvil import Anvil, advance_to, mine, revert, snapshot
from supernet.sdk.chain.bindings import _sender, fill_nonce_gap, release_nonce, reserve_nonce
from supernet.sdk.chain.contracts import make_web3
from typer.testing import CliRunner

from tests.integration.test_explorer_indexer import make_indexer
from tests.unit.test_review_crash_consistency import FEE, NodeRig, _commits_of, rig  # noqa: F401

pytestmark = [pytest.mark.anvil]

ETH = 10**18


def _url(c: Contracts) -> str:
    return str(c.w3.provider.endpoint_uri)  # type: ignore[attr-defined]


def _count(engine: Any, name: str | None = None) -> int:
    with Session(engine) as s:
        q = select(func.count()).select_from(Event)
        if name is not None:
            q = q.where(Event.name == name)
        return int(s.scalar(q) or 0)


# -- explorer ---------------------------------------------------------------------------------------


def test_defence_an_rpc_on_another_chain_is_refused_before_the_reorg_check(
    network: Contracts, actors: Actors
) -> None:
    """Harm: the explorer's RPC URL fails over to another chain for a moment (the case
    `ChainReader.check_chain` was added for: "an RPC URL can be moved, or fail over, while the
    explorer runs"). Its next step deletes the whole index (events, receipts, operators, batches)
    and rewinds the cursor to the deploy block; `WrongChain` is not even raised while the other
    chain is shorter than the deploy block (no range to scan, so `check_chain` is never called).

    Cause: explorer/supernet/explorer/indexer.py `Indexer.step` calls `check_reorg` first; it
    compares recorded hashes with the other chain's, finds none in common and rebuilds from
    ``start_block - 1``; `check_chain` runs only inside `_scan`.

    Fix (by design): check the chain id at the top of `step` (before `check_reorg`), or treat
    "nothing in common" as an error to stop on rather than a reorg to replay (compare the deploy
    block's hash, kept in the index's meta)."""
    c = network
    upstream = [_url(c)]
    with Anvil(chain_id=c.deployment.chain_id + 1, accounts=2) as other:
        with rpc_proxy(upstream, lambda _req, _fwd: None) as (url, _):
            engine = open_database("sqlite://")
            ix = Indexer(engine, ChainReader(make_web3(url), c.deployment), None, c.deployment.deploy_block)
            ix.catch_up()
            before = _count(engine)
            with Session(engine) as s:
                cursor = get_cursor(s, 0)
                nodes = len(list(s.scalars(select(Operator))))
            assert before > 0 and nodes > 0
            upstream[0] = other.url  # the RPC fails over to another chain
            refused = 0
            for _ in range(2):
                try:
                    ix.step()
                except WrongChain:
                    refused += 1
            upstream[0] = _url(c)  # ... and comes back
            with Session(engine) as s:
                after = (_count(engine), get_cursor(s, 0), len(list(s.scalars(select(Operator)))))
    assert after == (before, cursor, nodes), (
        f"while the RPC answered for chain {c.deployment.chain_id + 1} the index went from "
        f"(events, cursor, operators) {(before, cursor, nodes)} to {after} (WrongChain raised "
        f"{refused} times in two steps)"
    )


def test_defence_a_reorg_between_the_reorg_check_and_the_scan_is_undone(
    network: Contracts, actors: Actors
) -> None:
    """Harm: node2's ``deregister`` is indexed; the chain then reorganises (a different block in
    its place) between the step's `check_reorg` and its `_scan` (arranged: the real reorg runs in
    the indexer's ``head()`` read, which lies between the two). The orphaned ``Deregistered``
    stays in the index for good (node2 shown as gone, stake unbonding) and the new branch's event
    in that block (node's added stake) is never indexed.

    Cause: explorer/supernet/explorer/indexer.py `_scan` pins the hash of the range's *last*
    block and checks each log's block hash, so the range read is consistent with itself; nothing
    checks that the range continues the blocks already recorded (``start - 1``). The next
    `check_reorg` compares only the newest recorded block, which is now the new branch's.

    Fix (by design): in `_scan`, also require that the chain's hash of the newest recorded block
    (or block ``start``'s ``parentHash``) is still the recorded one, read with the pinned end;
    else record nothing and let the next `check_reorg` roll back."""
    c = network
    ix = make_indexer(open_database("sqlite://"), c, None)
    ix.catch_up()
    snap = snapshot(c.w3)
    c.as_account(actors.node2).service_manager.deregister()  # on the branch about to be dropped
    ix.catch_up()
    assert _count(ix.engine, "Deregistered") == 1
    real_head = ix.reader.head
    reorged: list[int] = []

    def head_with_a_reorg() -> int:
        if not reorged:  # the real chain reorganises now, after check_reorg, before the scan
            revert(c.w3, snap)
            c.as_account(actors.node).service_manager.add_stake(ETH)
            mine(c.w3, 2)
            reorged.append(1)
        return real_head()

    ix.reader.head = head_with_a_reorg  # type: ignore[method-assign]
    ix.step()
    ix.reader.head = real_head  # type: ignore[method-assign]
    assert reorged
    ix.catch_up()
    ix.catch_up()
    with Session(ix.engine) as s:
        node2 = s.get(Operator, actors.node2.address)
        node = s.get(Operator, actors.node.address)
        assert node2 is not None and node is not None
        shown = (queries.operator_status(node2), node2.stake, node.stake)
    onchain = (
        "active",
        c.service_manager.get_operator(actors.node2.address).stake,
        c.service_manager.get_operator(actors.node.address).stake,
    )
    left = _count(ix.engine, "Deregistered")
    assert (left, shown) == (0, onchain), (
        f"index keeps {left} orphaned Deregistered; shows (status, node2 stake, node stake) {shown}, "
        f"chain {onchain}"
    )


def test_defence_flapping_block_hashes_never_spin_the_indexer_nor_record_a_range(
    network: Contracts, actors: Actors
) -> None:
    """An RPC whose ``eth_getBlockByNumber`` answers a different hash on every other call (a load
    balancer whose backends disagree, or a hostile one): `catch_up` returns after one step (the
    cursor did not move), records nothing of the range, and indexes it once the answers agree."""
    c = network
    flap = [True]
    calls = [0]

    def flapping(req: dict[str, Any], fwd: Forward) -> dict[str, Any] | None:
        if not flap[0] or req["method"] != "eth_getBlockByNumber":
            return None
        calls[0] += 1
        got = fwd()
        if calls[0] % 2 and got.get("result"):
            got["result"]["hash"] = "0x" + f"{calls[0]:064x}"
        return got

    with rpc_proxy(_url(c), flapping) as (url, seen):
        engine = open_database("sqlite://")
        ix = Indexer(engine, ChainReader(make_web3(url), c.deployment), None, c.deployment.deploy_block)
        done = threading.Event()
        result: list[int] = []
        t = threading.Thread(target=lambda: (result.append(ix.catch_up()), done.set()), daemon=True)
        t.start()
        assert done.wait(15), "catch_up never returned: the range is re-read in a loop"
        assert result == [0] and _count(engine) == 0 and len(seen) < 50, (result, len(seen))
        flap[0] = False
        assert ix.catch_up() > 0 and _count(engine) > 0


# -- the node's nonces and commits --------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="session")
async def test_defence_one_latest_nonce_count_too_high_is_a_gap_the_node_fills(
    rig: NodeRig,  # noqa: F811
) -> None:
    """Harm: the node's RPC answers one ``eth_getTransactionCount(node, "latest")`` one too high
    (a lie, or a backend on a branch that is then orphaned). `next_nonce` takes it (max with the
    pending count), so the commit is signed above a gap; the pool holds it queued. Every attempt
    of the batcher then re-broadcasts it and waits its whole timeout (`CommitPending`): the batch
    is never committed, and no later batch is cut, until some other transaction of the node
    happens to take the missing nonce.

    Cause: sdk/supernet/sdk/chain/bindings.py `next_nonce` (``max(pending, latest)``) trusts the
    latest count without bound, and node/supernet/node/service/chain.py `wait_commit` treats
    "count <= nonce" as "may still land" even when the count stays below the commit's nonce with
    nothing pending under it.

    Fix (by design): in `wait_commit`/`_commit_once`, a commit whose nonce stays above both counts
    (a gap no transaction of ours holds) is a gap to fill: send a 0-value transaction to self at
    each missing nonce (the commit then lands as signed, once), or sign the commit again at the
    pending count and never re-broadcast the old one."""
    c, a = rig.network, rig.actors
    node_address = a.node.address.lower()
    armed, lied = [False], []

    def one_lie(req: dict[str, Any], fwd: Forward) -> dict[str, Any] | None:
        p = req.get("params") or []
        if (
            armed[0]
            and req["method"] == "eth_getTransactionCount"
            and p[1] == "latest"
            and str(p[0]).lower() == node_address
        ):
            armed[0] = False
            real = int(fwd()["result"], 16)
            lied.append(real)
            return answer(req, hex(real + 1))
        return None

    stuck = ""
    with rpc_proxy(_url(c), one_lie) as (url, _):
        proxied = Contracts.connect(url, c.deployment, a.node)
        r = dataclasses.replace(rig, network=proxied)
        node = await r.start()
        try:
            real_wait = node.chain.wait_commit

            async def short_wait(commit: Any, timeout_s: float = 2.0) -> int | None:
                return await real_wait(commit, timeout_s=2.0)

            node.chain.wait_commit = short_wait  # type: ignore[method-assign]  # 120 s -> 2 s
            for i in range(2):  # max_size 2: the second task cuts the batch
                await r.done_task(node, f"q{i}", FEE * (i + 1))
            bindings._SENT.pop(a.node.address.lower(), None)  # earlier tests' sends: chain reverted
            armed[0] = True
            errors: list[str] = []
            try:
                await node.batcher.flush()
            except Exception as exc:
                errors.append(type(exc).__name__)
            for _ in range(2):  # the batcher's next attempts (`run_forever` after RETRY_S), if any
                try:
                    for b in node.db.unfinished_batches():
                        stuck = (node.db.commit_tx(b.id) or [""])[0]
                        await node.batcher.commit(b)
                except (CommitPending, RuntimeError) as exc:
                    errors.append(type(exc).__name__)
            assert lied, "the RPC was asked the latest count while the commit was signed"
            logs = c.task_manager.contract.events.BatchCommitted().get_logs(
                from_block=0, argument_filters={"node": a.node.address}
            )
            assert len(logs) == 1 and not node.db.unfinished_batches(), (
                f"the batch is committed {len(logs)} times (attempts ended in {errors}); its commit "
                f"waits above nonce {lied[0]}, which nothing fills"
            )
            commit_tx = c.w3.eth.get_transaction(logs[0]["transactionHash"])
            assert commit_tx["nonce"] == lied[0] + 1, "signed above the gap, and mined as signed"
            stuck = ""
        finally:
            if stuck:  # leave no queued transaction of the node in Anvil's pool
                rm = c.w3.provider.make_request("anvil_removePoolTransactions", [a.node.address])  # type: ignore[arg-type]
                pool = c.w3.provider.make_request("txpool_content", [])  # type: ignore[arg-type]
                assert "error" not in rm and not pool["result"]["queued"], (rm, pool)
            await r.kill(node)


@pytest.mark.asyncio(loop_scope="session")
async def test_defence_a_dead_commit_whose_nonce_frees_again_is_waited_for(
    network: Contracts, actors: Actors
) -> None:
    """Harm: the node's commit looks dead (its nonce counted, no receipt: another transaction of
    the node took it); one poll later, as the re-check expects of a lagging RPC, the count no
    longer covers it (here the other transaction was reorged out, for real: ``evm_revert``). The
    commit can land again, and does, yet `wait_commit` raises ``TypeError`` instead of returning
    its batch id or `CommitPending`.

    Cause: node/supernet/node/service/chain.py `Web3Chain.wait_commit`: after the re-check
    ``receipt = mined()`` may be None ("may still land"), and the code goes on to
    ``receipt["status"]``.

    Fix (by design): make the re-check part of the poll loop: a None after it means "keep
    waiting" (back to the loop, within the deadline); only `_DEAD` twice in a row is dead."""
    c, node = network, actors.node
    snap: list[str] = []
    receipts = [0]
    commit_box: list[Any] = []

    def reorg_then_land(req: dict[str, Any], _fwd: Forward) -> dict[str, Any] | None:
        if req["method"] != "eth_getTransactionReceipt" or not commit_box:
            return None
        receipts[0] += 1
        if receipts[0] == 3:  # the re-check: the transaction that took the nonce is reorged out
            revert(c.w3, snap[0])
        elif receipts[0] == 4:  # and the commit, broadcast again, lands
            c.w3.eth.send_raw_transaction(commit_box[0].raw)
        return None

    with rpc_proxy(_url(c), reorg_then_land) as (url, _):
        chain = Web3Chain(Contracts.connect(url, c.deployment, node), node)
        commit = await chain.sign_commit(b"\x16" * 32, 1, "bafy-review-16")
        release_nonce(chain.contracts.w3, node.address, commit.nonce)  # never handed to the RPC
        snap.append(snapshot(c.w3))
        c.as_account(node).payments.fund_escrow(node.address, 1)  # takes the commit's nonce
        assert c.w3.eth.get_transaction_count(node.address) == commit.nonce + 1
        commit_box.append(commit)
        outcome: Any
        try:
            outcome = await chain.wait_commit(commit, timeout_s=8.0)
        except Exception as exc:  # CommitPending would be acceptable too
            outcome = exc
    landed = _commits_of(c, node.address, b"\x16" * 32)
    assert receipts[0] >= 3, receipts
    assert isinstance(outcome, (int, CommitPending)), (
        f"wait_commit ended in {outcome!r} (commits on chain: {landed})"
    )


# -- held earnings: the CLI -----------------------------------------------------------------------


def _redeem(c: Contracts, actors: Actors, user_index: int, cumulative: int) -> None:
    user = actors.users[user_index]
    v = Voucher(user=user.address, node=actors.node.address, cumulative_amount=cumulative)
    c.as_account(actors.node).payments.redeem([v], [sign_voucher(v, c.domain, user)])


def _cli(c: Contracts, actors: Actors, tmp_path: Path, rpc: str, *args: str) -> tuple[int, str]:
    dep = c.deployment.save(tmp_path / "deployment.json")
    env = {"SUPERNET_IDENTITY__PRIVATE_KEY": "0x" + bytes(actors.node.key).hex()}
    result = CliRunner().invoke(node_app, [*args, "--rpc", rpc, "--deployment", str(dep)], env=env)
    return result.exit_code, result.output


def test_defence_the_cli_withdraws_only_free_earnings_and_says_when_the_rest_is(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Fees just redeemed are held: ``supernet node earnings`` shows them held with their release
    time and 0 to withdraw; ``supernet node withdraw`` sends nothing (no revert) and says when;
    past the hold it pays them, once."""
    c, node = network, actors.node.address
    _redeem(c, actors, 0, 10**15)
    earnings, _ = c.payments.node_account(node)
    held, free_at = c.payments.held_earnings(node)
    assert held == earnings > 0
    code, out = _cli(c, actors, tmp_path, _url(c), "earnings")
    assert code == 0 and "earnings: 0 ETH to withdraw" in out and "fees held" in out, out
    code, out = _cli(c, actors, tmp_path, _url(c), "withdraw")
    assert code == 0 and "are held: all free" in out and "nothing to withdraw yet" in out, out
    assert c.payments.node_account(node)[0] == earnings
    advance_to(c.w3, free_at)
    balance = c.w3.eth.get_balance(node)
    code, out = _cli(c, actors, tmp_path, _url(c), "withdraw")
    assert code == 0 and "withdrew" in out, out
    assert c.payments.node_account(node)[0] == 0 and c.w3.eth.get_balance(node) > balance
    code, out = _cli(c, actors, tmp_path, _url(c), "withdraw")
    assert code == 0 and "nothing to withdraw yet" in out, out


def test_defence_a_redemption_between_the_clis_reads_never_fails_withdraw(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """Harm: the operator runs ``supernet node withdraw`` while the node's daemon settles (a
    commit carrying vouchers every few seconds). A redemption that lands between the CLI's read of
    the account and its read of the held part (arranged: the proxy lets the daemon's real
    ``redeem`` land just before forwarding ``heldEarnings``) makes "withdrawable" negative; the
    CLI sends ``withdrawEarnings`` although nothing is free and exits 1 on ``EarningsHeld``.

    Cause: sdk/supernet/sdk/money_cli.py `balances`: ``node_account`` and ``held_earnings`` are two
    ``eth_call`` at "latest", and ``if fees:`` is true for a negative difference.

    Fix (by design): read both at one block number (``block_identifier``), and withdraw only when
    the difference is positive."""
    c = network
    _redeem(c, actors, 0, 10**15)  # held, nothing free
    held_selector = c.payments.contract.encode_abi("heldEarnings", [actors.node.address])[:10]
    landed = [False]

    def daemon_settles(req: dict[str, Any], _fwd: Forward) -> dict[str, Any] | None:
        if req["method"] != "eth_call" or landed[0]:
            return None
        data = str(req["params"][0].get("data") or req["params"][0].get("input") or "")
        if data.startswith(held_selector):
            landed[0] = True
            _redeem(c, actors, 1, 10**15)  # the node daemon's redemption lands now
        return None

    with rpc_proxy(_url(c), daemon_settles) as (url, _):
        code, out = _cli(c, actors, tmp_path, url, "withdraw")
    assert landed[0]
    assert code == 0 and "nothing to withdraw yet" in out, f"exit {code}: {out}"


def test_defence_a_gap_filler_never_takes_a_nonce_this_process_holds(
    network: Contracts, actors: Actors
) -> None:
    """`fill_nonce_gap` (the fix of the latest-count attack above) fills only nonces nothing of
    this process will use: a nonce reserved by a commit signed and not yet broadcast is skipped
    (filling it would kill that commit), the nonces under it the RPC counts are left alone, and
    the filler is mined at the missing nonce."""
    w3, node = network.w3, actors.node
    n = w3.eth.get_transaction_count(node.address)
    bindings._SENT.pop(node.address.lower(), None)  # earlier tests' sends: their chain was reverted
    reserve_nonce(w3, node.address, n)  # a commit signed at n, being persisted
    try:
        with _sender(node.address):
            assert fill_nonce_gap(w3, node, n + 1) == [], "the reserved nonce is no gap"
            assert fill_nonce_gap(w3, node, n + 2) == [n + 1]
        pool = w3.provider.make_request("txpool_content", [])  # type: ignore[arg-type]
        queued = pool["result"]["queued"].get(node.address.lower(), {})
        assert list(queued) == [str(n + 1)], pool  # held above the reserved nonce, as signed
    finally:
        release_nonce(w3, node.address)
        w3.provider.make_request("anvil_removePoolTransactions", [node.address])  # type: ignore[arg-type]
