"""Adversarial review of the node's settlement scan as it stands at 5877c66 (the rewrite after
review 14): `Redeemer.due` / `_scan_events` / `for_commit` and the fallback reads (redeemer.py),
`Web3Chain.channel_events` (chain.py: range halving, the single-block withdrawal-only read,
`_UNREACHABLE`, the width regrown after `LOG_RANGE_REGROW` reads), the cursor
``min(to, head - CONFIRMATIONS)`` and `Database.record_channel_events` (db.py), `ChannelEvents`
(ports.py). Not repeated: test_review_node_hardening2.py, test_review_session_changes14.py,
test_redeemer_scan.py.

Real parts: the node's `Database`, `Redeemer` and `Web3Chain` on the session's Anvil with the
compiled contracts; vouchers really signed (the contract checks them). FAKES, named where used, for
RPC behaviour Anvil has not: a cap on an ``eth_getLogs`` query's block range, a query that times
out on the client, a block whose logs are never served. Each wraps the real Anvil answer.

Found (both FIXED; their tests are ``test_defence_*`` now):

1. MEDIUM — an RPC whose ``eth_getLogs`` range cap is under about ``CONFIRMATIONS`` blocks makes
   every commit settle nothing, for good, with no attacker (a cap of a few hundred blocks does it
   to the commits late in each round's interval)
   (`test_defence_a_log_range_cap_under_the_rescan_window_makes_every_commit_settle_nothing`).
   The cursor is saved at ``min(to, head - CONFIRMATIONS)`` (redeemer.py `_scan_events`,
   ``scanned = ...``), so every scan starts at least ``CONFIRMATIONS + 1`` blocks behind the head,
   and ``known`` (``events.to >= head``) needs the whole window in the call's queries. Before a
   commit that is one query (`COMMIT_SCAN_QUERIES`), of at most the current width
   (`Web3Chain._log_range`); when the RPC caps ranges below ``CONFIRMATIONS + 1`` + the blocks since
   the last scan, the width settles at the cap (halved to it, regrown past it every
   `LOG_RANGE_REGROW` reads and halved back), and `Redeemer.due` returns ``[]`` before every commit
   (``if not known and not confirm: return []``), even for a debt over the threshold, which needs
   no log at all. The rounds still redeem, one transaction each: the batching the design rests on
   ("one transaction per batch instead of two") is gone, and the rounds also make
   `FALLBACK_READS` channel reads each, for ever. An outsider gets the same while the width is
   narrow: any range refused (a burst of 1-wei ``Deposited``) leaves the width halved for later
   calls, and a commit's one query then cannot cover the window. Fix by design: judge "known"
   against the last block any scan reached (kept in memory: `ChannelEvents.to` of the last call),
   not against the reorg-safe cursor: the re-scan of the last ``CONFIRMATIONS`` blocks guards a
   reorg but need not be redone before a commit; and let debts over the threshold ride on a commit
   whatever the scan says.
   FIXED (the second half): what is due without a log (a debt over the threshold, a channel known
   to be closing) rides on the commit whatever the scan says; only the search for unseen closing
   channels waits for the redeemer's round.
2. LOW — a log query the client times out on is never split: the scan stays at that range for
   good (`test_defence_a_log_query_that_times_out_is_retried_whole_for_ever`). `channel_events`
   (chain.py ``except _UNREACHABLE: break``) treats ``requests.Timeout`` like an RPC that does not
   answer at all and retries the same range, at the same width, next round. A self-hosted node
   (geth closes an HTTP answer after its write timeout, 30 s) or a proxy in front of one
   answers a heavy range (many logs: anyone can emit ``Deposited`` to the node) by a timeout, not
   a refusal, so the cursor never passes it: the node stays "behind" for ever (commits settle
   nothing, closing channels found only by the fallback's `FALLBACK_READS` a round, see 3). Fix by
   design: after a timeout on a range of more than one block, halve it as a refusal (a dead RPC
   also times out on a narrow range, so nothing is lost), or count timeouts per range.
   FIXED: a range of more than one block that times out is halved as a refused one.

Checked and holding:

* A block the RPC never serves (even its withdrawal requests alone) stops the scan there, but the
  round's fallback still reads a closing small debtor's channel and redeems it; documented as a
  limit, the rotation: with N users holding a small unredeemed voucher the fallback reads each
  once in ``N / FALLBACK_READS`` rounds (60 s each by default), so ~46,000 such users (the pool
  keeps every past user who left a small debt, withdrawn channels included, since a top-up is
  unseen while the scan is behind) make a closing channel unread within a 1-day
  ``WITHDRAWAL_DELAY``
  (`test_known_limit_a_block_the_rpc_never_serves_stops_the_scan_and_the_fallback_rotates`).
  Emitting more ``WithdrawalRequested`` for this node in one block than a hosted RPC answers
  (10,000) needs a request (and a cancel) per log, ~25k gas each: ~250 M gas in one block, over
  the block gas limit of the usual chains, so an outsider cannot force it cheaply.
* Reorgs: a request inside the last ``CONFIRMATIONS`` blocks is scanned again on every call (the
  cursor never passes ``head - CONFIRMATIONS``), and `_open_at` drops only requests at or below
  ``head - CONFIRMATIONS`` of the read that found the channel open, so a request reorged out and
  mined again later is still seen; `_open_at` is in memory only, so a restart re-adds a request
  already cancelled (an extra read, the safe side). Read, not tested again (review 14's tests).
* Crash: the closing channels, the dropped deposits and the cursor of one scan are written in one
  transaction (`record_channel_events`); a closing channel found by a read is recorded before the
  next read. A single-block refusal restores the width from before the run of refusals (its logs,
  not the range, were refused) and sets ``funded_unknown`` (every known deposit dropped: more
  reads, never fewer).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import requests
from supernet.node.service import redeemer as redeemer_module
from supernet.node.service.chain import Web3Chain
from supernet.node.service.db import Database
from supernet.node.service.redeemer import CONFIRMATIONS, Redeemer
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import mine

from tests.chain_fixtures import Actors
from tests.unit.test_review_session_changes14 import BIG, POLICY, SMALL, _done_task, _rounds


def _block(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


@pytest.mark.anvil
async def test_defence_a_log_range_cap_under_the_rescan_window_makes_every_commit_settle_nothing(
    network: Contracts, actors: Actors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MEDIUM. FAKE (Anvil has no cap): the RPC refuses an ``eth_getLogs`` over more than `CAP`
    blocks, as hosted RPCs and free tiers cap a query's range. Setup: the node's rounds have
    caught the scan up with the head; then user A has a task done that leaves `BIG` owed (over the
    threshold: due with no log at all) and the chain moves one block.

    Safe: the next commits settle A's voucher (the rounds keep the scan at the head). Today: each
    commit's one query covers `CAP` blocks of a window that is always over ``CONFIRMATIONS``
    blocks (the cursor stays that far back), so the scan is "behind" before every commit and
    `for_commit` returns nothing, commit after commit."""
    cap = 32
    node = actors.node.address
    a = actors.users[0]
    real = network.w3.eth.get_logs

    def range_capped(query: Any) -> Any:  # FAKE: a hosted RPC's cap on a query's block range
        if _block(query["toBlock"]) - _block(query["fromBlock"]) + 1 > cap:
            raise ValueError({"code": -32600, "message": f"block range exceeds {cap}"})
        return real(query)

    mine(network.w3, 3 * CONFIRMATIONS)  # a chain older than the re-scan window
    monkeypatch.setattr(network.w3.eth, "get_logs", range_capped)
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        redeemer = Redeemer(db, Web3Chain(network, actors.node), interval_s=60.0, policy=POLICY)
        await _rounds(redeemer, 3)  # a fresh node: the cursor near the head, the rounds catch up
        caught_up = await redeemer.due()  # (the round's own scan reaches the head)
        assert caught_up == []
        _done_task(db, network, a, node, BIG)
        settled = []
        for _ in range(6):  # six commits, one block apart
            mine(network.w3, 1)
            settled.append(len(await redeemer.for_commit()))
        cursor, head = db.channel_events_cursor(), int(network.w3.eth.block_number)
        due_by_round = await redeemer.due()  # the round's view: A is due
    finally:
        db.close()
    assert len(due_by_round) == 1, "A's BIG voucher is due (the round finds it)"
    assert any(settled), (
        f"six commits settled {settled} vouchers while A owes {BIG} wei (over the threshold): the "
        f"cursor is {cursor} at head {head} (kept CONFIRMATIONS={CONFIRMATIONS} back), so a commit's "
        f"single eth_getLogs of at most {cap} blocks never reaches the head and Redeemer.due returns [] "
        f"before every commit; only the rounds redeem, a transaction each"
    )


@pytest.mark.anvil
async def test_defence_a_log_query_that_times_out_is_retried_whole_for_ever(
    network: Contracts, actors: Actors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOW. FAKE (a fault Anvil cannot produce): the client times out on an ``eth_getLogs`` whose
    answer holds more than `HEAVY` logs (a self-hosted node or proxy cut by its write timeout:
    ``requests.ReadTimeout``). Attack: an outsider emits ``HEAVY + 1`` 1-wei ``Deposited`` to the
    node, one block each; then user B, owing one small fee, asks to close.

    Safe: the heavy range is split like a refused one and the scan passes it (B's request seen
    from the logs). Today: `_UNREACHABLE` breaks the scan without halving, every round retries the
    same range whole, and the cursor never passes the flood."""
    heavy = 12
    node = actors.node.address
    b, outsider = actors.users[1], actors.users[2]
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        _done_task(db, network, b, node, SMALL)  # a task: the scan starts at the deployment
        first_flood = int(network.w3.eth.block_number) + 1
        for _ in range(heavy + 1):
            network.as_account(outsider).payments.deposit_for(outsider.address, node, 1)
        network.as_account(b).payments.request_withdrawal(node)
        mine(network.w3, 2 * CONFIRMATIONS)
        real = network.w3.eth.get_logs
        timeouts = 0

        def slow_when_heavy(query: Any) -> Any:  # FAKE: a heavy answer times out on the client
            nonlocal timeouts
            logs = real(query)
            if len(logs) > heavy:
                timeouts += 1
                raise requests.ReadTimeout("HTTPConnectionPool: Read timed out. (read timeout=30)")
            return logs

        monkeypatch.setattr(network.w3.eth, "get_logs", slow_when_heavy)
        redeemer = Redeemer(db, Web3Chain(network, actors.node), interval_s=60.0, policy=POLICY)
        for _ in range(4):
            await _rounds(redeemer, 1)
            mine(network.w3, 1)
        cursor = db.channel_events_cursor()
    finally:
        db.close()
    assert cursor is not None and cursor >= first_flood + heavy, (
        f"after 4 rounds the scan's cursor is {cursor}, the flood starts at block {first_flood}: the "
        f"range holding {heavy + 1} Deposited logs timed out {timeouts} times and was retried whole each "
        f"round (chain.py `except _UNREACHABLE: break`), never halved; the node stays 'behind' for good"
    )


@pytest.mark.anvil
async def test_known_limit_a_block_the_rpc_never_serves_stops_the_scan_and_the_fallback_rotates(
    network: Contracts, actors: Actors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Limit by design (and the fallback holding). FAKE: the RPC refuses every ``eth_getLogs``
    that includes block X, even for its withdrawal requests alone. B (one small fee) asks to
    close after X, with two other small debtors; `FALLBACK_READS` scaled down to 1 a round (the
    same rotation, without 32 x rounds users).

    Holds: the scan stops at X (the cursor never passes it, every commit settles nothing), and the
    round's fallback reads the small debtors least recently read first, so B's closing channel is
    read and redeemed within ``debtors / FALLBACK_READS`` rounds. The limit: that is the only
    bound, so ``FALLBACK_READS x WITHDRAWAL_DELAY / interval`` small debtors (46,080 at the
    defaults) leave a closing channel unread until its deposit is gone."""
    monkeypatch.setattr(redeemer_module, "FALLBACK_READS", 1)
    node = actors.node.address
    b, others = actors.users[1], [actors.users[0], actors.users[2]]
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        for user in others:
            _done_task(db, network, user, node, SMALL)
        _done_task(db, network, b, node, SMALL)
        unread = int(network.w3.eth.block_number) + 1
        mine(network.w3, 1)
        network.as_account(b).payments.request_withdrawal(node)
        mine(network.w3, 2 * CONFIRMATIONS)
        real = network.w3.eth.get_logs

        def never_serves(query: Any) -> Any:  # FAKE: one block's logs are never served
            if _block(query["fromBlock"]) <= unread <= _block(query["toBlock"]):
                raise ValueError({"code": -32000, "message": "logs unavailable"})
            return real(query)

        monkeypatch.setattr(network.w3.eth, "get_logs", never_serves)
        redeemer = Redeemer(db, Web3Chain(network, actors.node), interval_s=60.0, policy=POLICY)
        rounds = 0
        while network.payments.channel(b.address, node).redeemed < SMALL and rounds < 6:
            with contextlib.suppress(Exception):
                await redeemer.redeem_once()
            rounds += 1
        commit = await redeemer.for_commit()
        cursor = db.channel_events_cursor()
        paid = network.payments.channel(b.address, node).redeemed
    finally:
        db.close()
    assert cursor is None or cursor < unread, "the scan never passes the block the RPC will not serve"
    assert commit == [], "while the scan is behind, a commit settles nothing"
    assert paid == SMALL, f"B's closing channel redeemed {paid} of {SMALL} after {rounds} rounds"
    assert rounds <= 3, f"the fallback read B within debtors / FALLBACK_READS = 3 rounds, took {rounds}"
