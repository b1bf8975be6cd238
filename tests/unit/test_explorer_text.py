"""How the explorer writes amounts and times, and how it reads a search query."""

from __future__ import annotations

import pytest
from supernet.explorer.format import ago, eth, short, utc
from supernet.explorer.search import BadQuery, classify


@pytest.mark.parametrize(
    ("wei", "text"),
    [
        (0, "0 ETH"),
        (10**18, "1 ETH"),
        (15 * 10**17, "1.5 ETH"),
        (10**14, "0.0001 ETH"),
        (10**9, "1 gwei"),
        (512 * 10**9, "512 gwei"),
        (1234, "1,234 wei"),
        (1_500_000, "0.002 gwei"),
        (10**22, "10000 ETH"),
        # any uint256 renders (a node's price, a signed maxFee): no 28-digit decimal context
        (10**40, "10000000000000000000000 ETH"),
        (2**256 - 1, "115792089237316195423570985008687907853269984665640564039457.584008 ETH"),
        (2**256 + 10**18 // 2 * 3, "115792089237316195423570985008687907853269984665640564039459.084008 ETH"),
    ],
)
def test_amounts_in_eth_or_gwei(wei: int, text: str) -> None:
    assert eth(wei) == text


def test_times_relative_and_absolute() -> None:
    assert ago(1000, now=1005) == "5 s ago"
    assert ago(1000, now=1000 + 7200) == "2 h ago"
    assert ago(1000, now=900) == "in 1 min"
    assert utc(0) == "1970-01-01 00:00:00 UTC"
    assert short("0x" + "ab" * 32) == "0xabababab…abab"


@pytest.mark.parametrize(
    ("query", "kind"),
    [
        ("0x" + "Ab" * 32, "hash"),
        ("0x" + "12" * 20, "address"),
        ("7", "batch"),
        ("batch #7", "batch"),
        ("challenge 3", "challenge"),
        ("c3", "challenge"),
        ("bafyreibjk2zm52hfizr454i2vrctndr2q2oimlwxu36s3or2icabptr6by", "cid"),
    ],
)
def test_search_queries_by_shape(query: str, kind: str) -> None:
    assert classify(query)[0] == kind


@pytest.mark.parametrize("query", ["", "   ", "hello", "0x123", "0x" + "g" * 64, "x" * 500, "batch -1"])
def test_malformed_queries_are_refused_with_a_reason(query: str) -> None:
    with pytest.raises(BadQuery, match="task id"):
        classify(query)
