"""The memory manager's K-LRU replacement (`supernet.node.kernel.memory.KLRU`), alone.

The victim is the key with the largest backward K-distance: keys used fewer than K times go first
(the least recently used of them), then the one whose K-th most recent use is oldest; an evicted
key's history is retained, so a key paged back in keeps its standing; the map never holds more
than its capacity.
"""

from __future__ import annotations

import pytest
from supernet.node.kernel.memory import KLRU


def test_keys_used_fewer_than_k_times_go_first_least_recent_first() -> None:
    cache = KLRU[int](capacity=3, k=2)
    for key in ("a", "b", "c"):
        cache.put(key, 0)
    cache.get("a")  # a: two uses; b and c: one each
    assert cache.put("d", 0) == ["b"]  # b is the least recently used of the once-used keys
    assert cache.put("e", 0) == ["c"]
    assert sorted(cache.keys()) == ["a", "d", "e"] and len(cache) == 3


def test_among_keys_used_k_times_the_oldest_kth_use_goes() -> None:
    cache = KLRU[int](capacity=2, k=2)
    cache.put("a", 0)  # t1
    cache.put("b", 0)  # t2
    cache.get("a")  # t3: a's 2nd most recent use is t1
    cache.get("b")  # t4: b's is t2
    cache.get("a")  # t5: a's is now t3, b's still t2: b goes although it is not the least recent
    assert cache.put("c", 0) == ["b"]


def test_k1_is_lru_and_a_scan_does_not_flush_a_hot_key_under_k2() -> None:
    lru = KLRU[int](capacity=2, k=1)
    lru.put("hot", 0)
    lru.put("x", 0)
    lru.get("hot")
    assert lru.put("y", 0) == ["x"] and lru.put("z", 0) == ["hot"]  # plain LRU: recency only

    klru = KLRU[int](capacity=2, k=2)
    klru.put("hot", 0)
    klru.get("hot")
    evicted = [v for key in ("s1", "s2", "s3", "s4") for v in klru.put(key, 0)]
    assert "hot" in klru and evicted == ["s1", "s2", "s3"]  # the scan evicts itself


def test_an_evicted_keys_history_is_retained_and_capacity_holds() -> None:
    cache = KLRU[int](capacity=2, k=2)
    cache.put("a", 1)
    cache.get("a")
    cache.put("b", 2)
    cache.get("b")
    assert cache.put("c", 3) == ["a"]  # a's 2nd most recent use is the oldest
    cache.get("c")
    assert cache.put("a", 1) == ["b"]  # a is back with its history: two uses, not one
    assert cache.peek("b") is None and cache.get("b") is None and len(cache) == 2
    unbounded = KLRU[int](capacity=None, k=2)
    assert all(unbounded.put(str(i), i) == [] for i in range(1000)) and len(unbounded) == 1000


def test_refresh_peek_and_bad_arguments() -> None:
    cache = KLRU[str](capacity=1, k=2)
    assert cache.put("a", "A") == [] and cache.put("a", "A2") == [] and cache.peek("a") == "A2"
    with pytest.raises(ValueError, match="at least one"):
        KLRU[int](capacity=0)
    with pytest.raises(ValueError, match="at least 1"):
        KLRU[int](capacity=4, k=0)
