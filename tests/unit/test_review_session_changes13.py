"""Adversarial review of this session's changes (d91a9d0..HEAD), as a node, a user, a validator or an
outsider would attack the new code:

* `supernet.sdk.chain.rpc_checks` and the validator's start (`Validator.setup`): the RPC's call gas
  and the span of states it holds, measured before the validator registers;
* `Web3Chain.repriced` and the batcher's `_commit_once`: a priced-out commit replaced at its nonce;
* `service/http_protocol.DeadlineH11Protocol` (a whole request within 10 s of opening or of the last
  response) and ``[api] max_connections`` (uvicorn's ``limit_concurrency``);
* ``[api] max_unfinished_per_user`` (`Authenticator._guard`, 429) and ``/healthz``
  (`Database.count_unfinished`);
* `TaskManager.reopenedAt` / ``BATCH_RETENTION = 3 CW + 2 VW`` and the validator's entry deadline
  (`Availability.deadline`, `TaskManagerClient.reopened_at`);
* `react.observation_bytes` in closed form and `react.MAX_STEPS`.

Left out: the redeemer's settlement scan (redeemer.py, db.py), changed by another engineer meanwhile.

Real parts: the node service's own uvicorn serving path (`NodeService.run_forever`, with the FAKE
executor and chain of ``tests/node_fixtures.py`` where the chain plays no part), real Anvil (a
pruned one: ``--prune-history``) with the compiled contracts deployed with the production
parameters, the real `Validator.setup`.

Found (all three FIXED; their tests are ``test_defence_*`` now):

1. MEDIUM — one outsider denies the node's API to everyone with ``max_connections`` idle sockets
   (`test_defence_idle_sockets_from_one_peer_fill_max_connections_and_every_user_gets_503`).
   uvicorn's ``limit_concurrency`` counts open *connections* (``len(server_state.connections)``,
   the new one included), not requests, and the node sets it to ``[api] max_connections`` (512)
   with no per-address cap (runner.py ``NodeService.run_forever``; the earlier review's suggested
   fix named one). A connection that sends nothing is dropped after `REQUEST_DEADLINE_S` (10 s),
   so one machine that keeps 512 sockets open, reopening ~51 a second, with no signature, deposit
   or fee, makes every user's request (task submissions, reads, /healthz) a 503 for as long as it
   likes. Before the change the same sockets cost the node descriptors, not its service.
   Fix by design: cap connections per source address (e.g. 8-16) below a global limit, and count
   the global limit against requests in progress rather than idle connections (or put a proxy
   with per-IP limits in front, documented as required).
   FIXED (the second half; a per-address cap would refuse a user behind the attacker's NAT and
   costs an IPv6 attacker nothing): a new connection over ``max_connections`` evicts the oldest
   *idle* one (no request in progress: `http_protocol.DeadlineH11Protocol._evict_idle`), and
   uvicorn's own limit, one above, only bounds requests in progress; idle sockets now cost the
   attacker its own connections, never a user's request.
2. MEDIUM — a peer that pipelines requests and never reads the responses holds its connection for
   good, past the request deadline
   (`test_defence_a_pipelining_peer_that_never_reads_holds_its_connection_past_the_deadline`).
   `DeadlineH11Protocol._expired` (http_protocol.py) closes only a connection still waiting for a
   request (``cycle is armed_with``) or for a request body; a request whose handler is blocked in
   uvicorn's ``flow.drain()`` (the peer's TCP window is shut, the transport is over its high
   water) is neither, so nothing times it out. Pipelined ``GET /openapi.json`` (44 KB each, no
   authentication) fills the buffers in a few requests; the connection then holds a descriptor, a
   slot of ``max_connections`` and its unread responses (measured: 69 answered, ~3 MB in the
   kernel's buffers, 100 KB in the transport's, the 70th handler paused in ``drain``) for good. Even where the
   deadline does fire, ``transport.close()`` waits for the unread buffer to drain and
   ``connection_lost`` (which frees the slot) never comes. Combined with finding 1 an attacker
   needs no reconnects at all. Fix by design: a write deadline as well (a response the peer has
   not taken within N s aborts the connection: ``transport.abort()``, not ``close()``), and
   ``_expired`` escalating to ``abort()`` on a transport already closing.
   FIXED: writing paused for `WRITE_STALL_S` (10 s) aborts the connection, and the request
   deadline aborts a transport already closing.
3. MEDIUM — the validator's start check measures a span of states too short for what it judges
   (`test_defence_the_validators_state_check_passes_an_rpc_that_cannot_serve_its_own_deadlines`).
   `Validator.setup` (validator/service.py) asks the RPC for states ``MAX_PIN_AGE_S +
   CHALLENGE_WINDOW`` old (30 h with the defaults), but the validator re-reads a batch's chain
   reads as long as it re-checks its entries and votes: to ``reopenedAt + CHALLENGE_WINDOW``
   (`Availability.deadline`, new this session; up to ``BATCH_RETENTION`` = 3 CW + 2 VW after the
   commit) and a vote runs VOTE_WINDOW past the last challenge: states up to ``MAX_PIN_AGE_S +
   BATCH_RETENTION + VOTE_WINDOW`` (150 h) old, and 54 h for a vote on a challenge opened at the
   end of the ordinary window. A real pruned Anvil holding 48 hourly blocks passes the check;
   real RPCs sit in that gap (reth's full node keeps 10,064 blocks, ~33.5 h at 12 s). On such an
   RPC the re-read fails (`check_chain_read` then reports `OwnSide`, "could not be re-read
   here"): a fraudulent chain_read challenged late, or on a reopened leaf, finds no voter able
   to judge it, and the reopen this session added is moot for it. Fix by design: check the span
   the validator actually uses, ``MAX_PIN_AGE_S + BATCH_RETENTION + VOTE_WINDOW`` (read from the
   contract), or a shorter one with the validator declining judgement it cannot make, documented.
   FIXED: the validator checks ``MAX_PIN_AGE_S + BATCH_RETENTION + VOTE_WINDOW``, the retention
   read from the contract (docs/validator.md: an archive node or a full node keeping that much).

Checked and holding:

* `observation_bytes`' closed form equals the countdown it replaced for every ``used`` and
  ``later`` that can occur, and the schema bound stops 2**53 steps
  (`test_defence_observation_bytes_closed_form_equals_the_countdown`).
* `repriced` (chain.py): the replacement is the same call at the same nonce, stored before it is
  sent; if the old transaction lands instead (a crash between storing and sending, or the pool
  keeping the old one), `wait_commit` sees the nonce used and `_commit_once` finds the batch by
  its root (`find_commit`) before it would sign anything new: one commit either way, its vouchers
  redeemed once (`test_defence_the_old_commit_landing_after_its_replacement_was_stored_commits_once`,
  real Anvil: the old bytes re-sent after the spike, as a pool that kept them would). A lying
  RPC's base fee only raises the cap (not what is paid); the tip compounding by 12.5 % a
  replacement is bounded by ``[chain] max_priority_fee_gwei``, after which the commit waits
  (logged DUTY AT RISK).
* The unfinished-task cap cannot be turned against a user by anyone else (only the user's signed
  requests count), and tasks a crash leaves ``running`` are resumed or refused at the next start
  (`TaskWorker.resume`), so they do not count for ever; the cap is checked inside the storing
  transaction (`_guard`).
* ``/healthz`` now counts two statuses through the index; its cost is bounded by the unfinished
  tasks (16 per user).
* `reopenedAt` (TaskManager.sol): the latest a challenge can open is ``answeredAt + CW`` for the
  first one (answeredAt <= commit + CW + VW, no extension once the claim is answered), its vote
  ends VW later, the reopened window CW after that: commit + 3 CW + 2 VW = BATCH_RETENTION, and
  ``_inWindow`` is strict, so no challenge opens on a reused slot. A vote extended by an open
  claim ends by commit + CW + 2 VW, within it too. Anchored at the vote's end, not at `resolve`,
  so a node that delays resolution gains nothing. An ally's early bogus challenge (cleared, its
  bond paid to the node) uses up the "once" but the honest challenger still gets the full reopened
  window; later NotFraud challenges within that window may follow each other (each a bond).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from node_fixtures import FakeNode, make_fake_node
from supernet.node.agents.react import (
    LATER_STEP_TOKENS,
    MAX_STEPS,
    MIN_OBSERVATION_BYTES,
    observation_bytes,
)
from supernet.node.kernel.chain_read import MAX_PIN_AGE_S
from supernet.node.service.http_protocol import REQUEST_DEADLINE_S
from supernet.node.service.ports import CommitPending, SignedCommit
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil, dev_account, mine, set_next_base_fee
from supernet.sdk.chain.params import ProtocolParams
from supernet.sdk.chain.rpc_checks import RpcRequirementError, oldest_block_within, state_span_shortfall
from supernet.sdk.devnet.processes import free_port
from supernet.sdk.formats.trace import MAX_CONTEXT_TOKENS

from tests.unit.test_commit_replacement import _fees
from tests.unit.test_review_crash_consistency import FEE, NodeRig, _commits_of, rig  # noqa: F401

# ------------------------------------------------------------------------------------------------
# The node's HTTP connections
# ------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _serving(tmp_path: Path, **api: Any) -> AsyncIterator[tuple[FakeNode, int]]:
    """The node service served by `NodeService.run_forever` (real uvicorn) on a free port."""
    port = free_port()
    n = await make_fake_node(tmp_path / "node", api={"port": port, **api})
    serving = asyncio.create_task(n.service.run_forever())
    try:
        for _ in range(200):  # until uvicorn listens
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            await asyncio.sleep(0.05)
        yield n, port
    finally:
        n.service.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 15)
        await n.http.aclose()
        await n.service.cleanup()
        await n.store.aclose()


async def _get(port: int, path: str) -> bytes:
    """One honest request on a fresh connection: the status line."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(f"GET {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n".encode())
        await w.drain()
        return (await asyncio.wait_for(r.readline(), 10)).strip()
    finally:
        w.close()


async def test_defence_idle_sockets_from_one_peer_fill_max_connections_and_every_user_gets_503(
    tmp_path: Path,
) -> None:
    """MEDIUM. Attack: an outsider (no key, no deposit) opens ``[api] max_connections`` TCP
    connections from one address and sends nothing. uvicorn's ``limit_concurrency`` (set to
    ``max_connections`` by `NodeService.run_forever`) answers every request 503 while that many
    connections are open, idle ones included. The deadline drops each idle socket after 10 s; the
    attacker reopens them (``max_connections / 10`` a second: ~51 at the default 512).

    Safe: an honest user's request is served while one peer holds idle connections (a per-address
    cap refuses the peer's excess, not everyone). Today: 503 Service Unavailable."""
    limit = 8  # [api] max_connections, small for the test (the default 512 behaves alike)
    async with _serving(tmp_path, max_connections=limit) as (_, port):
        assert (await _get(port, "/healthz")).startswith(b"HTTP/1.1 200")
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(limit)]
        try:
            await asyncio.sleep(0.2)
            status = await _get(port, "/healthz")
        finally:
            for _, w in idle:
                w.close()
        assert status.startswith(b"HTTP/1.1 200"), (
            f"with {limit} idle sockets from one peer (max_connections={limit}) an honest request is "
            f"answered {status!r}: uvicorn's limit_concurrency counts idle connections and there is no "
            f"per-address cap, so one outsider, reopening its sockets every {REQUEST_DEADLINE_S:g} s, "
            f"denies the node's API to every user"
        )


async def test_defence_a_pipelining_peer_that_never_reads_holds_its_connection_past_the_deadline(
    tmp_path: Path,
) -> None:
    """MEDIUM. Attack: open one connection with a tiny receive window, pipeline 200 ``GET
    /openapi.json`` (44 KB each, unauthenticated) in one write, and never read. The first responses
    fill the socket buffers and the transport's high water; the next request's handler then waits
    in uvicorn's ``flow.drain()`` for good. `DeadlineH11Protocol._expired` closes only a connection
    waiting for a request or a request body, so this one is never timed out: it keeps a descriptor
    and one of ``max_connections`` (finding 1, without reconnecting) and its buffered responses.

    Safe: the node drops the connection within a bounded time (here: 1.5 x the 10 s request
    deadline, the test's wait). Today it is still in uvicorn's connections after it."""
    async with _serving(tmp_path) as (n, port):
        server = n.service._server
        assert server is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: node\r\n\r\n" * 200)
            deadline = time.monotonic() + 1.5 * REQUEST_DEADLINE_S
            while time.monotonic() < deadline and server.server_state.connections:  # noqa: ASYNC110
                await asyncio.sleep(0.5)  # (uvicorn's connection set has no event to wait on)
            held = len(server.server_state.connections)
        finally:
            sock.close()
        assert held == 0, (
            f"{held} connection(s) still held {1.5 * REQUEST_DEADLINE_S:g} s after a peer pipelined 200 "
            f"requests and read nothing: a handler blocked in flow.drain() is neither waiting for a "
            f"request nor for a body, so DeadlineH11Protocol never closes it (and close() would wait "
            f"for the unread buffer anyway)"
        )


# ------------------------------------------------------------------------------------------------
# The validator's RPC span check
# ------------------------------------------------------------------------------------------------

HOUR = 3600
KEPT_BLOCKS = 48  # the pruned RPC's states: 48 blocks an hour apart, ~48 h


async def test_defence_the_validators_state_check_passes_an_rpc_that_cannot_serve_its_own_deadlines(
    tmp_path: Path,
) -> None:
    """MEDIUM. Setup: a validator on an RPC that keeps two days of states (a real Anvil with
    ``--prune-history 48`` and blocks an hour apart; reth's default full node keeps ~33 h on
    Ethereum), the protocol deployed with its production parameters (CHALLENGE_WINDOW = VOTE_WINDOW
    = 1 day). `Validator.setup` checks states ``MAX_PIN_AGE_S + CHALLENGE_WINDOW`` (30 h) old and
    starts. But it re-checks an entry until ``reopenedAt + CHALLENGE_WINDOW`` (`Availability.
    deadline`) and votes VOTE_WINDOW after a challenge: the pins it must re-read are up to
    ``MAX_PIN_AGE_S + BATCH_RETENTION`` old when a reopened leaf is challenged last (and 54 h for
    a vote on a challenge opened at the end of the ordinary window). Those states are gone here:
    the read fails, `check_chain_read` says `OwnSide`, and the fraudulent read is judged by nobody.

    Safe: the validator refuses this RPC at start (`RpcRequirementError`), as it does one missing
    the 30 h. Today the check passes; setup goes on (and stops at the unopenable database this
    test gives it, so nothing registers)."""
    from supernet.validator.config import ValidatorSettings
    from supernet.validator.service import Validator

    params = ProtocolParams()  # the production windows: a day each
    with Anvil(accounts=20, extra_args=["--prune-history", str(KEPT_BLOCKS)]) as pruned:
        deployed = Contracts.deploy(pruned.url, dev_account(0), params)
        w3 = deployed.w3
        w3.provider.make_request("anvil_mine", [hex(200), hex(HOUR)])  # type: ignore[arg-type]
        retention = int(deployed.task_manager.contract.functions.BATCH_RETENTION().call())
        assert retention == 3 * params.challenge_window + 2 * params.vote_window

        checked = MAX_PIN_AGE_S + params.challenge_window  # what Validator.setup asks of the RPC
        assert state_span_shortfall(w3, checked) is None, "the RPC holds the span the validator checks"
        needed = MAX_PIN_AGE_S + retention  # a pin re-read on the last challenge of a reopened leaf
        oldest = oldest_block_within(w3, needed)
        with pytest.raises(Exception, match=r"BlockOutOfRange|state|pruned|missing"):
            w3.eth.get_balance("0x" + "00" * 20, block_identifier=oldest)  # what the re-read needs

        account = dev_account(17)
        settings = ValidatorSettings(
            chain={
                "rpc_url": pruned.url,
                "deployment": str(deployed.deployment.save(tmp_path / "deployment.json")),
                "key": "0x" + bytes(account.key).hex(),
            },
            store_url="http://127.0.0.1:9",  # never reached
            db_path=tmp_path,  # a directory: the database cannot open, setup stops right after the check
            register_stake_wei=10**18,
        )
        raised: BaseException | None = None
        try:
            await Validator(settings).setup()
        except BaseException as exc:  # which error it is, is the finding
            raised = exc
        assert not deployed.service_manager.is_active_validator(account.address)
        assert isinstance(raised, RpcRequirementError), (
            f"the validator accepted an RPC that holds {KEPT_BLOCKS} h of states: it checks "
            f"{checked} s (MAX_PIN_AGE_S + CHALLENGE_WINDOW) but re-reads pins up to {needed} s old "
            f"(MAX_PIN_AGE_S + BATCH_RETENTION) while a reopened leaf is challengeable, and no state "
            f"is held at block {oldest}; setup went on past the check ({type(raised).__name__})"
        )


# ------------------------------------------------------------------------------------------------
# The commit replaced at its nonce: a crash between storing the replacement and sending it
# ------------------------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="session")
async def test_defence_the_old_commit_landing_after_its_replacement_was_stored_commits_once(
    rig: NodeRig,  # noqa: F811
) -> None:
    """Attack (on the node's own consistency, the fee market as adversary): the node's commit
    (carrying its vouchers: ``redeem.min_amount_wei`` 1) waits in the pool, the base fee spikes
    past its cap, `repriced` signs the replacement and the batcher stores it; the node dies before
    it sends it. The spike passes and the OLD transaction lands. Held: on restart the stored
    replacement's root is found on chain (`find_commit`) before anything is sent or signed: one
    ``BatchCommitted``, the batch marked committed with it, the vouchers redeemed once."""
    c, a = rig.network, rig.actors
    node = await rig.start()
    w3 = c.w3
    signed: list[SignedCommit] = []
    try:
        real_sign, real_wait = node.chain.sign_commit, node.chain.wait_commit

        async def sign(*args: Any, **kw: Any) -> SignedCommit:
            commit = await real_sign(*args, **kw)
            signed.append(commit)
            return commit

        async def short_wait(commit: SignedCommit) -> int | None:  # the real wait, 120 s cut to 1 s
            return await real_wait(commit, timeout_s=1.0)

        node.chain.sign_commit = sign  # type: ignore[method-assign]
        node.chain.wait_commit = short_wait  # type: ignore[method-assign]
        w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
        await rig.done_task(node, "q0", FEE)
        await rig.done_task(node, "q1", 2 * FEE)
        redeemed_before = c.payments.channel(a.users[0].address, a.node.address).redeemed
        with pytest.raises(CommitPending):
            await node.batcher.flush()  # signed, stored, broadcast: pending in the pool
        [batch] = node.db.unfinished_batches()
        [old] = signed
        _, cap, _ = _fees(old.raw)
        set_next_base_fee(w3, 4 * cap)  # the spike: the old one cannot be mined
        mine(w3, 1)
        replacement = await node.chain.repriced(old)
        assert replacement is not None and replacement.nonce == old.nonce
        node.db.record_commit_tx(batch.id, replacement.tx_hash, replacement.raw, replacement.nonce)
        await rig.kill(node)  # dies before sending it

        set_next_base_fee(w3, 10**9)  # the spike passes: the old transaction lands
        # (Anvil's pool evicts it under the spike; geth's keeps it, and any pool that saw it may
        # send it again: the node's own signed bytes, re-sent here as such a pool would)
        w3.eth.send_raw_transaction(old.raw)
        mine(w3, 1)
        assert int(w3.eth.get_transaction_receipt(old.tx_hash)["status"]) == 1  # type: ignore[arg-type]
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]

        node = await rig.start()
        node.chain.sign_commit = sign  # type: ignore[method-assign]
        for b in node.db.unfinished_batches():
            await node.batcher.commit(b)
        root = bytes.fromhex(batch.root[2:])
        [chain_id] = _commits_of(c, a.node.address, root)
        done = node.db.batch(batch.id)
        assert done is not None and (done.status, done.chain_batch_id) == ("committed", chain_id)
        assert len(signed) == 1, "nothing new was signed"
        redeemed = c.payments.channel(a.users[0].address, a.node.address).redeemed
        assert redeemed - redeemed_before <= 3 * FEE  # the vouchers' fees, once
    finally:
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
        set_next_base_fee(w3, 10**9)
        mine(w3, 1)
        with contextlib.suppress(Exception):
            await rig.kill(node)


# ------------------------------------------------------------------------------------------------
# react: observation_bytes and MAX_STEPS
# ------------------------------------------------------------------------------------------------


def _countdown(used: int, later: int) -> int:
    """The loop `observation_bytes` replaced (before 84d91d9), for the comparison."""
    from supernet.node.agents import react

    turn = react.TURN_TOKENS + len(react.OBSERVATION.encode())
    spare = MAX_CONTEXT_TOKENS - used - react.FINAL_TOKENS - turn
    shares = later + 1
    while shares > 1 and (spare - (shares - 1) * LATER_STEP_TOKENS) // shares < MIN_OBSERVATION_BYTES:
        shares -= 1
    return max(0, (spare - (shares - 1) * LATER_STEP_TOKENS) // shares)


def test_defence_observation_bytes_closed_form_equals_the_countdown() -> None:
    """Attack: find a ``used``/``later`` where the closed form gives an observation more bytes than
    the countdown (a context overflow the validator's replay would disagree on) or fewer (an honest
    trace judged differently). None: equal over every ``used`` up to past the context and every
    ``later`` the schema allows (and beyond); 2**53 answers at once."""
    for used in range(-8, MAX_CONTEXT_TOKENS + 200, 7):
        for later in range(0, MAX_STEPS + 40):
            assert observation_bytes(used, later) == _countdown(used, later), (used, later)
    started = time.perf_counter()
    assert observation_bytes(100, 2**53) == observation_bytes(100, MAX_STEPS * 4)
    assert time.perf_counter() - started < 0.1
