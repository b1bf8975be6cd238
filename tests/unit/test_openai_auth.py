"""`SupernetAuth` drives the official ``openai.AsyncOpenAI`` against the node service (FAKE executor
and chain, real service code): each call is signed, the voucher ladder climbs by one fee per
admitted call, a failed task's fee is taken back, and a node that answers for another deployment
is not signed for."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import openai
import pytest
from chat_traces import store_chat_traces
from node_fixtures import FakeNode
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.client.read_grant import ReadGrantAuth
from supernet.sdk.client.types import ClientError
from supernet.sdk.openai_compat import SupernetAuth

FEE = 10**12  # the fake node's task fee


@pytest.fixture(autouse=True)
def _traced(fake_node: FakeNode) -> None:
    """The fake node stores each chat task's trace, which the drop-in reads (`chat_traces`)."""
    store_chat_traces(fake_node)


def client(node: FakeNode, state: Path, domain: Domain | None = None) -> openai.AsyncOpenAI:
    store = httpx.ASGITransport(app=node.service.app)  # the store the node advertises, in process
    auth = SupernetAuth(
        node.user, domain or node.chain.domain, rule=node.chain, state_dir=state, store_transport=store
    )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=node.service.app), auth=auth)
    return openai.AsyncOpenAI(base_url="http://node/v1", api_key="unused", http_client=http, max_retries=0)


def vouchers(node: FakeNode) -> list[int]:
    with sqlite3.connect(node.service.settings.data_dir / "node.sqlite3") as c:
        rows = c.execute(
            "SELECT v.cumulative FROM vouchers v JOIN tasks t ON t.id = v.task_id ORDER BY t.nonce"
        )
        return sorted(int(v) for (v,) in rows)


async def ask(ai: openai.AsyncOpenAI, text: str) -> str | None:
    reply = await ai.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": text}])
    return reply.choices[0].message.content


async def test_calls_in_a_row_climb_the_voucher_ladder(fake_node: FakeNode, tmp_path: Path) -> None:
    ai = client(fake_node, tmp_path)
    assert [await ask(ai, f"question {i}") for i in range(3)] == [f"echo: question {i}" for i in range(3)]
    assert vouchers(fake_node) == [FEE, 2 * FEE, 3 * FEE]
    # a fresh process with the same state directory continues the ladder
    assert await ask(client(fake_node, tmp_path), "again") == "echo: again"
    assert vouchers(fake_node)[-1] == 4 * FEE


async def test_a_failed_task_is_not_paid_for_and_the_ladder_goes_on(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    ai = client(fake_node, tmp_path)
    await ask(ai, "first")
    fake_node.executor.fail_on = "boom"
    with pytest.raises(openai.InternalServerError):
        await ask(ai, "boom")
    grant = ReadGrantAuth(fake_node.user, fake_node.address, fake_node.chain.domain)
    account = (await ai._client.get(f"http://node/v1/accounts/{fake_node.user.address}", auth=grant)).json()
    assert int(account["billed"]) == FEE  # the failed task is not billed
    fake_node.executor.fail_on = None
    assert await ask(ai, "after") == "echo: after"
    # re-based on what was billed: the voucher after the failure covers two tasks, not three
    assert max(vouchers(fake_node)) == 2 * FEE


async def test_streaming_through_the_auth(fake_node: FakeNode, tmp_path: Path) -> None:
    ai = client(fake_node, tmp_path)
    stream = await ai.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "hi there"}], stream=True
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip() == "echo: hi there"
    assert len({c.created for c in chunks}) == 1 and chunks[-1].choices[0].finish_reason == "stop"
    assert vouchers(fake_node) == [FEE]


async def test_no_signature_for_a_node_of_another_deployment(fake_node: FakeNode, tmp_path: Path) -> None:
    other = Domain(fake_node.chain.domain.chain_id, "0x" + "cd" * 20)
    with pytest.raises(ClientError, match="this deployment is"):
        await ask(client(fake_node, tmp_path, other), "hi")
    assert vouchers(fake_node) == []
