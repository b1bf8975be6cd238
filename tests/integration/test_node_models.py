"""Several models on one node, end to end: a real Anvil, ``supernet node run`` in a subprocess serving
two model ids (`[[engine.models]]`: SmolLM2-135M in float32 and the same weights in bfloat16, two
served ids, `supernet.sdk.models`), the embedded store, and the user's ``Client``.

The node registers both ids on chain and lists both; discovery finds it by either; a task and a
chat completion of each model run on that model's engine (the receipt's ``modelId``, the trace's
LLM events and engine precision say which); a model the node does not serve is refused with the
list of those it does; and memory written under one model is read under the other, since both
cores sit in one kernel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from node_fixtures import NodeProcess, node_on_anvil, signed_task
from supernet.node.llm.catalog import models_dir
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil, dev_account
from supernet.sdk.client import Client
from supernet.sdk.client.types import DEFAULT_PRECISIONS
from supernet.sdk.formats.trace import LlmEvent, MemoryAddEvent, MemorySearchEvent, Trace
from supernet.sdk.models import COMPUTE_PRECISIONS, served_model_id
from supernet.sdk.store import StoreClient

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

NODE_KEY_INDEX = 11
USER_INDEXES = (12, 13, 14)
FP32, BF16 = "smollm2-135m@float32", "smollm2-135m@bfloat16"  # names given where two share weights

TWO_MODELS = """
[engine]
agents = ["chat", "retrieval"]
max_new_tokens = 16

[[engine.models]]
model = "smollm2-135m"
dtype = "float32"

[[engine.models]]
model = "smollm2-135m"
dtype = "bfloat16"
"""


@dataclass
class Net:
    anvil: Anvil
    contracts: Contracts
    deployment: Path
    node: NodeProcess
    tmp: Path
    ids: dict[str, str]  # name -> served model id

    def client(self, user_index: int, name: str, precisions: Collection[str] = COMPUTE_PRECISIONS) -> Client:
        """A user's client, signing for every compute format unless ``precisions`` says otherwise."""
        key = "0x" + bytes(dev_account(user_index).key).hex()
        return Client.connect(
            self.anvil.url, self.deployment, key, state_dir=self.tmp / f"user-{name}", precisions=precisions
        )

    async def trace(self, cid: str) -> Trace:
        async with StoreClient(self.node.url + "/v1/store") as store:  # the node's read-only store
            return Trace.from_dag(await store.get_dag(cid))


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    import json

    weights = json.loads((models_dir() / "smollm2-135m" / "manifest.json").read_text())["model_id"]
    ids = {FP32: served_model_id(weights, "float32"), BF16: served_model_id(weights, "bfloat16")}
    tmp = tmp_path_factory.mktemp("models")
    with node_on_anvil(tmp, NODE_KEY_INDEX, extra=TWO_MODELS) as (anvil, contracts, dep, node):
        yield Net(anvil, contracts, dep, node, tmp, ids)


def llm_models(trace: Trace) -> list[str]:
    """The model id each LLM call of the trace records (the core's engine that ran it)."""
    return [e.model_id for e in trace.events if isinstance(e, LlmEvent)]


async def test_the_node_lists_registers_and_is_found_by_every_model(net: Net) -> None:
    async with httpx.AsyncClient(base_url=net.node.url, timeout=30) as http:
        info = (await http.get("/v1/node")).json()
        models = (await http.get("/v1/models")).json()["data"]
    assert info["models"] == [net.ids[FP32], net.ids[BF16]]  # the first configured is the default
    assert info["modelNames"] == net.ids
    # each id's weights and format, which the id is the hash of (what a client checks before signing)
    weights = {f["weights"] for f in info["modelFormats"].values()}
    assert {m: f["compute"] for m, f in info["modelFormats"].items()} == {
        net.ids[FP32]: "float32",
        net.ids[BF16]: "bfloat16",
    }
    assert [served_model_id(w, c) for w in weights for c in ("float32", "bfloat16")] == list(net.ids.values())
    assert {(m["id"], m["modelId"]) for m in models} == set(net.ids.items())
    # registered on chain as one node with both ids, as `ensure_registered` does for one
    node = net.contracts.service_manager.get_node(dev_account(NODE_KEY_INDEX).address)
    assert node.active and node.model_ids == [bytes.fromhex(m[2:]) for m in net.ids.values()]
    client = net.client(USER_INDEXES[0], "discover")
    try:
        for name, model_id in net.ids.items():  # found by either id or either name
            for wanted in (model_id, name):
                found = await client.discover(wanted)
                assert [n.url for n in found] == [net.node.url], wanted
        assert await client.discover("0x" + "ab" * 32) == []
    finally:
        await client.aclose()
    # by default a client signs no bfloat16 id (a node chooses among near-tied answers inside the
    # bf16 bounds): the node is found for its float32 id only, and the bf16 one says why
    default = net.client(USER_INDEXES[0], "discover-default", DEFAULT_PRECISIONS)
    try:
        assert [n.url for n in await default.discover(FP32)] == [net.node.url]
        assert [n.url for n in await default.discover()] == [net.node.url]
        assert await default.discover(BF16) == []
        [left] = default.last_discovery
        assert left.problem is not None and "computed in bfloat16" in left.problem
    finally:
        await default.aclose()


async def test_a_task_of_each_model_runs_on_that_models_engine(net: Net) -> None:
    client = net.client(USER_INDEXES[0], "tasks")
    try:
        for name, dtype in ((FP32, "float32"), (BF16, "bfloat16")):
            result = await client.submit_task("Name a colour.", model=name, deposit=10**17)
            assert result.output and result.trace_cid is not None
            doc = await client.receipt(result.task_id, wait_committed=60)
            assert doc.receipt["modelId"] == net.ids[name]
            trace = await net.trace(result.trace_cid)
            assert trace.model_id == net.ids[name]
            assert trace.engine.dtype == dtype  # the core that ran it computes in this precision
            assert llm_models(trace) == [net.ids[name]]
            report = await client.verify(result.task_id, wait_committed=60)
            assert report.ok, report.failed()
    finally:
        await client.aclose()


async def test_chat_completions_route_by_model_and_an_unknown_model_is_refused(net: Net) -> None:
    client = net.client(USER_INDEXES[1], "chat")
    messages = [{"role": "user", "content": "What is 2+2?"}]
    try:
        async with httpx.AsyncClient(base_url=net.node.url, timeout=300) as http:
            for name in (BF16, FP32):
                signed_input = {
                    "messages": messages,
                    "max_new_tokens": 8,
                    "logprobs": True,
                    "top_logprobs": 2,
                }
                p = await client.prepare(signed_input, model=name, deposit=10**17)
                assert p.model_id == net.ids[name]
                body = {
                    "model": name,
                    "messages": messages,
                    "max_tokens": 8,
                    "logprobs": True,
                    "top_logprobs": 2,  # alternatives from a scoring pass of that model's engine
                    "supernet": p.signed,
                }
                r = await http.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, r.text
                client.accepted(p)
                answer = r.json()
                assert answer["model"] == name
                tokens = answer["choices"][0]["logprobs"]["content"]
                assert tokens and all(len(t["top_logprobs"]) == 2 for t in tokens)
                trace = await net.trace(answer["supernet"]["traceCid"])
                assert llm_models(trace) == [net.ids[name]]
            # a model it does not serve, by name (chat) or by signed id (tasks): refused, naming both
            p = await client.prepare({"messages": messages, "max_new_tokens": 8}, model=FP32)
            r = await http.post(
                "/v1/chat/completions", json={"model": "gpt-4o", "messages": messages, "supernet": p.signed}
            )
            unknown = "0x" + hashlib.sha256(b"a model nobody serves").hexdigest()
            user = client.account
            t = await http.post(
                "/v1/tasks",
                json=signed_task(
                    user,
                    dev_account(NODE_KEY_INDEX).address,
                    net.contracts.domain,
                    "Hi",
                    cumulative=10**18,
                    model_id=unknown,
                    agent_hash=(await http.get("/v1/node")).json()["agents"]["chat"],
                ),
            )
        for refusal, named in ((r, "gpt-4o"), (t, unknown)):
            assert refusal.status_code == 400, refusal.text
            error = refusal.json()["error"]
            assert error["code"] == "model_not_served" and named in error["message"]
            assert all(f"{n} ({m})" in error["message"] for n, m in net.ids.items())
            assert error["models"] == [{"name": n, "modelId": m} for n, m in net.ids.items()]
    finally:
        await client.aclose()


async def test_memory_written_under_one_model_is_read_under_the_other(net: Net) -> None:
    client = net.client(USER_INDEXES[2], "memory")
    fact = "The vault code is 4711."
    try:
        wrote = await client.submit_task(
            {"remember": [fact], "question": "What is the vault code?", "max_new_tokens": 8},
            agent="retrieval",
            model=FP32,
            deposit=10**17,
        )
        read = await client.submit_task(
            {"question": "What is the vault code?", "k": 1, "max_new_tokens": 8},
            agent="retrieval",
            model=BF16,
        )
        assert wrote.trace_cid is not None and read.trace_cid is not None
        first, second = await net.trace(wrote.trace_cid), await net.trace(read.trace_cid)
        added = next(e for e in first.events if isinstance(e, MemoryAddEvent))
        search = next(e for e in second.events if isinstance(e, MemorySearchEvent))
        assert search.namespace == added.namespace  # one kernel: one memory per user and agent
        assert search.hits == (added.entry,)  # the entry written by the float32 task
        assert llm_models(first) == [net.ids[FP32]]
        assert llm_models(second) == [net.ids[BF16]]
        report = await client.verify(read.task_id, wait_committed=60)
        assert report.ok, report.failed()
    finally:
        await client.aclose()
