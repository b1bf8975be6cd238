"""The memory manager's K-LRU working set on real parts (all-MiniLM embedder, embedded store).

A namespace with more entries than its working set: RAM never holds more than the working set,
evicted entries are paged back in from the store when they are hit, and every search returns the
same root, hits, texts, metadata and scores, bit for bit, as an unbounded manager's. The working
set is configured from the node's ``[kernel]`` settings, and a kernel with a tiny one still runs
and replays agents that use memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from supernet.node.kernel.kernel import KernelConfig
from supernet.node.kernel.memory import MemoryManager
from supernet.node.kernel.replay import replay
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.service.config import NodeSettings
from supernet.sdk.store import StoreClient
from supernet.sdk.store.embedded import EmbeddedStore, create_app

from tests.integration.test_kernel_agents import ALICE, NotesAgent, registry

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

FACTS = [
    "The vault code is 4711.",
    "Bananas are yellow.",
    "Validators re-check the work of nodes.",
    "Nodes stake tokens to be registered.",
    "The capital of France is Paris.",
    "Water boils at 100 degrees Celsius at sea level.",
    "The meeting moved to Thursday at noon.",
    "Alice prefers green tea to coffee.",
    "The backup server is in the basement.",
    "Receipts are committed in Merkle batches.",
    "The cat's name is Miso.",
    "Rust and Python are programming languages.",
    "Mount Everest is the highest mountain.",
    "The printer on floor two is broken.",
    "Invoices are due within thirty days.",
    "The train to Berlin leaves at 7:15.",
    "Photosynthesis turns light into sugar.",
    "Bob's birthday is on the ninth of May.",
    "The Wi-Fi password changed last week.",
    "Slashing burns part of a cheating node's stake.",
]
QUERIES = ["What is the code of the vault?", "Who checks nodes?", "When is the meeting?", "pets", "travel"]
NS = "0xuser/notes"
WORKING_SET = 4


@pytest.fixture()
async def other_store(tmp_path: Path) -> AsyncIterator[StoreClient]:
    """A second embedded store (two managers on one store would fight over their roots' pins)."""
    app = create_app(EmbeddedStore(tmp_path / "other-store"))
    async with StoreClient("http://other-store", transport=httpx.ASGITransport(app=app)) as client:
        yield client


async def test_search_after_eviction_is_the_unbounded_search(
    store_client: Any, other_store: Any, kernel_embedder: Any
) -> None:
    bounded = MemoryManager(store_client, kernel_embedder, working_set=WORKING_SET, k=2)
    unbounded = MemoryManager(other_store, kernel_embedder, working_set=None)
    for i, fact in enumerate(FACTS):
        wb = await bounded.add(NS, fact, {"n": i})
        wu = await unbounded.add(NS, fact, {"n": i})
        assert (wb.entry_cid, wb.root_cid) == (wu.entry_cid, wu.root_cid)
        assert bounded.resident(NS) <= WORKING_SET
    assert unbounded.resident(NS) == len(FACTS) and bounded.resident() == WORKING_SET
    assert bounded.stats.evictions == len(FACTS) - WORKING_SET

    for k in (1, 3, len(FACTS), len(FACTS) + 5):
        for query in QUERIES:
            root_b, hits_b = await bounded.search(NS, query, k)
            root_u, hits_u = await unbounded.search(NS, query, k)
            assert root_b == root_u and hits_b == hits_u, (query, k)  # scores bit for bit
            assert len(hits_b) == min(k, len(FACTS))
            assert bounded.resident(NS) <= WORKING_SET
    assert bounded.stats.scanned > 0  # evicted entries were scored from the store


async def test_evicted_entries_are_paged_back_in_on_access(store_client: Any, kernel_embedder: Any) -> None:
    memory = MemoryManager(store_client, kernel_embedder, working_set=WORKING_SET, k=2)
    cids = [(await memory.add(NS, fact, {})).entry_cid for fact in FACTS]
    evicted = [c for c in cids if not memory.is_resident(NS, c)]
    assert len(evicted) == len(FACTS) - WORKING_SET and cids[0] in evicted

    page_ins = memory.stats.page_ins
    _, hits = await memory.search(NS, "What is the code of the vault?", 1)
    assert [h.cid for h in hits] == [cids[0]] and hits[0].text == FACTS[0]
    assert memory.is_resident(NS, cids[0]) and memory.stats.page_ins == page_ins + 1
    assert memory.resident(NS) == WORKING_SET

    # a hit used K times stays while other entries come and go
    await memory.search(NS, "What is the code of the vault?", 1)
    for query in ("yellow fruit", "train to Berlin", "broken printer", "birthday", "Wi-Fi"):
        await memory.search(NS, query, 1)
    assert memory.is_resident(NS, cids[0]) and memory.resident(NS) == WORKING_SET

    # a new manager over the same roots (a restart) starts with an empty working set and pages in
    again = MemoryManager(store_client, kernel_embedder, working_set=WORKING_SET, k=2)
    again.roots.restore(memory.roots.snapshot())
    assert again.resident() == 0
    _, hits = await again.search(NS, "Who checks nodes?", 2)
    assert hits == (await memory.search(NS, "Who checks nodes?", 2))[1]
    assert again.resident(NS) == 2 and again.stats.page_ins == 2


def test_the_working_set_is_configured_from_the_kernel_section(tmp_path: Path) -> None:
    defaults = NodeSettings.load(None)
    assert (defaults.kernel.memory_working_set, defaults.kernel.memory_k) == (1024, 2)
    assert (KernelConfig().memory_working_set, KernelConfig().memory_k) == (1024, 2)
    toml = tmp_path / "node.toml"
    toml.write_text("[kernel]\nmemory_working_set = 8\nmemory_k = 3\n")
    settings = NodeSettings.load(toml)
    assert (settings.kernel.memory_working_set, settings.kernel.memory_k) == (8, 3)
    with pytest.raises(ValueError, match="memory_working_set"):
        NodeSettings.load(None, kernel={"memory_working_set": 0})


async def test_a_kernel_with_a_tiny_working_set_runs_and_replays(make_kernel: Any, store_client: Any) -> None:
    kernel = await make_kernel(KernelConfig(memory_working_set=2, memory_k=2), agents=registry())

    async def notes(n: int, **input: Any) -> dict[str, Any]:
        outcome = await kernel.run_task(TaskSpec("0x" + f"{0x90 + n:02x}" * 32, "notes", input, user=ALICE))
        doc: dict[str, Any] = await store_client.get_dag(outcome.trace_cid)
        assert doc["status"] == "ok", doc["error"]
        return doc

    for i, fact in enumerate(FACTS[:6]):
        await notes(i, op="remember", text=fact)
    assert kernel.memory.resident() == 2 and kernel.memory.stats.evictions == 4
    recall = await notes(7, op="recall", query="vault code")
    assert "4711" in recall["output"] and kernel.memory.resident() == 2
    assert (await replay(recall, NotesAgent, kernel.engine.tokenizer)).divergences == []
