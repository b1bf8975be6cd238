"""The validator on a hosted RPC that caps ``eth_getLogs`` block ranges (the fix of
tests/unit/test_review_capped_rpc.py, validator side).

Where the chain is real, the RPC is the real Anvil behind a JSON-RPC proxy that refuses a log query
over more than ``CAP`` blocks (the one FAKE, as in the review) and records every query it saw;
`TaskManagerClient`, `Follower`, `Database` and `Disputes` are the real ones. The follower's and
`ManifestWatch`'s partial progress past an unreadable block is shown on stand-in chains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from chain_fixtures import Actors
from rpc_proxy import rpc_proxy
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import mine
from supernet.validator import chain as vchain
from supernet.validator.chain import BatchCommitted, ChainEvent, TaskManagerClient
from supernet.validator.db import Database
from supernet.validator.follower import Follower
from supernet.validator.manifests import ManifestWatch

from tests.unit import test_review_capped_rpc as review
from tests.unit.test_review_capped_rpc import CAP, _age, _never_stored, _number
from tests.unit.test_review_manifests import FakeChain as ManifestChain
from tests.unit.test_review_manifests import Manifests
from tests.unit.test_review_validator_funds import _commit
from tests.unit.test_review_validator_game import Game, Party

game = review.game  # the fixture: real Anvil, the staked network and two embedded stores


@dataclass
class Queries:
    """The ``eth_getLogs`` block ranges the capped RPC was asked for: all, and those it refused."""

    asked: list[tuple[int, int]] = field(default_factory=list)
    refused: list[tuple[int, int]] = field(default_factory=list)


@contextmanager
def recorded_capped_rpc(upstream: str, cap: int = CAP) -> Iterator[tuple[str, Queries]]:
    """FAKE (Anvil has no cap): as the review's `capped_rpc`, recording every range asked too."""
    queries = Queries()

    def rewrite(request: dict[str, Any], _forward: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        if request.get("method") != "eth_getLogs" or request["params"][0].get("blockHash"):
            return None
        query = request["params"][0]
        first, last = _number(query.get("fromBlock"), upstream), _number(query.get("toBlock"), upstream)
        queries.asked.append((first, last))
        if last - first + 1 <= cap:
            return None
        queries.refused.append((first, last))
        error = {"code": -32005, "message": f"eth_getLogs is limited to a {cap} block range"}
        return {"jsonrpc": "2.0", "id": request["id"], "error": error}

    with rpc_proxy(upstream, rewrite) as (url, _seen):
        yield url, queries


def _party(g: Game, account: Any, url: str, name: str) -> Party:
    """The review's party, wired as the service wires it: headers read in the database's commit block."""
    p = review._party(g, account, url, name)
    p.client.commit_block_of = p.db.commit_block
    return p


# ------------------------------------------------------------------------------------ real chain


@pytest.mark.anvil
def test_a_follower_behind_by_more_than_the_cap_catches_up(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """A fresh validator (from the deploy block) more than the cap behind, its step wider than the
    cap (2,000 blocks): it reads in ranges the RPC accepts and records both batches, committed more
    than the cap apart; once caught up, its polls are not refused again."""
    c, a = network, actors
    tm = c.as_account(a.node).task_manager
    mine(c.w3, CAP)
    first = tm.commit_batch(b"\x01" * 32, 1, _never_stored("first")).value
    mine(c.w3, 3 * CAP)
    second = tm.commit_batch(b"\x02" * 32, 1, _never_stored("second")).value
    mine(c.w3, 2)
    dep = c.deployment
    with recorded_capped_rpc(str(dep.rpc_url)) as (url, queries):
        db = Database(tmp_path / "behind.sqlite")
        follower = Follower(TaskManagerClient.connect(url, dep, a.validators[1]), db, dep.deploy_block)
        follower.catch_up()
        recorded = [b for b in (first.batch_id, second.batch_id) if db.batch(b) is not None]
        cursor = db.cursor(default=dep.deploy_block)
        caught_up_refusals = len(queries.refused)
        mine(c.w3, 5)  # a poll later: the new blocks only
        follower.step()
        polled = db.cursor(default=dep.deploy_block)
        db.close()
    assert recorded == [first.batch_id, second.batch_id] and cursor > second.commit_block, (recorded, cursor)
    assert 0 < caught_up_refusals <= 8, queries.refused  # narrowed, not asked again for ever
    assert len(queries.refused) == caught_up_refusals and polled == c.w3.eth.block_number + 1


@pytest.mark.parametrize("cause", ["restart", "flood"])
@pytest.mark.anvil
async def test_a_header_not_in_memory_is_read_in_its_recorded_commit_block(
    game: Game, cause: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header the validator no longer holds in memory (a restart; a node flooding commits to push
    its cheat's header out of the cache) is read in the commit block its database recorded: one
    single-block query, no search, nothing refused; the challenge is opened."""
    flood = 4
    monkeypatch.setattr(vchain, "BATCH_CACHE", flood)
    g = game
    c, a = g.chain, g.actors
    me = a.validators[1]
    with recorded_capped_rpc(str(c.deployment.rpc_url)) as (url, queries):
        v = _party(g, me, url, f"header-{cause}")
        v.follower.catch_up()
        _age(c, CAP, v)
        cheat, receipts = await _commit(g, a.node, 2, f"header {cause}")
        v.follower.catch_up()
        if cause == "restart":
            v.db.close()
            v = _party(g, me, url, f"header-{cause}")  # a new process, the same database
        else:
            tm = c.as_account(a.node).task_manager
            for i in range(flood):
                tm.commit_batch(bytes([i + 1]) * 32, 1, _never_stored(f"header flood {i}"))
        v.follower.catch_up()
        assert cheat not in v.client._batches, "the header is not in memory"
        row = v.db.batch(cheat)
        assert row is not None
        before = len(queries.asked)
        header = v.client.batch(cheat)
        lookup = queries.asked[before:]
        challenge = v.client.open_challenge(
            cheat, 0, receipts[0], ReceiptTree(receipts).proof_at(0), "bafy-ev"
        )
        v.db.close()
    assert header.batch_id == cheat and header.commit_block == row.commit_block
    assert lookup == [(row.commit_block, row.commit_block)], lookup
    assert challenge > 0 and not queries.refused, queries.refused


# ------------------------------------------------------------------------------------ stand-ins


@dataclass
class UnreadableChain:
    """FAKE chain for the follower: events by block, a head, and blocks whose logs cannot be read
    (a query over any of them fails)."""

    events_by_block: dict[int, list[ChainEvent]]
    head_block: int
    unreadable: set[int] = field(default_factory=set)
    asked: list[tuple[int, int]] = field(default_factory=list)

    def head(self) -> int:
        return self.head_block

    def events(self, start: int, end: int) -> list[ChainEvent]:
        self.asked.append((start, end))
        if any(start <= b <= end for b in self.unreadable):
            raise ConnectionError("eth_getLogs failed")
        return [e for b in range(start, end + 1) for e in self.events_by_block.get(b, [])]


def _batch(bid: int, block: int) -> BatchCommitted:
    return BatchCommitted(bid, "0x" + "11" * 20, bytes([bid]) * 32, 1, block, f"bafy{bid}", block, 0)


def test_the_follower_records_up_to_an_unreadable_block_and_reads_on_from_it(tmp_path: Path) -> None:
    """A block that cannot be read ends the step there: what comes before it is recorded, in
    narrowed ranges, the cursor stops at it, and the scan goes on from it once it reads."""
    chain = UnreadableChain({3: [_batch(1, 3)], 40: [_batch(2, 40)], 70: [_batch(3, 70)]}, 90, {50})
    f = Follower(chain, Database(tmp_path / "v.sqlite"), start_block=0, max_range=100)  # type: ignore[arg-type]
    assert f.step() == 2
    assert f.db.cursor(default=0) == 50 and [b.batch_id for b in f.db.pending_batches()] == [1, 2]
    chain.unreadable.clear()
    f.catch_up()
    assert f.db.cursor(default=0) == 91 and [b.batch_id for b in f.db.pending_batches()] == [1, 2, 3]


async def test_refusals_are_followed_up_to_an_unreadable_block_and_on_from_it() -> None:
    """`ManifestWatch` follows the refusals on chain as the follower follows events: an unreadable
    block ends the step there (``refusals_to`` stops before it), the next steps go on from it."""
    chain = ManifestChain()
    asked: list[tuple[int, int]] = []
    unreadable = {7}

    def refusals(first: int, last: int) -> list[tuple[str, int, int]]:
        asked.append((first, last))
        if any(first <= b <= last for b in unreadable):
            raise ConnectionError("eth_getLogs failed")
        return []

    chain.refusals = refusals  # type: ignore[method-assign]
    view = Manifests(claims=chain)
    watch = ManifestWatch(chain, view.db, view.index(), start_block=1)  # type: ignore[arg-type]
    await watch.step(0)
    assert view.db.meta("refusals_to") == "6", asked
    await watch.step(0)
    assert view.db.meta("refusals_to") == "6"  # still unreadable: not skipped
    unreadable.clear()
    await watch.step(0)
    assert view.db.meta("refusals_to") == str(chain.head())
