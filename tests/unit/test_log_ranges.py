"""Log queries in ranges an RPC accepts (`supernet.sdk.chain.logs`) and the reads that need none.

The unit tests drive `LogRanges` with a fetch that refuses wide ranges as a hosted RPC does; the
chain tests run the SDK's reads against the real Anvil behind a real JSON-RPC proxy that refuses an
``eth_getLogs`` over more than 64 blocks (the one FAKE: Anvil has no cap; tests/unit/
test_review_capped_rpc.py's `capped_rpc`).
"""

from __future__ import annotations

import pytest
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import mine
from supernet.sdk.chain.logs import REGROW_AFTER, LogRanges, LogsUnreadable

from tests.chain_fixtures import Actors, make_receipts
from tests.unit.test_review_capped_rpc import CAP, capped_rpc


def _capped(cap: int, asked: list[tuple[int, int]], events: dict[int, str] | None = None):  # type: ignore[no-untyped-def]
    """A fetch refusing ranges wider than ``cap`` (as a hosted RPC does); ``events`` by block."""
    events = events or {}

    def fetch(first: int, last: int) -> list[str]:
        asked.append((first, last))
        if last - first + 1 > cap:
            raise ValueError(f"block range exceeds {cap}")
        return [events[b] for b in sorted(events) if first <= b <= last]

    return fetch


def test_a_range_wider_than_the_cap_is_read_in_narrower_ones_in_order() -> None:
    asked: list[tuple[int, int]] = []
    events = {5: "a", 700: "b", 9_999: "c"}
    assert LogRanges(2_000).read(_capped(300, asked, events), 0, 9_999) == ["a", "b", "c"]
    read = [(a, b) for a, b in asked if b - a + 1 <= 300]
    assert read[0][0] == 0 and read[-1][1] == 9_999
    assert all(read[i][1] + 1 == read[i + 1][0] for i in range(len(read) - 1)), (
        "no block skipped or read twice"
    )


def test_the_width_grows_back_after_a_passing_failure() -> None:
    ranges = LogRanges(1_024)
    down = {"left": 10}
    widths: list[int] = []

    def fetch(first: int, last: int) -> list[int]:
        widths.append(last - first + 1)
        if down["left"] > 0:
            down["left"] -= 1
            raise ConnectionError("the RPC restarts")
        return []

    ranges.read(fetch, 0, 10**6)  # ten refusals: 1,024 halved to 1, then ranges read
    assert min(widths) == 1
    assert ranges.width == 1_024, "back to the widest after ranges read"


def test_a_single_block_refused_raises_a_chain_error_and_a_scan_stops_there() -> None:
    def fetch(first: int, last: int) -> list[int]:
        if first <= 50 <= last:
            raise ValueError("too many logs")
        return [first]

    with pytest.raises(LogsUnreadable, match="block 50"):
        LogRanges(16).read(fetch, 0, 100)
    reached, logs = LogRanges(16).scan(fetch, 0, 100)
    assert reached == 49 and logs and max(logs) <= 49


def test_find_back_returns_the_latest_range_holding_the_event() -> None:
    asked: list[tuple[int, int]] = []
    found = LogRanges(100).find_back(_capped(100, asked, {150: "old", 9_950: "new"}), 0, 10_000)
    assert found == ["new"] and len(asked) == 1, "one query back from the head"
    assert LogRanges(100).find_back(_capped(100, [], {}), 0, 1_000) == []


def test_a_regrow_waits_for_several_ranges_so_a_cap_just_under_the_width_costs_little() -> None:
    asked: list[tuple[int, int]] = []
    LogRanges(1_000).read(_capped(999, asked), 0, 99_999)
    refused = [q for q in asked if q[1] - q[0] + 1 > 999]
    assert len(refused) <= 1 + len(asked) // REGROW_AFTER


@pytest.mark.anvil
def test_sdk_reads_work_through_a_capped_rpc(network: Contracts, actors: Actors) -> None:
    """A batch looked up by id, a challenge's receipts, a seal check: through the capped RPC, a
    deployment older than the cap."""
    c, a = network, actors
    mine(c.w3, 3 * CAP)
    receipts = make_receipts(c, a.users, a.node.address, 2)
    tree = ReceiptTree(receipts)
    header = c.as_account(a.node).task_manager.commit_batch(tree.root, 2, "bafy-capped").value
    mine(c.w3, 3)
    challenger = c.as_account(a.validators[0]).task_manager
    cid = challenger.challenge(header, 0, receipts[0], tree.proof_at(0), "bafy-evidence").value
    seed_block = challenger.seed_block(header)
    mine(c.w3, 2 * CAP)
    with capped_rpc(str(c.deployment.rpc_url)) as (url, refused):
        tm = Contracts.connect(url, c.deployment, a.users[0]).task_manager
        assert tm.batch(header.batch_id) == header
        assert tm.batch(header.batch_id, header.commit_block, header.commit_block) == header
        found = tm.challenged_receipts({receipts[0].request_hash}, c.deployment.deploy_block)
        assert found == [(cid, receipts[0])]
        assert tm.seed_beacon.sealed(seed_block) == challenger.seed_beacon.sealed(seed_block)
        searched: list[object] = []
        tm.last_logs = lambda *args, **kw: searched.append(args) or []  # type: ignore[method-assign]
        with pytest.raises(LookupError):  # an id never committed: no search back to block 0
            tm.batch(header.batch_id + 1_000)
        assert searched == []
    assert refused, "the cap was hit and worked around (else this test proves nothing)"


@pytest.mark.anvil
def test_sealed_reads_the_beacons_storage(network: Contracts, actors: Actors) -> None:
    """`SeedBeacon.sealed` reads ``_sealed`` at its storage slot: true for a sealed block, false
    for one nobody sealed (a change of the contract's layout fails here)."""
    c = network
    beacon = c.as_account(actors.outsider).task_manager.seed_beacon
    mine(c.w3, 2)
    block = int(c.w3.eth.block_number) - 1
    assert not beacon.sealed(block)
    beacon.seal(block)
    assert beacon.sealed(block) and not beacon.sealed(block - 1)
