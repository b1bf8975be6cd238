"""Where a task's roots come from, on the devnet: real Anvil, embedded store over HTTP, the real
default model and embedder, the node's real kernel running the built-in ``retrieval`` agent
(fixtures in tests/validator_fixtures.py).

A user's question is answered from memories an earlier task of theirs wrote. When that earlier
task is committed, the validator follows the question's memory root to it and the receipt
verifies clean. When the node ran the earlier task but never committed its receipt (so its trace,
which holds the write, is open to no check), the question's receipt is challenged for its origin.
"""

from __future__ import annotations

from typing import Any

import pytest
from supernet.node.agents.retrieval import RetrievalAgent
from validator_fixtures import VNet

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

REMEMBER = {"remember": ["The vault code is 4711."]}
QUESTION = {"question": "What is the vault code?", "k": 1, "max_new_tokens": 8}


async def verdicts(vnet: VNet, validator_factory: Any, batch_id: int) -> tuple[list[Any], list[Any]]:
    """One validator's verdict events on ``batch_id``, and its challenge events."""
    events: list[Any] = []
    async with validator_factory(0, events=events) as v:
        await v.step()
    mine = [e.data for e in events if e.kind == "verdict" and e.data["batch_id"] == batch_id]
    return mine, [e.data for e in events if e.kind == "challenge" and e.data["batch_id"] == batch_id]


async def test_a_question_follows_its_memory_to_the_committed_task_that_wrote_it(
    vnet: VNet, validator_factory: Any
) -> None:
    vnet.faults()
    first, _ = await vnet.run_batch([], chat_inputs=[REMEMBER], agent=RetrievalAgent)
    second, _ = await vnet.run_batch([], chat_inputs=[QUESTION], agent=RetrievalAgent)
    trace = await vnet.store.get_dag((await vnet.entry(second, 0)).trace_cid)
    search = next(e for e in trace["events"] if e["kind"] == "memory.search")
    root = await vnet.store.get_dag(str(search["root"]))
    assert root["writer"] == "0x" + (await vnet.entry(first, 0)).receipt.request_hash.hex()
    checked, challenges = await verdicts(vnet, validator_factory, second)
    assert [(v["ok"], v["checks"], v["unverifiable"]) for v in checked] == [(True, [], None)]
    assert challenges == []


async def test_memory_from_a_task_the_node_never_committed_is_challenged(
    vnet: VNet, validator_factory: Any
) -> None:
    vnet.faults()
    await vnet.run_batch([], chat_inputs=[REMEMBER], agent=RetrievalAgent, commit=False)
    batch_id, _ = await vnet.run_batch([], chat_inputs=[QUESTION], agent=RetrievalAgent)
    checked, challenges = await verdicts(vnet, validator_factory, batch_id)
    assert [(v["ok"], v["checks"]) for v in checked] == [(False, ["origin"])], checked
    assert len(challenges) == 1
