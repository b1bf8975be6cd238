"""Adversarial review of this session's changes (6559e85..HEAD): vote checks in turns by challenger
(`Disputes.vote_open` / `next_vote`), the fraud refund held at the verdict and paid at the signed
maxFee (`TaskManager._resolveFraud` / `claimRefund`, the explorer's `RefundClaimed`), the fee rule
(receipt.fee == request.maxFee in the validator, the client and the manifest), irreversible calls
journaled before they run (node kernel, database, worker), the connection limit's eviction of
held-back responses (`DeadlineH11Protocol._evict_idle`) and `ChatResult` without ``preemptions``.

Real parts: real Anvil, the real compiled contracts, the real `Disputes`, `Follower`,
`TaskManagerClient` and validator `Database` (the `game` fixture of test_review_validator_game.py;
the validator's re-execution replaced by a stand-in verdict, as test_review_validator_liveness.py
does: the order of checks is under review, not the checks); the node service's own uvicorn serving
path (`NodeService.run_forever`, `_serving` of test_review_session_changes13.py) with the real
embedded content store behind ``/v1/store``. One FAKE condition, named in its test: a small
server-side send buffer standing for a slow WAN link (loopback's kernel buffers are megabytes).

Found:

1. MEDIUM, FIXED (served turns are kept, not cut to the challengers due in a step): an ally address
   that left the due list for one step got its turn back
   (`test_defence_an_ally_that_leaves_and_returns_keeps_its_turn`).
   `Disputes.vote_open` prunes `self._served` to the challengers of this call's due rows
   (validator/supernet/validator/challenger.py:431-432), and `next_vote` ranks a challenger without a
   record as "not served yet" (0), ahead of every challenger served once (challenger.py:444-451). Two
   allied validator addresses that challenge the node's honest receipts in alternation (one challenge
   a step, each address absent from every other step's due rows) are "not served yet" at every step,
   so an honest challenger who has been served once (it challenged two of the node's frauds and its
   first was checked) never gets its second check while the voter's share allows one check a step:
   the documented bound ("delays it by one check per flooding address", docs/validator.md) does not
   hold; the fraud's sealing phase passes without honest votes (no quorum, no slash, the honest bond
   burns). Fix by design: keep the turn records for as long as the vote window (prune by age, not by
   presence), or rank a challenger coming back by the turn it last had (or the current turn count,
   i.e. at the back of the queue), never as a newcomer; a newcomer ranks by when its challenge was
   opened against the others' last service, not ahead of everyone.
2. MEDIUM, FIXED (the eviction judges a client's drain rate, `MIN_DRAIN_BPS`, not how long its
   writing was paused): a burst of connections cut an honest slow download
   (`test_defence_a_burst_of_connections_no_longer_cuts_an_honest_slow_download`). `_evict_idle`
   (node/supernet/node/service/http_protocol.py:153-169) evicts, after idle ones, the connection
   paused longest (at least `HELD_BACK_S` = 1 s). A single-body response (a store block, a trace, a
   receipt list) is written into the transport at once, so the transport is paused from the start
   of a download to its last 16 KB whenever the client's link is slower than the node: a steady
   64 KB/s reader of a 300 KB block is "held back" for ~4 s. An outsider that opens
   ``max_connections`` connections in a burst, each with a pipelined request it never reads, has
   none idle and none paused for 1 s, so the last one evicts exactly the honest download. Cost: a
   few KB of requests; repeatable at every retry (validators on slow links cannot read challenged
   traces: abstention or availability claims on honest nodes). Fix by design: judge a response by
   its drain rate (bytes the client took per second over a window, `_unsent` already measures it)
   instead of the pause's age, evict the slowest drainer first and never one above a floor rate
   (e.g. 16 KB/s); and/or give a new connection over the limit a 503 rather than evicting a
   response that is making progress.

Checked and holding (read, with reasons; the attacks above are the ones that failed the checks):

- vote turns: ties among newcomers go to the oldest challenge id, so fresh ally challenges never
  pass an honest challenger's first challenge; a challenge whose `_on_chain` fails is skipped
  without consuming or granting a turn; a restart resets the records to "not served", bounded by one
  check per ally address holding a challenge older than the honest one; `until` is checked only
  after a check, so every step makes progress.
- claimRefund: the refund is min(request.maxFee, rest/2) with the signed request (its EIP-712
  digest must be the receipt's requestHash), so a self-slashing node recovers at most rest/2 as
  before (its own user signs a large maxFee; the node's own fee field no longer matters); a node
  cannot lower its victim's refund through the receipt; front-running the claim pays the same
  request.user; held = credited + burned (ether conserved); the explorer's `_refund_claimed`
  moves `burned` from `refunded` to `burned` and sets the challenge's refund to the amount credited.
  A refund nobody claims stays held (not burned, not counted in totalBurned): documented.
- fee rule: every honest receipt path writes fee = maxFee (`Authenticator` admission, auth.py:342-343;
  the worker's receipt from the stored task's fee; decoys go through the same API; the SDK drop-in
  `answer.py:97-98`); the task's fee is never rewritten after admission, so a user cannot make an
  honest receipt violate the rule.
- irreversible journal: keyed by (task, action), so the same action hash in two tasks is two
  records; a crash between the journal write and the tool fails the task unbilled ("ran or began",
  as documented); a resumed task with a record is failed before it runs; the same request again is
  a 409 (one task); a validator's replay has no journal.
- `ChatResult` now carries only what a replay rebuilds (text, prompt ids, output ids, finish reason).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import increase_time, mine
from supernet.validator.evidence import Check, Finding, Verdict

from tests.unit import test_review_validator_game as vgame
from tests.unit.test_review_session_changes13 import _serving
from tests.unit.test_review_validator_funds import _commit
from tests.unit.test_review_validator_game import ETHER, Game, _open

game = vgame.game  # the fixture: real Anvil, contracts (staked network) and two embedded stores

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

# ------------------------------------------------------------------------------------------------
# 1. Vote checks in turns by challenger
# ------------------------------------------------------------------------------------------------


async def test_defence_an_ally_that_leaves_and_returns_keeps_its_turn(
    game: Game,
) -> None:
    """MEDIUM. Attack (a node and two ally validators, validator 2 and the outsider, staked): the node
    commits a batch with two faulty receipts (entries 0 and 1), which the honest challenger
    (validator 0) challenges; the honest voter (validator 1) has time for one check per step
    (``until`` spent, as on a step whose share a long check used). Its first step checks entry 0:
    validator 0 is now "served". The allies then challenge the node's honest receipts, one address
    at a time, alternating: each step only one of them has an open challenge, so the other one has
    none when `vote_open` starts and its turn record is dropped (``self._served`` is pruned to the
    challengers of this call's due rows, challenger.py vote_open). When it comes back it is "not
    served yet" (0), ahead of validator 0 (served once), every time.

    Safe (asserted): the turns bound the delay of the honest challenger's second challenge to one
    check per flooding address (2 here: docs/validator.md "delays it by one check per flooding
    address"): entry 1 is checked by the 4th step after the first. Today it is never checked while
    the two addresses alternate; with the real vote's 16 h sealing phase, the fraud on entry 1 loses
    its voters (no quorum, no slash, the honest challenger's bond burns) for two allied validators'
    stakes and one challenge a step (80 % of each bond back: the challenges are cleared)."""
    g = game
    c, a = g.chain, g.actors
    c.as_account(a.outsider).service_manager.register_validator(8 * ETHER)  # the second ally address
    increase_time(c.w3, 1)
    mine(c.w3, 1)
    batch_id, receipts = await _commit(g, a.node, 10, "turn-reset")
    honest = g.party(a.validators[0], g.stores["full"], "honest")
    allies = [
        g.party(a.validators[2], g.stores["full"], "ally-a"),
        g.party(a.outsider, g.stores["full"], "ally-b"),
    ]
    voter = g.party(a.validators[1], g.stores["full"], "voter")
    real = [_open(honest, batch_id, receipts, 0), _open(honest, batch_id, receipts, 1)]
    checked: list[int] = []

    async def verify(batch: int, node: str, index: int, manifest: object, **kw: object) -> Verdict:
        checked.append(index)
        leaf = manifest.leaf(index)  # type: ignore[attr-defined]
        found = (Finding(Check.TRACE, "output is not the trace's"),) if index in (0, 1) else ()
        return Verdict(batch, index, leaf, findings=found, validator=a.validators[1].address)

    voter.disputes.verifier.verify = verify  # type: ignore[method-assign]

    async def step() -> None:  # one step whose share is spent after one check
        voter.follower.catch_up()
        await voter.disputes.vote_open(voter.client.timestamp(), until=time.monotonic() - 1)

    await step()
    assert checked == [0], f"the honest challenger's first challenge first: {checked}"
    flooded = []
    for k, entry in enumerate(range(2, 7)):  # one ally challenge per step, the two addresses in turn
        flooded.append(_open(allies[k % 2], batch_id, receipts, entry))
        await step()
        if 1 in checked:
            break
    assert now_open(c, real[1]), "the vote on the second fraud is still in its sealing phase"
    assert 1 in checked[:4], (
        f"the voter checked entries {checked} in {len(checked)} steps (the allies' challenges {flooded}): "
        "the honest challenger's second challenge (entry 1) waited behind every ally challenge, because "
        "an ally address absent from one step's due rows loses its turn record and comes back as "
        "'not served yet', ahead of a challenger served once"
    )


def now_open(c: Contracts, challenge_id: int) -> bool:
    """The challenge's vote can still be sealed (its commit phase is on)."""
    return c.w3.eth.get_block("latest")["timestamp"] < c.task_manager.reveals_at(challenge_id)


# ------------------------------------------------------------------------------------------------
# 2. The connection limit's eviction of held-back responses
# ------------------------------------------------------------------------------------------------


async def _wan_connect(server: Any, port: int) -> socket.socket:
    """A client socket whose server side has a slow WAN link's send buffer (the FAKE condition)."""
    before = set(server.server_state.connections)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    for _ in range(100):
        new = [c for c in server.server_state.connections if c not in before]
        if new:
            break
        await asyncio.sleep(0.01)
    assert len(new) == 1, new
    new[0].transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    return s


def _block_get(cid: str) -> bytes:
    head = f"POST /v1/store/api/v0/block/get?arg={cid} HTTP/1.1\r\nHost: node\r\n"
    return head.encode() + b"Content-Length: 0\r\n\r\n"


async def test_defence_a_burst_of_connections_no_longer_cuts_an_honest_slow_download(tmp_path: Path) -> None:
    """MEDIUM. Attack (an outsider, no key, no deposit, no fee): an honest client downloads a 300 KB
    block from the node's public store (``POST /v1/store/api/v0/block/get``: what validators and users
    read traces with) over a link slower than the node (64 KB/s, read steadily: it keeps up with its
    link). The node writes the whole body into the transport at once, so the transport is paused from
    the start of the download to its last 16 KB: `_paused_at` stays set for seconds, and after
    `HELD_BACK_S` (1 s) the download counts as "held back". The outsider then opens
    ``max_connections`` connections in a burst, each asking for the same public block and reading
    none of it: they are being answered (never idle) and paused for less than 1 s, so the last one's
    `_evict_idle` finds exactly one victim, the honest download, and aborts it. It costs the
    outsider a few requests; repeated whenever the client retries, no large block can be fetched over
    a slow link (a validator that cannot read a challenged trace abstains or opens an availability
    claim on an honest node).

    FAKE condition, named: on loopback the kernel's send buffer grows to megabytes, which a WAN link's
    in-flight data never does, so every connection of the test (honest and attacker alike) has its
    server-side ``SO_SNDBUF`` set to 16 KB; the node's code is unchanged. Control (run by hand): the
    same burst of 3 with ``max_connections`` = 10 (no eviction) and the download completes, so the
    cut is the eviction's.

    Safe (asserted): the honest download, which took bytes all along, completes. Today it is reset
    ~1.5 s in: the eviction orders by how long a response has been paused, and a single large body is
    paused for all of a slow download, however steadily its client reads (http_protocol.py
    docstring: "a download at the link's pace ... is never the one evicted" does not hold)."""
    limit = 3
    async with _serving(tmp_path, max_connections=limit) as (n, port):
        server = n.service._server
        assert server is not None
        cid = await n.store.put_block(os.urandom(300_000), "raw")
        honest = await _wan_connect(server, port)
        honest.sendall(_block_get(cid))
        got = bytearray()
        cut: str | None = None
        attackers: list[socket.socket] = []

        async def read_for(seconds: float) -> None:  # a 64 KB/s link: 8 KB every 1/8 s
            nonlocal cut
            end = time.monotonic() + seconds
            while time.monotonic() < end and cut is None and not _complete(got):
                await asyncio.sleep(0.125)
                try:
                    chunk = honest.recv(8192)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    cut = repr(exc)
                    return
                if not chunk:
                    cut = "closed by the node"
                    return
                got.extend(chunk)

        try:
            await read_for(1.5)  # well into the download: paused since it began
            for _ in range(limit):  # the burst: each being answered, none paused for 1 s yet
                s = await _wan_connect(server, port)
                s.sendall(_block_get(cid))
                attackers.append(s)
                await asyncio.sleep(0.05)
            await read_for(10)
        finally:
            for s in attackers:
                s.close()
            honest.close()
        assert cut is None and _complete(got), (
            f"the honest download (read steadily at 64 KB/s) was cut after {len(got)} bytes ({cut}) when "
            f"one outsider opened {limit} connections (max_connections={limit}) each asking for a block it "
            "never reads: the honest response had been paused for over HELD_BACK_S, the outsider's for "
            "less, so `_evict_idle` aborted the honest one"
        )


def _complete(got: bytearray) -> bool:
    head, sep, body = bytes(got).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False
