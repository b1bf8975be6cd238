"""Regression tests of the validator against a cheating node's traces (an adversarial review's).

Each test builds the trace a cheating node would commit and asserts the whole `Verifier`
(receipt, signatures, trace, agent replay, tools) now catches it (a precise finding) or refuses to
be stalled by it; each keeps the review's control case. ``test_known_limit_*`` tests assert the
current (harmful) behaviour of attacks left open on purpose (docs/validator.md "Known limits").
No chain and no real model: most traces make no LLM call, so a stand-in scorer that only names the
served weights is enough (the checks that run are the model-free ones plus replay).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from eth_account import Account
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.access import action_hash, namespace_of
from supernet.node.kernel.agent_run import task_seed
from supernet.sdk.chain.eip712 import (
    Confirmation,
    Domain,
    TaskRequest,
    hash_task_request,
    sign_confirmation,
    sign_task_request,
)
from supernet.sdk.chain.receipts import Receipt, input_hash, output_hash, sign_receipt, trace_hash
from supernet.sdk.formats.manifest import ManifestEntry
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import AgentRef, CallableAgent, Limits, ToolDescription, Trace
from supernet.sdk.models import served_model_id
from supernet.sdk.store.cids import compute_cid, decode_dag, encode_dag, link
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import Manifest, Verifier

from tests.embedder import score

DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "33" * 20)
USER = Account.from_key("0x" + "01" * 32)
NODE = Account.from_key("0x" + "02" * 32)
NODE_SOCK = Account.from_key("0x" + "03" * 32)  # a key the cheating node controls
WEIGHTS = "0x" + "ab" * 32
MODEL_ID = served_model_id(WEIGHTS, "float32")


class MemoryQuestion(Agent):
    """Answers from the user's memory: the best hit's text, else 'unknown'."""

    agent_id = "memq"
    description = "Answers a question from the user's memory."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        hits = await ctx.memory.search(str(input["q"]), k=1)
        return hits[0].text if hits else "unknown"


class Payer(Agent):
    """Calls an irreversible payment tool (an operator's MCP tool) with the input's arguments."""

    agent_id = "payer"
    description = "Transfers funds (irreversible, needs the user's confirmation)."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        result = await ctx.tools.call("bank.transfer", {"to": input["to"], "amount": input["amount"]})
        return str(result)


class StandInScorer:
    """Names the served weights; never asked to score (no LLM call in these traces)."""

    weights_id = WEIGHTS
    eos_ids = (0,)
    vocab_size = 100
    tokenizer = None
    max_positions = 1024
    dtype = "float32"

    def score_many(self, requests: Any) -> list[Any]:
        raise AssertionError("no LLM call to score")

    def decode(self, ids: Any) -> str:
        return ""


class DictStore:
    def __init__(self) -> None:
        self.blocks: dict[str, bytes] = {}

    def put(self, doc: Any) -> str:
        raw = encode_dag(doc)
        cid = compute_cid(raw, "dag-cbor")
        self.blocks[cid] = raw
        return cid

    async def get_dag(self, cid: str) -> Any:
        return decode_dag(self.blocks[cid])

    async def get_block(self, cid: str) -> bytes:
        return self.blocks[cid]


def registry(extra: tuple[type[Agent], ...] = ()) -> AgentRegistry:
    r = AgentRegistry()
    for cls in (MemoryQuestion, Payer, *extra):
        r.register(cls)
    return r


DOC_LIMITS = {
    "memory": True,
    "storage": False,
    "max_llm_calls": 8,
    "max_llm_tokens": 1024,
    "max_new_tokens": 64,
    "max_tool_calls": 8,
    "max_file_bytes": 0,
}
"""The limits of every `trace_doc`."""


def doc_profile(
    agent: type[Agent], tools: list[dict[str, Any]] | None = None, agents: list[dict[str, Any]] | None = None
) -> str:
    """The ``agentHash`` of a `trace_doc` of ``agent`` with ``tools`` and callable ``agents``: the
    profile the user signs."""
    return AgentProfile.of(
        AgentRef(agent.agent_id, agent.code_hash()),
        Limits.from_dag(DOC_LIMITS, "limits"),
        [ToolDescription.from_dag(t, "tool") for t in tools or []],
        [CallableAgent.from_dag(a, "agent") for a in agents or []],
    ).hash()


def signed_task(
    agent: type[Agent], task_input: Any, agent_hash: str | None = None, model_id: str = MODEL_ID
) -> tuple[TaskRequest, str]:
    """The user's request for ``agent`` on ``task_input``, signed for ``agent_hash`` (default: the
    profile of a `trace_doc` without tools) and ``model_id``, and its task id."""
    req = TaskRequest(
        user=USER.address,
        node=NODE.address,
        model_id=bytes.fromhex(model_id[2:]),
        agent_hash=bytes.fromhex((agent_hash or doc_profile(agent))[2:]),
        input_hash=input_hash(task_input),
        max_fee=100,
        nonce=1,
        deadline=2**40,
    )
    return req, "0x" + hash_task_request(req, DOMAIN).hex()


def trace_doc(
    agent: type[Agent],
    task_id: str,
    user: str,
    task_input: Any,
    events: list[dict[str, Any]],
    output: str,
    tools: list[dict[str, Any]] | None = None,
    blocks: list[bytes] | None = None,
    agents: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        **({} if agents is None else {"agents": agents}),
        "type": "supernet/trace/v1",
        "task_id": task_id,
        "user": user,
        "fee": 100,
        "agent": {"id": agent.agent_id, "code_hash": agent.code_hash()},
        "model_id": MODEL_ID,
        "input": task_input,
        "seed": task_seed(task_id),
        "limits": dict(DOC_LIMITS),
        "tools": tools or [],
        "engine": {"device": "cpu", "dtype": "float32"},
        "output": output,
        "status": "ok",
        "error": None,
        "events": events,
        "witness": {"blocks": blocks or [], "files": []},
    }


async def verify(
    store: DictStore,
    req: TaskRequest,
    task_id: str,
    doc: dict[str, Any],
    agents: tuple[type[Agent], ...] = (),
    origins: Any = None,
    batch_id: int = 1,
) -> Any:
    """Commit ``doc`` the way an (honest-looking) node does and run the whole verifier on it (as
    entry 0 of batch ``batch_id``; ``origins``: the verifier's `ReceiptIndex`, None: roots are not
    followed)."""
    entry = commit_entry(store, req, task_id, doc)
    verifier = Verifier(
        store,
        StandInScorer(),
        RegistryRunner(store),
        DOMAIN,
        "0x" + "44" * 20,
        agents=registry(agents),
        origins=origins,
    )
    return await verifier.verify(batch_id, NODE.address, 0, Manifest({0: entry}))


def commit_entry(store: DictStore, req: TaskRequest, task_id: str, doc: dict[str, Any]) -> ManifestEntry:
    """Put the trace ``doc`` in ``store``; the manifest entry an honest-looking node commits for it."""
    trace_cid = store.put(doc)
    receipt = Receipt(
        request_hash=bytes.fromhex(task_id[2:]),
        user=USER.address,
        model_id=req.model_id,
        input_hash=req.input_hash,
        output_hash=output_hash(doc["output"]),
        trace_hash=trace_hash(trace_cid),
        fee=100,
    )
    entry = ManifestEntry(
        receipt,
        receipt.leaf(),
        sign_receipt(receipt, NODE),
        trace_cid,
        doc["agent"]["id"],
        req,
        sign_task_request(req, DOMAIN, USER),
    )
    return entry


def empty_search(query: str) -> list[dict[str, Any]]:
    """The one event of a MemoryQuestion run on an empty namespace: a search that finds nothing."""
    ns = namespace_of(USER.address, "memq")
    return [
        {
            "kind": "memory.search",
            "namespace": ns,
            "query": query,
            "k": 1,
            "root": None,
            "hits": [],
            "scores": [],
        }
    ]


def fabricated_memory(namespace: str, text: str) -> tuple[list[bytes], Any, Any]:
    """A memory root of ``namespace`` the node made up, listing one entry it made up:
    (their blocks, the root's link, the entry's link)."""
    entry_raw = encode_dag({"type": "supernet/memory-entry", "text": text, "metadata": {}})
    entry_cid = compute_cid(entry_raw, "dag-cbor")
    root = {
        "type": "supernet/memory-root",
        "namespace": namespace,
        "entries": [link(entry_cid)],
        "prev": None,
    }
    root_raw = encode_dag(root)
    return [root_raw, entry_raw], link(compute_cid(root_raw, "dag-cbor")), link(entry_cid)


def searched(
    namespace: str, query: str, root: Any, hit: Any, text: str = "The launch code is 0000."
) -> list[dict[str, Any]]:
    """A search of ``root`` whose one hit is ``hit`` (the entry of ``text``), with its true score."""
    return [
        {
            "kind": "memory.search", "namespace": namespace, "query": query, "k": 1,
            "root": root, "hits": [hit], "scores": [score(query, text)],
        }
    ]  # fmt: skip


async def test_a_memory_root_of_another_namespace_is_caught() -> None:
    """A node answering a user's memory question from another user's memory (a real root of theirs,
    or one made up and labelled as theirs) verified clean: replay checked hits against the recorded
    root, never whose root it is. Now the searched root must be a memory root of the task's own
    namespace, or the search is a divergence. Control: the same root labelled with the task's
    namespace still verifies (the known limit below)."""
    task_input = {"q": "What is the launch code?"}
    req, task_id = signed_task(MemoryQuestion, task_input)
    ns = namespace_of(USER.address, "memq")
    other = namespace_of("0x" + "77" * 20, "memq")
    blocks, root, hit = fabricated_memory(other, "The launch code is 0000.")
    doc = trace_doc(
        MemoryQuestion, task_id, USER.address, task_input, searched(ns, task_input["q"], root, hit),
        "The launch code is 0000.", blocks=blocks,
    )  # fmt: skip
    verdict = await verify(DictStore(), req, task_id, doc)
    assert not verdict.ok and verdict.unverifiable is None
    assert any("not a memory root of it" in f.message for f in verdict.findings), verdict.findings


TRANSFER_TOOL = {
    "name": "bank.transfer",
    "description": "Send funds. Irreversible.",
    "parameters": {"type": "object"},
    "deterministic": False,
    "irreversible": True,
}


async def test_forged_confirmation_via_trace_user_is_caught() -> None:
    """A node runs an irreversible tool without the user's consent, writing its own address as the
    trace's ``user`` and signing the Confirmation itself (the replay checks confirmations against
    that field). `check_trace` now binds ``user`` to the signed request: a TRACE finding.
    """
    store = DictStore()
    task_input = {"to": "0x" + "99" * 20, "amount": 1000}
    req, task_id = signed_task(Payer, task_input, doc_profile(Payer, [TRANSFER_TOOL]))
    args = {"to": task_input["to"], "amount": task_input["amount"]}
    forged = sign_confirmation(
        Confirmation(bytes.fromhex(task_id[2:]), action_hash("bank.transfer", args)), DOMAIN, NODE_SOCK
    )
    events = [
        {
            "kind": "tool",
            "name": "bank.transfer",
            "args": args,
            "deterministic": False,
            "result": "sent",
            "error": None,
            "confirmation": "0x" + forged.hex(),
        }
    ]
    doc = trace_doc(Payer, task_id, NODE_SOCK.address, task_input, events, "sent", tools=[TRANSFER_TOOL])
    verdict = await verify(store, req, task_id, doc)
    assert not verdict.ok and verdict.unverifiable is None
    user = [f for f in verdict.findings if f.check.value == "trace" and "user" in f.message]
    assert len(user) == 1, verdict.findings
    assert user[0].expected == USER.address.lower() and user[0].claimed == NODE_SOCK.address.lower()
    # control: the same forged signature under the real user's address is refused by the replay
    control = await verify(store, req, task_id, {**doc, "user": USER.address})
    assert not control.ok and {f.check.value for f in control.findings} == {"replay"}


@pytest.mark.parametrize("swap", ["fee", "request"])
async def test_trace_head_fields_are_bound(swap: str) -> None:
    """The trace's ``fee`` and (optional) ``request`` must be the receipt's / the signed request."""
    store = DictStore()
    task_input = {"q": "x"}
    req, task_id = signed_task(MemoryQuestion, task_input)
    events = empty_search("x")
    doc = trace_doc(MemoryQuestion, task_id, USER.address, task_input, events, "unknown")
    if swap == "fee":
        doc["fee"] = 10**18  # receipt fee is 100
    else:
        other = TaskRequest(
            user=NODE_SOCK.address, node=NODE.address, model_id=b"\x01" * 32, agent_hash=b"\x02" * 32,
            input_hash=b"\x03" * 32, max_fee=1, nonce=9, deadline=1,
        )  # fmt: skip
        doc["request"] = other.to_json()
    verdict = await verify(store, req, task_id, doc)
    assert [(f.check.value, f.message) for f in verdict.findings] == [
        ("trace", "trace fee does not match the receipt / signed request")
        if swap == "fee"
        else ("trace", "trace request is not the signed request")
    ]
    # control: the untouched trace verifies clean
    clean = trace_doc(MemoryQuestion, task_id, USER.address, task_input, events, "unknown")
    assert (await verify(store, req, task_id, clean)).ok
    # the request, when the trace carries it, may be the signed one
    assert (await verify(store, req, task_id, {**clean, "request": req.to_json()})).ok


class Calc(Agent):
    """Uses the deterministic built-in calculator; says so when it cannot (like ReAct's observations)."""

    agent_id = "calc"
    description = "Computes with the calculator."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        try:
            return str(await ctx.tools.call("calculator", {"expression": input["expr"]}))
        except Exception as exc:
            return f"could not compute ({type(exc).__name__})"


async def test_claimed_timeout_of_a_pure_tool_is_caught() -> None:
    """A node never runs a deterministic tool (or suppresses a result it dislikes): it records the
    call as failed with ``ToolTimeoutError``. A pure local tool (calculator) is now re-run whatever
    the node recorded, and its result where the node claimed a timeout is a TOOL finding."""
    from supernet.node.kernel.agent_run import spec_record

    store = DictStore()
    task_input = {"expr": "6 * 7"}
    spec = spec_record(RegistryRunner(store).spec("calculator"))
    req, task_id = signed_task(Calc, task_input, doc_profile(Calc, [spec]))
    events = [
        {
            "kind": "tool",
            "name": "calculator",
            "args": {"expression": "6 * 7"},
            "deterministic": True,
            "result": None,
            "error": "ToolTimeoutError: tool calculator timed out after 2 s",
        }
    ]
    doc = trace_doc(
        Calc, task_id, USER.address, task_input, events, "could not compute (ToolTimeoutError)", tools=[spec]
    )
    verdict = await verify(store, req, task_id, doc, agents=(Calc,))
    assert verdict.tool_calls == 1  # re-run despite the claimed timeout
    assert [(f.check.value, f.message, f.call) for f in verdict.findings] == [
        ("tool", "tool calculator: error on one side only", 0)
    ]
    assert verdict.findings[0].expected == 42
    # control: the honest trace (the result recorded) verifies clean
    honest = trace_doc(
        Calc,
        task_id,
        USER.address,
        task_input,
        [{**events[0], "result": 42, "error": None}],
        "42",
        tools=[spec],
    )
    ok = await verify(store, req, task_id, honest, agents=(Calc,))
    assert ok.ok and ok.unverifiable is None and ok.tool_calls == 1
    # a store-backed tool keeps the exemption: its recorded timeout is not re-run, but it must be in
    # the tool's own words (the text reaches the agent)
    from supernet.validator.tool_check import check_tools
    from supernet.validator.trace_view import ToolCall

    timeout = "ToolTimeoutError: tool store_read timed out after 10.0 s"
    read = ToolCall(0, "store_read", {"cid": "bafyx"}, None, timeout, True)
    assert await check_tools((read,), RegistryRunner(store)) == ([], 0, None)
    worded = ToolCall(0, "store_read", {"cid": "bafyx"}, None, "ToolTimeoutError: timed out", True)
    findings, rerun, _ = await check_tools((worded,), RegistryRunner(store))
    assert [f.check.value for f in findings] == ["tool"] and rerun == 0


def test_empty_fingerprints_are_caught() -> None:
    """Fingerprints compare only the dimensions the node lists, so an entry with empty (or fewer,
    or repeated) ``indices`` would check nothing. A node computing with slightly different weights
    is caught by its fingerprints alone; with them emptied, it is now an LLM shape finding."""
    import asyncio
    import copy
    from dataclasses import replace as dc_replace

    import torch
    from llm_fixtures import make_tiny_llama
    from supernet.node.llm import LLMEngine, SamplingParams
    from supernet.node.llm.scoring import Tolerance
    from supernet.validator.llm_check import check_scores
    from supernet.validator.scoring import ModelScorer
    from supernet.validator.trace_view import LLMCall
    from supernet.validator.verifier import score_call

    prompt = (5, 17, 33, 2, 9)
    honest = make_tiny_llama(3)
    cheap = copy.deepcopy(honest)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in cheap.parameters():
            if p.dim() > 1:
                p.mul_(1 + 4e-5 * torch.randn(p.shape, generator=gen))

    async def generate() -> Any:
        engine = LLMEngine.from_model(cheap, max_batch=4, max_seq_len=128)
        async with engine:
            params = SamplingParams(max_new_tokens=40, temperature=0.0, seed=11, stop_token_ids=())
            return await engine.submit(prompt, params).result()

    res = asyncio.run(generate())
    fps = [{"index": f.index, "indices": list(f.indices), "values": list(f.values)} for f in res.fingerprints]
    call = LLMCall(
        0, "m", prompt, res.output_ids, res.logprobs, fps, 0.0, 1.0, 11, 40, (), res.finish_reason, None
    )
    weights = LLMEngine.from_model(honest, max_batch=1, max_seq_len=128).weights_id
    rescored = score_call(ModelScorer(honest, None, weights, (0,)), call)
    caught = check_scores(call, rescored, Tolerance())
    assert caught and all("fingerprint" in f.message for f in caught)  # only the fingerprints see it
    emptied = [{**f, "indices": [], "values": []} for f in fps]
    found = check_scores(dc_replace(call, fingerprints=emptied), rescored, Tolerance())
    assert [(f.check.value, f.call) for f in found] == [("llm.shape", 0)]
    assert "lists 0 dims" in found[0].message
    # fewer dims, a repeated dim, a non-finite value: the same
    for bad in (
        {**fps[0], "indices": fps[0]["indices"][:3], "values": fps[0]["values"][:3]},
        {**fps[0], "indices": [fps[0]["indices"][0]] * 8, "values": [fps[0]["values"][0]] * 8},
        {**fps[0], "values": [float("nan"), *fps[0]["values"][1:]]},
    ):
        found = check_scores(dc_replace(call, fingerprints=[bad, *fps[1:]]), rescored, Tolerance())
        assert [f.check.value for f in found] == ["llm.shape"], found
    # control: the honest model's own fingerprints of the same call pass
    own = [
        {"index": f.index, "indices": list(f.indices), "values": list(f.values)}
        for f in rescored.fingerprints
    ]
    honest = dc_replace(call, fingerprints=own, logprobs=rescored.logprobs)
    assert check_scores(honest, rescored, Tolerance()) == []


@pytest.mark.parametrize("where", ["input", "confirmed_tool_args"])
async def test_poison_trace_is_a_trace_finding(where: str) -> None:
    """A trace holding an integer past 2**53 (valid dag-cbor, valid ``supernet/trace/v1``) made
    `Verifier.verify` raise (``InputEncodingError`` from ``input_hash`` / ``action_hash``). Such a
    value has no canonical form, so no honest node records it: now a TRACE finding."""
    store = DictStore()
    task_input = {"q": "x"}
    req, task_id = signed_task(MemoryQuestion, task_input)
    events = empty_search("x")
    doc = trace_doc(MemoryQuestion, task_id, USER.address, task_input, events, "unknown")
    if where == "input":
        doc["input"] = {"q": 2**60}
    else:
        events.append(
            {
                "kind": "tool", "name": "bank.transfer", "args": {"amount": 2**60}, "deterministic": False,
                "result": None, "error": None, "confirmation": "0x" + "00" * 65,
            }
        )  # fmt: skip
    verdict = await verify(store, req, task_id, doc)
    assert verdict.unverifiable is None and not verdict.ok
    if where == "input":
        [bad] = [f for f in verdict.findings if "input hash" in f.message]
        assert bad.check.value == "trace" and "no canonical form" in str(bad.claimed)
    else:
        [bad] = [f for f in verdict.findings if f.check.value == "trace.malformed"]
        assert "a confirmed call of bank.transfer" in bad.message


async def test_a_committed_trace_over_the_protocol_cap_is_the_nodes_fault() -> None:
    """A trace over MAX_TRACE_BYTES can never be posted in an availability answer (EIP-7825), so a
    node that commits one could not answer for it (the second contract review's B7). An honest
    kernel does not save one (the task fails without a receipt); a committed one is now a
    trace.malformed finding, whatever its content. Control: the same task with a small input is ok."""
    from supernet.sdk.formats.trace import MAX_TRACE_BYTES

    for pad, ok in ((64, True), (MAX_TRACE_BYTES, False)):
        store = DictStore()
        task_input = {"q": "x", "pad": "p" * pad}
        req, task_id = signed_task(MemoryQuestion, task_input)
        doc = trace_doc(MemoryQuestion, task_id, USER.address, task_input, empty_search("x"), "unknown")
        verdict = await verify(store, req, task_id, doc)
        assert verdict.unverifiable is None and verdict.ok is ok, verdict.findings
        if not ok:
            [bad] = verdict.findings
            assert bad.check.value == "trace.malformed" and "over the protocol's" in bad.message


async def test_an_exception_checking_one_receipt_never_escapes_the_batch(monkeypatch: Any) -> None:
    """The per-receipt barrier: whatever raises while checking one receipt (a case no check
    foresaw, a bug here) makes that receipt unverifiable, logged, and the others still get their
    verdicts; `verify_many` never raises (a raise would stall the service's step forever)."""
    import supernet.validator.verifier as verifier_mod

    store = DictStore()
    task_input = {"q": "x"}
    req, task_id = signed_task(MemoryQuestion, task_input)
    events = empty_search("x")
    doc = trace_doc(MemoryQuestion, task_id, USER.address, task_input, events, "unknown")
    assert (await verify(store, req, task_id, doc)).ok  # control
    calls = []
    real = verifier_mod.check_trace

    def boom(trace: Any, entry: Any) -> Any:
        calls.append(1)
        raise RuntimeError("a bug")

    monkeypatch.setattr(verifier_mod, "check_trace", boom)
    verdict = await verify(store, req, task_id, doc)
    assert calls and verdict.findings == () and verdict.unverifiable is not None
    assert "RuntimeError: a bug" in verdict.unverifiable
    monkeypatch.setattr(verifier_mod, "check_trace", real)

    async def tools_boom(*args: Any) -> Any:
        raise RuntimeError("tools broke")

    monkeypatch.setattr(verifier_mod, "check_tools", tools_boom)
    late = await verify(store, req, task_id, doc)
    assert late.findings == () and "RuntimeError: tools broke" in str(late.unverifiable)


async def test_renamed_agent_id_is_caught() -> None:
    """The trace's ``agent.id`` was the node's word (only ``code_hash`` was signed). Renaming it made
    the replay's lookup by id fail, i.e. *unverifiable*, so a fabricated answer escaped every
    check. The replay now looks the agent up by the code hash alone: the renamed id is a TRACE
    finding, and the replay still runs (the fabricated answer is a REPLAY finding). The id is now
    also part of the signed profile (`AgentProfile`), so the rename is a profile mismatch too."""
    store = DictStore()
    task_input = {"q": "What is the launch code?"}
    req, task_id = signed_task(MemoryQuestion, task_input)
    events = empty_search(task_input["q"])
    doc = trace_doc(MemoryQuestion, task_id, USER.address, task_input, events, "The launch code is 0000.")
    control = await verify(store, req, task_id, doc)  # under its real id: the made-up answer is a finding
    assert not control.ok and any(f.check.value == "replay" for f in control.findings)
    doc["agent"] = {**doc["agent"], "id": "memq-v2"}
    verdict = await verify(store, req, task_id, doc)
    assert verdict.unverifiable is None and not verdict.ok
    # the test agents share one source file, so one code hash: the id must be one of theirs
    assert [(f.check.value, f.message, f.expected, f.claimed) for f in verdict.findings] == [
        ("trace", "trace agent profile hash does not match the receipt / signed request", doc_profile(
            MemoryQuestion), AgentProfile.of_trace(Trace.from_dag(doc)).hash()),
        (
            "trace",
            "trace agent id is not the id of an agent with the signed code hash",
            ["memq", "payer"],
            "memq-v2",
        ),
    ]  # fmt: skip
    # a signed profile whose code no agent here has stays unverifiable (the validator cannot know
    # that code), as long as the trace is of the signed profile
    other = "0x" + "ee" * 32
    doc2 = {**doc, "agent": {"id": "memq", "code_hash": other}}
    req2 = dataclasses.replace(
        req, agent_hash=bytes.fromhex(AgentProfile.of_trace(Trace.from_dag(doc2)).hash()[2:])
    )
    task_id2 = "0x" + hash_task_request(req2, DOMAIN).hex()
    doc2 = {**doc2, "task_id": task_id2, "seed": task_seed(task_id2)}
    unknown = await verify(store, req2, task_id2, doc2)
    assert unknown.findings == () and f"no agent with code hash {other}" in str(unknown.unverifiable)


class Delegator(Agent):
    """Hands the question to an installed (packaged, non-built-in) child agent."""

    agent_id = "delegator"

    calls_agents = ("memq",)
    description = "Delegates to memq."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        return await ctx.agents.call("memq", input)


class NobodyDelegator(Agent):
    """Hands the question to an agent no validator here has installed."""

    agent_id = "nobody-delegator"

    calls_agents = ("nobody",)
    description = "Delegates to nobody."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        return await ctx.agents.call("nobody", input)


async def test_unknown_child_code_hash_of_an_installed_agent_is_caught() -> None:
    """A child agent's code hash was the node's word (the user signed only the top agent's). Writing
    a hash no validator has into the ``agent.call`` event made the replay *unverifiable*. The
    signed profile now lists every agent the task's agent may call with its code hash, so another
    hash in the call is a REPLAY divergence. A profile listing a child installed here under another
    code hash is unverifiable here, as the top agent in that case (the user signed that version, an
    honest node ran it; tests/unit/test_review_agent_provenance.py finding 2), and so is a child
    whose id is not installed here at all; a hash no validator replays is kept from being signed
    by the client's coverage rule."""
    store = DictStore()
    task_input = {"q": "What is the launch code?"}

    def entry(agent_id: str, code_hash: str) -> dict[str, Any]:
        return {"id": agent_id, "code_hash": code_hash, "tools": [], "memory": True, "storage": False}

    def delegated(agent_id: str, code_hash: str) -> list[dict[str, Any]]:
        call = {"kind": "agent.call", "agent": {"id": agent_id, "code_hash": code_hash}, "input": task_input,
                "depth": 1, "tools": [], "memory": True, "storage": False}  # fmt: skip
        return [call]

    async def verdict_of(
        parent: type[Agent], table: list[dict[str, Any]], events: list[dict[str, Any]]
    ) -> Any:
        req, task_id = signed_task(parent, task_input, doc_profile(parent, agents=table))
        doc = trace_doc(
            parent, task_id, USER.address, task_input, events, "The launch code is 0000.", agents=table
        )
        return await verify(store, req, task_id, doc, agents=(parent,))

    listed = [entry("memq", MemoryQuestion.code_hash())]
    verdict = await verdict_of(Delegator, listed, delegated("memq", "0x" + "ee" * 32))
    assert verdict.unverifiable is None
    [div] = [f for f in verdict.findings if f.check.value == "replay"]
    assert "ran other code than the signed profile lists" in div.message and div.call == 0
    assert (div.expected, div.claimed) == (MemoryQuestion.code_hash(), "0x" + "ee" * 32)
    # the signed profile lists the installed child under another hash: another version, which
    # this validator has not installed: unverifiable here, not the node's fault
    verdict = await verdict_of(
        Delegator, [entry("memq", "0x" + "ee" * 32)], delegated("memq", "0x" + "ee" * 32)
    )
    assert verdict.findings == ()
    assert "not installed here at the signed code hash" in str(verdict.unverifiable)
    # control: with the installed child's real hash, the same made-up trace is a finding
    control = await verdict_of(Delegator, listed, delegated("memq", MemoryQuestion.code_hash()))
    assert not control.ok and control.unverifiable is None
    # a child the signed profile does not list diverges
    unlisted = await verdict_of(Delegator, [], delegated("memq", MemoryQuestion.code_hash()))
    assert any("which the signed profile does not list" in f.message for f in unlisted.findings)
    # a child whose id is not installed here at all stays unverifiable (no finding to give)
    nobody = [entry("nobody", "0x" + "ee" * 32)]
    unknown = await verdict_of(NobodyDelegator, nobody, delegated("nobody", "0x" + "ee" * 32))
    assert unknown.findings == () and "'nobody'" in str(unknown.unverifiable)
    assert "not installed here" in str(unknown.unverifiable)


def test_subnormal_temperature_is_greedy_and_caught() -> None:
    """A call at a (signed, schema-valid: ``minimum: 0``) temperature like 1e-310 divided the logits
    to ±inf; every selection margin was NaN, and ``m > bound`` is False for NaN, so ANY output
    tokens passed. Temperatures below ``MIN_TEMPERATURE`` are now greedy on node and validator
    alike (and a NaN margin is flagged): made-up tokens are token findings, the honest greedy
    tokens pass."""
    from llm_fixtures import make_tiny_llama
    from supernet.node.llm import LLMEngine
    from supernet.node.llm.scoring import Tolerance
    from supernet.validator.llm_check import check_scores
    from supernet.validator.scoring import ModelScorer
    from supernet.validator.trace_view import LLMCall
    from supernet.validator.verifier import score_call

    model = make_tiny_llama(3)
    weights = LLMEngine.from_model(model, max_batch=1, max_seq_len=128).weights_id
    scorer = ModelScorer(model, None, weights, (0,))
    prompt, chosen = (5, 17, 33, 2, 9), (7, 7, 7, 7, 7, 7, 7, 7)  # whatever the node likes
    probe = LLMCall(0, "m", prompt, chosen, (0.0,) * 8, None, 1e-310, 1.0, 11, 8, (), "length", None)
    honest = score_call(scorer, probe)
    fps = [
        {"index": f.index, "indices": list(f.indices), "values": list(f.values)} for f in honest.fingerprints
    ]
    call = LLMCall(0, "m", prompt, chosen, honest.logprobs, fps, 1e-310, 1.0, 11, 8, (), "length", None)
    rescored = score_call(scorer, call)
    assert all(math.isfinite(m) for m in rescored.margins or ())  # greedy margins: logit gaps
    found = check_scores(call, rescored, Tolerance())
    assert found and {f.check.value for f in found} == {"llm.token"}
    assert all("selection" in f.message for f in found)
    # control: at temperature 1e-3 the same tokens are selection findings
    sane = LLMCall(0, "m", prompt, chosen, honest.logprobs, fps, 1e-3, 1.0, 11, 8, (), "length", None)
    assert any("selection" in f.message for f in check_scores(sane, score_call(scorer, sane), Tolerance()))
    # the node's engine picks greedy tokens at that temperature, and they verify
    import asyncio

    from supernet.node.llm import SamplingParams

    async def generate() -> Any:
        engine = LLMEngine.from_model(make_tiny_llama(3), max_batch=2, max_seq_len=128)  # same weights
        async with engine:
            params = SamplingParams(max_new_tokens=8, temperature=1e-310, seed=11, stop_token_ids=())
            return await engine.submit(prompt, params).result()

    res = asyncio.run(generate())
    greedy = score_call(
        scorer,
        LLMCall(0, "m", prompt, res.output_ids, res.logprobs, None, 0.0, 1.0, 11, 8, (), "length", None),
    )
    assert res.output_ids == tuple(top[0][0] for top in greedy.top_tokens)
    own = [{"index": f.index, "indices": list(f.indices), "values": list(f.values)} for f in res.fingerprints]
    node_call = LLMCall(
        0, "m", prompt, res.output_ids, res.logprobs, own, 1e-310, 1.0, 11, 8, (), "length", None
    )
    assert check_scores(node_call, score_call(scorer, node_call), Tolerance()) == []


def test_nan_selection_margin_is_flagged() -> None:
    """`compare_generation` flags a NaN margin (``not m <= bound``): NaN is no rule, never a pass."""
    from supernet.node.llm.scoring import Tolerance, compare_generation
    from supernet.node.llm.types import GenerationResult, ScoreResult

    claimed = GenerationResult(
        prompt_ids=(1,), output_ids=(2,), finish_reason="stop", logprobs=(-1.0,), fingerprints=()
    )
    scored = ScoreResult(
        logprobs=(-1.0,), top_tokens=(((2, -1.0),),), fingerprints=(), margins=(float("nan"),)
    )
    verdict = compare_generation(claimed, scored, Tolerance(), sampled=True)
    assert [m.kind for m in verdict.mismatches] == ["selection"] and not verdict.ok
    ok = compare_generation(
        claimed, ScoreResult((-1.0,), (((2, -1.0),),), (), (0.0,)), Tolerance(), sampled=True
    )
    assert ok.ok


# -- bfloat16 compute sold under an exact id, against a bf16 screen + exact arbiter ------------------
#
# A stand-in model whose "true" (float32) scores are a fixed function of the call; a node computing
# in bfloat16 claims them off by BF16_DRIFT: inside the screen's bf16 bounds (0.75 nat), far outside
# the exact pair's (0.002). The screen re-scores with its own bf16 rounding (SCREEN_DRIFT), the
# arbiter exactly. So the screen accepts honest and bf16-computed calls alike; the arbiter tells them
# apart: what the real models do (tests/integration/test_validator_attacks_e2e.py).

BF16_DRIFT = 0.02
SCREEN_DRIFT = 0.01


def true_logprobs(prompt: tuple[int, ...], output: tuple[int, ...]) -> tuple[float, ...]:
    return tuple(-0.1 * (j + 1) - 0.001 * prompt[0] for j in range(len(output)))


class DriftScorer(StandInScorer):
    """Teacher-forced scores of the stand-in model, off by ``drift``; counts its passes and calls."""

    def __init__(self, dtype: str, drift: float) -> None:
        self.dtype = dtype
        self.drift = drift
        self.passes = 0
        self.seen: list[int] = []  # prompt[0] of every call scored (the call's id in these tests)

    def score_many(self, requests: Any) -> list[Any]:
        from supernet.node.llm.types import ScoreResult

        self.passes += 1
        out = []
        for r in requests:
            self.seen.append(r.prompt_ids[0])
            lps = tuple(lp + self.drift for lp in true_logprobs(r.prompt_ids, r.output_ids))
            top = tuple(((t, lp),) for t, lp in zip(r.output_ids, lps, strict=True))  # each token the argmax
            margins = None if r.params is None else tuple(0.0 for _ in r.output_ids)  # each token the draw
            out.append(ScoreResult(logprobs=lps, top_tokens=top, fingerprints=(), margins=margins))
        return out


def llm_calls(
    n: int,
    bf16: set[int],
    first_id: int = 1,
    off: dict[int, float] | None = None,
    greedy: frozenset[int] = frozenset(),
) -> tuple[Any, ...]:
    """``n`` calls of one receipt, sampled at temperature 1 except those in ``greedy`` (call ``i``
    has prompt id ``first_id + i``); those in ``bf16`` claim bfloat16-computed logprobs, those in
    ``off`` are off by that much."""
    from supernet.validator.trace_view import LLMCall

    out = []
    for i in range(n):
        prompt, output = (first_id + i, 7, 8), (11, 12, 13, 14)
        shift = (BF16_DRIFT if i in bf16 else 0.0) + (off or {}).get(i, 0.0)
        lps = tuple(lp + shift for lp in true_logprobs(prompt, output))
        temperature = 0.0 if i in greedy else 1.0
        out.append(
            LLMCall(i, MODEL_ID, prompt, output, lps, None, temperature, 1.0, 0, 8, None, "length", None)
        )
    return tuple(out)


def staged(
    calls: tuple[Any, ...], screen: Any, arbiter: Any, node_dtype: str = "float32", index: int = 0
) -> Any:
    """A receipt past its model-free checks, as `Verifier._stage` leaves it for a bf16 screen."""
    import types

    from supernet.node.llm.scoring import Tolerance
    from supernet.validator.verifier import _Staged

    return _Staged(
        types.SimpleNamespace(index=index),  # the head: only its index is read here
        None,  # the trace: read when concluding, not when judging
        (),
        screen,
        calls,
        Tolerance.for_pair(node_dtype, "float32"),
        Tolerance.screening(node_dtype, "bfloat16"),
        arbiter,
        sampled=node_dtype != "bfloat16",
    )


def screened_verifier(**extra: Any) -> Verifier:
    """A verifier with a screen whose arbiter draws ``arbiter_sample`` calls (default 1): the
    draw an operator may opt into (`test_by_default_every_call_of_an_exact_format_node_is_decided_exactly`
    shows the default)."""
    store = DictStore()
    extra = {"arbiter_sample_fraction": 0.0, **extra}
    return Verifier(store, StandInScorer(), RegistryRunner(store), DOMAIN, "0xv", agents=registry(), **extra)


def flagged(judgement: Any) -> list[int]:
    """Calls with a finding."""
    return sorted(c for c, found in judgement.findings.items() if found)


async def test_bf16_compute_sold_as_float32_is_caught_by_the_arbiter_sample() -> None:
    """Regression (was ``test_known_limit_*``): every call of the receipt is computed in bf16 and
    claimed as float32. The screen accepts all of them; the arbiter's random draw (1 call) flags the
    drawn one with an `llm.model` finding. Control: without the draw (the old rule: only doubted
    calls go to the arbiter) it passes; the honest receipt passes with the draw too."""
    screen, arbiter = DriftScorer("bfloat16", SCREEN_DRIFT), DriftScorer("float32", 0.0)
    v = screened_verifier(arbiter=arbiter)
    cheat = staged(llm_calls(4, bf16={0, 1, 2, 3}), screen, arbiter)
    honest = staged(llm_calls(4, bf16=set(), first_id=10), screen, arbiter, index=1)
    judged_cheat, judged_honest = await v._judge([cheat, honest])
    assert len(flagged(judged_cheat)) == 1 and judged_cheat.rechecked == 1
    [finding] = judged_cheat.findings[flagged(judged_cheat)[0]][:1]
    assert finding.check.value == "llm.model", finding
    assert flagged(judged_honest) == [] and judged_honest.rechecked == 1
    assert arbiter.passes == 1  # both receipts' draws in one arbiter pass

    old_rule = dataclasses.replace(cheat, sampled=False)
    [judged] = await v._judge([old_rule])
    assert flagged(judged) == [] and judged.rechecked == 0  # what the screen alone lets through


async def test_a_bf16_node_is_not_sampled() -> None:
    """A bfloat16 node is decided by the bf16 pair's bounds whoever scores it: the screen's verdict
    stands (no draw, no arbiter pass)."""
    screen, arbiter = DriftScorer("bfloat16", SCREEN_DRIFT), DriftScorer("float32", 0.0)
    v = screened_verifier(arbiter=arbiter)
    [judged] = await v._judge([staged(llm_calls(4, bf16={0, 1, 2, 3}), screen, arbiter, "bfloat16")])
    assert flagged(judged) == [] and judged.rechecked == 0 and arbiter.passes == 0


async def test_doubted_and_drawn_calls_share_one_arbiter_pass() -> None:
    """A call the screen doubts (off by 1 nat) goes to the arbiter as before; the draw adds one of
    the accepted calls on top, in the same pass."""
    screen, arbiter = DriftScorer("bfloat16", SCREEN_DRIFT), DriftScorer("float32", 0.0)
    v = screened_verifier(arbiter=arbiter)
    receipts = [
        staged(llm_calls(3, bf16=set(), first_id=10 * k, off={0: 1.0}), screen, arbiter, index=k)
        for k in range(1, 4)
    ]
    judged = await v._judge(receipts)
    assert arbiter.passes == 1 and len(arbiter.seen) == 3 * 2
    for j in judged:
        assert flagged(j) == [0] and j.rechecked == 2


async def test_the_sample_size_is_configurable() -> None:
    screen, arbiter = DriftScorer("bfloat16", SCREEN_DRIFT), DriftScorer("float32", 0.0)
    for extra, expected in (
        ({}, 1),
        ({"arbiter_sample": 3}, 3),
        ({"arbiter_sample_fraction": 0.5}, 5),
        ({"arbiter_sample": 20}, 10),
    ):
        v = screened_verifier(arbiter=arbiter, **extra)
        [judged] = await v._judge([staged(llm_calls(10, bf16=set()), screen, arbiter)])
        assert judged.rechecked == expected and flagged(judged) == [], extra
    for bad in ({"arbiter_sample": 0}, {"arbiter_sample_fraction": 1.5}):
        with pytest.raises(ValueError):
            screened_verifier(arbiter=arbiter, **bad)
    from supernet.validator.config import ModelSettings

    assert ModelSettings().arbiter_sample == 1 and ModelSettings().arbiter_sample_fraction == 1.0


async def test_by_default_every_call_of_an_exact_format_node_is_decided_exactly() -> None:
    """The screen's sampled bound (`SCREEN_SAMPLE_MARGIN`, 0.05 of CDF mass) is a window: a node
    knowing the draw of a sampled token can pick any token whose interval lies within it, and with
    one call of ``n`` drawn for the arbiter it escaped with probability ``(n - 1) / n`` (review:
    tests/unit/test_review_cheating_node.py). By default (``arbiter_sample_fraction`` = 1) every
    call of a float32 or float16-weights node skips the screen and is decided by the arbiter under
    its own tight pair (2e-4 of CDF mass): a cheat in any one of ten calls is caught every time."""
    screen, arbiter = DriftScorer("bfloat16", SCREEN_DRIFT), DriftScorer("float32", 0.0)
    store = DictStore()
    v = Verifier(
        store, StandInScorer(), RegistryRunner(store), DOMAIN, "0xv", agents=registry(), arbiter=arbiter
    )
    batch = [
        staged(llm_calls(10, bf16={k % 10}, first_id=20 * k), screen, arbiter, index=k) for k in range(1, 11)
    ]
    judged = await v._judge(batch)
    assert all(
        not isinstance(j, str) and flagged(j) == [k % 10] for k, j in zip(range(1, 11), judged, strict=True)
    )
    assert all(not isinstance(j, str) and j.rechecked == 10 for j in judged)
    assert screen.seen == [] and arbiter.passes == 1  # the screen scores nothing for such a node


async def test_greedy_calls_of_another_format_go_to_the_arbiter_alone() -> None:
    """`Verifier._route`: a float32 node's greedy calls are scored by the arbiter only (the screen's
    rounding hides a swapped argmax in any near-tie, so its verdict on them would be thrown away);
    its sampled calls are screened and one of them drawn. A node computing its greedy calls in bf16
    is caught on every receipt, whatever the draw; a bf16 node's greedy calls stay on the screen."""
    screen, arbiter = DriftScorer("bfloat16", SCREEN_DRIFT), DriftScorer("float32", 0.0)
    v = screened_verifier(arbiter=arbiter)
    greedy = frozenset({0, 1})
    batch = [
        staged(llm_calls(5, bf16={0, 1}, first_id=10 * k, greedy=greedy), screen, arbiter, index=k)
        for k in range(1, 41)
    ]
    judged = await v._judge(batch)
    assert all(not isinstance(j, str) and flagged(j) == [0, 1] and j.rechecked == 3 for j in judged)
    greedy_ids = {10 * k + i for k in range(1, 41) for i in (0, 1)}
    assert not greedy_ids & set(screen.seen) and greedy_ids <= set(arbiter.seen)
    assert len(screen.seen) == 40 * 3  # the sampled calls only
    assert screen.passes == arbiter.passes == 1

    bf16_node = staged(llm_calls(5, bf16=set(), greedy=greedy), screen, screen, "bfloat16")
    assert v._route(bf16_node, False) == ([], list(bf16_node.scorable))


async def test_a_receipt_whose_sampled_calls_the_draw_takes_whole_skips_the_screen() -> None:
    """One greedy and one sampled call (the probe agent of `make bench-verify`, and most agents'
    shape): the default draw of 1 takes the one sampled call anyway, so the screen scores nothing
    and the arbiter decides both, in one pass. A bf16 cheat on either call is caught every time."""
    screen, arbiter = DriftScorer("bfloat16", SCREEN_DRIFT), DriftScorer("float32", 0.0)
    v = screened_verifier(arbiter=arbiter)
    batch = [
        staged(llm_calls(2, bf16={k % 2}, first_id=10 * k, greedy=frozenset({0})), screen, arbiter, index=k)
        for k in range(1, 21)
    ]
    judged = await v._judge(batch)
    assert all(not isinstance(j, str) and flagged(j) == [k % 2] for k, j in enumerate(judged, start=1))
    assert all(not isinstance(j, str) and j.rechecked == 2 for j in judged)
    assert screen.passes == 0 and screen.seen == [] and arbiter.passes == 1
    # with a third (sampled) call the draw no longer takes them all: the screen sees the sampled two
    wider = staged(llm_calls(3, bf16=set(), greedy=frozenset({0})), screen, arbiter)
    direct, screened = v._route(wider, False)
    assert [c.call for c in direct] == [0] and [c.call for c in screened] == [1, 2]
    assert v._route(wider, True) == (list(wider.scorable), [])  # a recheck: the arbiter scores all


async def test_a_partial_bf16_cheat_is_caught_with_probability_m_over_n() -> None:
    """The node computes the first of 4 calls in float32 and the other 3 in bf16 (m = 3 of n = 4),
    or only one call in bf16 (m = 1): with one drawn call a receipt is caught with probability m/n
    (3/4, 1/4). Over 400 such receipts the caught share is within 5 standard deviations of that
    (a false failure has probability < 1e-6); an honest receipt is never flagged."""
    screen, arbiter = DriftScorer("bfloat16", SCREEN_DRIFT), DriftScorer("float32", 0.0)
    v = screened_verifier(arbiter=arbiter)
    n, receipts = 400, 4
    for cheated, p in (({1, 2, 3}, 0.75), ({2}, 0.25), (set(), 0.0)):
        batch = [
            staged(llm_calls(receipts, cheated, first_id=10 * k), screen, arbiter, index=k) for k in range(n)
        ]
        judged = await v._judge(batch)
        caught = sum(bool(flagged(j)) for j in judged)
        assert all(j.rechecked == 1 for j in judged)
        assert all(set(flagged(j)) <= cheated for j in judged)  # only cheated calls are ever flagged
        sd = (n * p * (1 - p)) ** 0.5
        assert abs(caught - n * p) <= 5 * sd, (cheated, caught)
        if p:
            assert 0 < caught < n  # neither never nor always: the draw, not the trace, decides


async def test_the_draw_is_private_randomness_not_a_function_of_the_trace() -> None:
    """The same receipt judged again, or by another validator with the same configuration, draws
    another call: a node that knows the configuration cannot tell which call to compute honestly.
    Over 400 draws of one 4-call receipt every call is drawn, each about a quarter of the time; the
    default source is the OS's CSPRNG."""
    import secrets

    screen, arbiter = DriftScorer("bfloat16", SCREEN_DRIFT), DriftScorer("float32", 0.0)
    receipt = staged(llm_calls(4, bf16=set()), screen, arbiter)
    for _ in range(400):
        await screened_verifier(arbiter=arbiter)._judge([receipt])  # a fresh validator each time
    counts = {c: arbiter.seen.count(c) for c in (1, 2, 3, 4)}
    assert len(arbiter.seen) == 400 and all(60 <= k <= 140 for k in counts.values()), counts
    assert isinstance(screened_verifier(arbiter=arbiter)._rng, secrets.SystemRandom)


async def test_a_recheck_of_a_found_fault_rescores_every_accepted_call() -> None:
    """``recheck_all`` (a vote on a challenge, a challenge re-sent): the arbiter re-scores every call
    the screen accepted, so a one-call-in-four cheat is caught on every receipt, not a quarter."""
    screen, arbiter = DriftScorer("bfloat16", SCREEN_DRIFT), DriftScorer("float32", 0.0)
    v = screened_verifier(arbiter=arbiter)
    batch = [staged(llm_calls(4, {2}, first_id=10 * k), screen, arbiter, index=k) for k in range(50)]
    judged = await v._judge(batch, recheck_all=True)
    assert all(flagged(j) == [2] and j.rechecked == 4 for j in judged)
    assert arbiter.passes == 1


async def test_a_vote_rechecks_every_call_of_the_challenged_receipt() -> None:
    """A voter's own random draw would miss a partial cheat the challenger's draw hit (and vote a
    real fault down): `Disputes` votes on a verdict with ``recheck_all``."""
    import types

    from supernet.validator.challenger import Disputes
    from supernet.validator.evidence import Check, Finding, Verdict

    asked: list[dict[str, Any]] = []
    votes: list[bytes] = []

    class Verifier_:
        async def verify(self, *args: Any, **kwargs: Any) -> Verdict:
            asked.append(kwargs)
            return Verdict(1, 0, b"\x01" * 32, findings=(Finding(Check.LLM_MODEL, "bf16"),), validator="0xv")

    class Store:
        async def put_dag(self, doc: Any, pin: bool = False) -> str:
            return "bafy-evidence"

    chain = types.SimpleNamespace(
        binding=types.SimpleNamespace(
            get_vote=lambda cid, who: types.SimpleNamespace(weight=0, fraud=False, revealed=False)
        ),
        commit_vote=lambda cid, commitment: votes.append(commitment),
        params=lambda: types.SimpleNamespace(reveal_window=10),
        timestamp=lambda: 0,
    )
    sealed: list[bool] = []
    db = types.SimpleNamespace(
        batch=lambda batch_id: types.SimpleNamespace(batch_id=batch_id, node="0x" + "22" * 20),
        seal_vote=lambda cid, fraud, salt, evidence: sealed.append(fraud),
        mark_committed=lambda *args: None,
    )
    disputes = Disputes(chain, db, Verifier_(), Store(), "0x" + "44" * 20)

    async def manifest(batch: Any) -> Any:
        return types.SimpleNamespace(index_of=lambda leaf: 0, readable=lambda i: True)

    disputes.manifest = manifest
    row = types.SimpleNamespace(
        challenge_id=7, batch_id=1, leaf=b"\x01" * 32, vote_deadline=2**40, salt=None, my_vote=None
    )
    await disputes._vote_one(row)
    assert asked == [{"recheck_all": True}] and sealed == [True] and len(votes) == 1
