# Adversarial review (2026-12-04): each test_known_limit_* passes while its hole exists and states the
# fix in its docstring; fixing the hole turns it into a test_defence_* with the assertion reversed.
"""Adversarial review of the user's client checks (`supernet.sdk.client.verify`, `Client.verify`,
`supernet.sdk.client.freshness`, `supernet.sdk.client.streaming`).

Every ``test_bug_*`` here PASSES while the hole it describes exists: it asserts that the client
accepts (or keeps) what a dishonest node forged. ``test_defence_*`` tests assert an attack that is
refused. Receipts, traces, signatures and promises are built with the real SDK primitives; the
`Client` is real, with only its network edges (node HTTP answers, content store, chain reads)
replaced by stand-ins.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from supernet.sdk.chain.eip712 import Domain, ReceiptPromise, sign_receipt_promise
from supernet.sdk.chain.payments import compact_signature
from supernet.sdk.chain.receipts import Receipt, input_hash, output_hash, sign_receipt, trace_hash
from supernet.sdk.client.client import Client
from supernet.sdk.client.freshness import MAX_WALK, SeenRoot, check_latest
from supernet.sdk.client.ladder import sign_task
from supernet.sdk.client.state import TaskRecord
from supernet.sdk.client.streaming import stream_problem
from supernet.sdk.client.verify import VerificationReport, check_receipt
from supernet.sdk.formats.trace import MemorySearchEvent, Trace, example_dag
from supernet.sdk.node_api import ReceiptPublic
from supernet.sdk.store.cids import compute_cid, encode_dag

DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "22" * 20)
MODEL = "0x" + "07" * 32
FEE = 10**12
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


# ---------------------------------------------------------------------------------------- helpers


def _trace(
    task_id: str, user: str, *, task_input: Any = "hi", output: str = "hello", **over: Any
) -> dict[str, Any]:
    """A well-formed ``supernet/trace/v1`` document of this task (fields overridable)."""
    doc = example_dag()
    doc.update(task_id=task_id, user=user, input=task_input, output=output, model_id=MODEL, fee=FEE)
    doc.update(over)
    return doc


def _receipt_doc(
    node: LocalAccount,
    *,
    task_id: str,
    user: str,
    task_input: Any = "hi",
    output: str = "hello",
    trace_doc: dict[str, Any],
    commit_by: int | None = 2000,
    committed: bool = True,
) -> tuple[dict[str, Any], Receipt]:
    """A ``GET /v1/tasks/{id}/receipt`` document a node signs: committed (when ``committed``) as the
    only leaf of its batch (root == leaf, empty proof), with its signed promise."""
    cid = compute_cid(encode_dag(trace_doc), "dag-cbor")
    receipt = Receipt(
        request_hash=bytes.fromhex(task_id[2:]),
        user=user,
        model_id=bytes.fromhex(MODEL[2:]),
        input_hash=input_hash(task_input),
        output_hash=output_hash(output),
        trace_hash=trace_hash(cid),
        fee=FEE,
    )
    leaf = receipt.leaf()
    doc: dict[str, Any] = {
        "taskId": task_id,
        "node": node.address,
        "receipt": receipt.to_json(),
        "leaf": "0x" + leaf.hex(),
        "signature": "0x" + sign_receipt(receipt, node).hex(),
        "traceCid": cid,
        "batch": None,
    }
    if committed:
        doc["batch"] = {
            "localId": 1,
            "status": "committed",
            "chainBatchId": 7,
            "root": "0x" + leaf.hex(),
            "index": 0,
            "manifestCid": cid,
            "txHash": None,
            "proof": [],
        }
    if commit_by is not None:
        doc["promise"] = _promise(node, receipt, commit_by)
    return doc, receipt


def _promise(node: LocalAccount, receipt: Receipt, commit_by: int) -> dict[str, Any]:
    p = ReceiptPromise(receipt.request_hash, receipt.leaf(), commit_by)
    return {"commitBy": commit_by, "signature": "0x" + sign_receipt_promise(p, DOMAIN, node).hex()}


def _names(rep: VerificationReport) -> dict[str, bool]:
    return {c.name: c.ok for c in rep.checks}


def _client(tmp_path: Path, user: LocalAccount, node: LocalAccount, leaf: bytes | None, now: int) -> Client:
    """A real `Client` whose chain reads are stand-ins: batch 7 is ``node``'s one-leaf batch of
    ``leaf``; the chain's time is ``now``."""
    contracts = SimpleNamespace(
        account=user,
        domain=DOMAIN,
        task_manager=SimpleNamespace(
            batch=lambda _bid: SimpleNamespace(node=node.address, root=leaf or b"", count=1 if leaf else 0)
        ),
        w3=SimpleNamespace(eth=SimpleNamespace(get_block=lambda _b: {"timestamp": now})),
    )
    return Client(contracts, state_dir=tmp_path)  # type: ignore[arg-type]


def _serve(client: Client, node: LocalAccount, doc: dict[str, Any], trace_doc: Any) -> None:
    """The node's answers: ``/v1/node`` (its address, no store), its receipt, and the trace block
    the (re-hashing) store client returns for the receipt's trace CID."""

    async def node_info(_url: str) -> Any:
        return SimpleNamespace(address=node.address, storeUrl="")

    async def receipt(
        _task_id: str, _url: str | None = None, *, wait_committed: float = 0.0
    ) -> ReceiptPublic:
        return ReceiptPublic.model_validate(doc)

    async def trace_doc_of(_url: str, cid: str) -> Any:
        assert cid == compute_cid(encode_dag(trace_doc), "dag-cbor")  # what the store's re-hash enforces
        return trace_doc

    client.node_info = node_info  # type: ignore[method-assign]
    client.receipt = receipt  # type: ignore[method-assign]
    client._trace_doc = trace_doc_of  # type: ignore[method-assign]


def _task_id() -> str:
    return "0x" + hashlib.sha256(b"the user's request").hexdigest()


# ---------------------------------------------------------------------------------------- bugs


def test_known_limit_trace_input_user_model_fee_not_checked_against_receipt() -> None:
    """Attack: the node runs the agent on another input (and writes another user, model and fee
    into the trace) but signs a receipt with the right ``inputHash``, ``modelId`` and fee, and a
    trace whose ``task_id`` and ``output`` match. `check_receipt` compares only the trace's task id
    and output, so the user's verification is fully green although the committed trace shows the
    answer was computed for a different prompt on a different model.

    Why it matters: "results you don't have to trust" -- the user holds the input, model and fee it
    signed, so these are checks it can make on its own (validators make them:
    `supernet.validator.consistency.check_trace`), but it reports ok and would only learn of the
    fraud if a validator happens to sample this task.

    Fix: in `supernet.sdk.client.verify.check_receipt`, when ``trace_doc`` is given also check
    ``input_hash(trace.input) == receipt.input_hash``, ``trace.model_id == receipt.model_id`` (and
    every LLM event's model), ``trace.user == receipt.user``, ``trace.fee == receipt.fee`` (and the
    trace's ``request`` when present), as the validator does."""
    node, user = Account.create(), Account.create()
    task_id = _task_id()
    forged = _trace(
        task_id,
        Account.create().address,  # another user
        task_input="a cheaper, different prompt",
        model_id="0x" + "99" * 32,  # another model
        fee=1,  # another fee
    )
    doc, receipt = _receipt_doc(node, task_id=task_id, user=user.address, trace_doc=forged)
    rep = check_receipt(
        doc,
        task_id=task_id,
        user=user.address,
        node=node.address,
        task_input="hi",
        output="hello",
        onchain_batch=lambda _: (node.address, receipt.leaf(), 1),
        trace_loaded=True,
        trace_doc=forged,
        model_id=MODEL,
        max_fee=FEE,
        fee=FEE,
        domain=DOMAIN,
        now=1000,
    )
    assert rep.ok, rep.failed()  # the bad behaviour: a trace of another input/user/model verifies clean


def test_known_limit_malleable_promise_signature_accepted_but_unclaimable_on_chain() -> None:
    """Attack: the node signs its `ReceiptPromise` and hands it out in high-s form (s -> n - s,
    v flipped; the same key recovers) or with v = 0/1. The client's check (eth-account recovery)
    accepts both, so "commit promise" is ok and the receipt is reported *pending*. The node then
    never commits. When the user claims the omission, `OmissionManager._checkPromise` uses
    OpenZeppelin `ECDSA.tryRecover`, which refuses a high-s signature (InvalidSignatureS) and a v
    other than 27/28 (ecrecover -> 0): the claim reverts with ``NotTheNodesPromise`` and the node
    is never slashed. The SDK itself knows the contract refuses that form (`compact_signature`).

    Why it matters: the promise is the only thing that makes "not committed yet" safe to wait on;
    a node can make every promise unenforceable at zero cost while the client shows it as valid.

    Fix: in `check_receipt` (the "commit promise" check, and likewise for the receipt signature),
    refuse a signature whose s > n/2 or whose v is not 27/28 (or normalise it to canonical form
    before storing it in `Client.verify`, so `claim_omission` sends what the contract accepts)."""
    node, user = Account.create(), Account.create()
    task_id = _task_id()
    trace = _trace(task_id, user.address)
    doc, _receipt = _receipt_doc(node, task_id=task_id, user=user.address, trace_doc=trace, committed=False)
    good = bytes.fromhex(doc["promise"]["signature"][2:])
    r, s, v = good[:32], int.from_bytes(good[32:64], "big"), good[64]
    high_s = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])  # 27 <-> 28
    low_v = good[:64] + bytes([v - 27])
    for sig in (high_s, low_v):
        doc["promise"]["signature"] = "0x" + sig.hex()
        rep = check_receipt(
            doc,
            task_id=task_id,
            user=user.address,
            node=node.address,
            task_input="hi",
            output="hello",
            onchain_batch=lambda _: (node.address, b"", 0),
            trace_loaded=True,
            trace_doc=trace,
            domain=DOMAIN,
            now=1000,
        )
        assert _names(rep)["commit promise"] is True and rep.pending  # accepted as a valid promise
    # ... yet not a signature the chain accepts (OpenZeppelin ECDSA: s must be in the lower half)
    assert int.from_bytes(high_s[32:64], "big") > SECP256K1_N // 2
    with pytest.raises(ValueError, match="malleable"):
        compact_signature(high_s)
    assert low_v[64] in (0, 1)  # ecrecover returns address(0) for v not in {27, 28}


def _served_uncommitted_task(tmp_path: Path) -> tuple[LocalAccount, str, dict[str, Any], Any, Client]:
    """A task the client sent and got ``"hello"`` for, whose node serves a receipt not committed yet
    with a promise to commit by 2000 (the chain's time 1000): node, task id, receipt document,
    receipt, client."""
    node, user = Account.create(), Account.create()
    task_id = _task_id()
    trace = _trace(task_id, user.address)
    doc, receipt = _receipt_doc(node, task_id=task_id, user=user.address, trace_doc=trace, committed=False)
    client = _client(tmp_path, user, node, None, now=1000)
    client.state.tasks[task_id] = TaskRecord(
        node.address, "http://node", "hi", MODEL, FEE, output="hello", status="done", sent_seq=1, done_seq=2
    )
    _serve(client, node, doc, trace)
    return node, task_id, doc, receipt, client


async def test_known_limit_verify_replaces_a_kept_promise_with_a_later_one(tmp_path: Path) -> None:
    """Attack: the node promises to commit by T=2000, then never commits. When the user verifies
    again after T (as the docs say: "pending ... verify again later"), the node answers with a NEW
    promise for the same receipt, validly signed, with ``commitBy`` far in the future. `Client.verify`
    overwrites the stored promise with whatever the node sent last (even before checking it), and
    `check_receipt` judges only that one: the receipt is "pending" again instead of "commit
    promise kept: claim the omission", and `claim_omission` would now send the late promise, which
    the contract refuses (``PromiseNotDue``). The original, slashable promise is lost.

    Why it matters: a node can postpone its commitment forever and escape omission slashing; the
    user never sees a failure (the CLI exits 3, "pending", every time).

    Fix: in `Client.verify`, keep the earliest valid (signature-checked) promise per task and never
    replace it by a later ``commitBy``; pass the stored promise to `check_receipt` (or check
    ``now >= min(stored, new commitBy)``)."""
    node, task_id, doc, receipt, client = _served_uncommitted_task(tmp_path)
    first = await client.verify(task_id, wait_committed=0)
    assert first.pending and client.state.tasks[task_id].promise["commitBy"] == 2000  # type: ignore[index]

    # after commitBy, still not committed: the node re-promises for much later
    later = 10**10
    doc["promise"] = _promise(node, receipt, later)
    client.contracts.w3.eth.get_block = lambda _b: {"timestamp": 3000}  # type: ignore[attr-defined]
    second = await client.verify(task_id, wait_committed=0)
    await client.aclose()
    assert second.pending, second.failed()  # the bad behaviour: not "commit promise kept" failed
    assert client.state.tasks[task_id].promise["commitBy"] == later  # type: ignore[index]


async def test_known_limit_verify_stores_a_promise_that_failed_its_check(tmp_path: Path) -> None:
    """Attack: after the user stored a valid promise, the node answers a later verify with a
    promise signed by some other key (or with garbage commitBy/signature the check rejects).
    `Client.verify` writes ``doc.promise`` into the state *before* `check_receipt` runs and whatever
    its outcome, so the good promise is replaced by one no contract accepts; `claim_omission`
    then sends the bad one (``NotTheNodesPromise``) and the omission cannot be claimed.

    Why it matters: the user's evidence of the node's obligation can be destroyed by the node.

    Fix: in `Client.verify`, store a promise only after it passed the "commit promise" check, and
    never overwrite a stored valid one (see the previous test)."""
    _node, task_id, doc, receipt, client = _served_uncommitted_task(tmp_path)
    assert (await client.verify(task_id, wait_committed=0)).pending
    good = dict(client.state.tasks[task_id].promise or {})

    doc["promise"] = _promise(Account.create(), receipt, 2000)  # not the node's key
    rep = await client.verify(task_id, wait_committed=0)
    await client.aclose()
    assert _names(rep)["commit promise"] is False  # the check itself catches it ...
    stored = client.state.tasks[task_id].promise or {}
    assert stored["signature"] != good["signature"]  # ... but the good promise was overwritten
    assert stored["signature"] == doc["promise"]["signature"]


async def test_known_limit_verify_skips_the_output_check_when_the_result_came_another_way(
    tmp_path: Path,
) -> None:
    """Attack: the user runs a task with the documented `prepare()` + `send()` API (or its answer
    was lost and the record stayed "sent") and reads the result with `wait()` / `task()`. The
    record's ``output`` is None, so `Client.verify` passes ``output=None`` to `check_receipt`,
    which then skips BOTH the "output hash" and the "trace output" checks. The node can show the
    user any output, commit another output hash, and put a third output in the trace: verify is
    fully green.

    Why it matters: the receipt's output hash is then bound to nothing the user saw; a report
    "ok" says nothing about the answer.

    Fix: in `Client.verify`, when the record has no output, fetch it (``GET /v1/tasks/{id}``) and
    record it, or at least check the receipt's ``outputHash`` against the trace's ``output``
    (`check_receipt` should always compare ``receipt.output_hash`` with ``output_hash(trace.output)``
    when the trace is loaded), and report "output not checked" as a failed check, not a silent skip."""
    node, user = Account.create(), Account.create()
    task_id = _task_id()
    trace = _trace(task_id, user.address, output="what the trace says")
    doc, receipt = _receipt_doc(
        node, task_id=task_id, user=user.address, output="what the receipt commits", trace_doc=trace
    )
    client = _client(tmp_path, user, node, receipt.leaf(), now=1000)
    # what `Client.accepted` records after `send()`: input, model, fee; no output
    client.state.tasks[task_id] = TaskRecord(node.address, "http://node", "hi", MODEL, FEE, sent_seq=1)
    _serve(client, node, doc, trace)
    rep = await client.verify(task_id, wait_committed=0)
    await client.aclose()
    names = _names(rep)
    assert "output hash" not in names and "trace output" not in names
    assert rep.ok, rep.failed()  # the bad behaviour: receipt and trace disagree on the output, verified


async def test_known_limit_verify_of_a_task_not_in_state_accepts_any_node(tmp_path: Path) -> None:
    """Attack: the user verifies a task sent from another device (`Client.verify(task_id,
    node_url=...)`, the documented way). The task id is the EIP-712 digest of a request naming
    node A, but the client takes the node's address from whatever node answers at ``node_url``,
    and the input and output from that node's own trace. Any registered node B that learns the task
    id (it is public in URLs, logs, explorer) signs a receipt for it with B's key, with an
    arbitrary input and output, commits it in its own batch, and the verification is green.

    Why it matters: the user gets a "verified" answer from a node it never asked, with content of
    that node's choosing. Validators would flag it (the request names A), but the user's own check,
    the one the docs promise, passes.

    Fix: in `Client.verify` for a task not in state, require the trace's ``request`` and
    ``request_signature`` (the node has them), check ``hash_task_request(request) == task_id``, the
    signature recovers to this user, ``request.node`` equals the receipt signer / batch node, and
    check inputHash, modelId and maxFee against that request."""
    node_a, node_b, user = Account.create(), Account.create(), Account.create()
    task_id, _ = sign_task(
        user,
        DOMAIN,
        node=node_a.address,  # the user asked node A
        model_id=MODEL,
        agent_hash="0x" + "cd" * 32,
        task_input="what is 2+2?",
        max_fee=FEE,
        nonce=1,
        cumulative=FEE,
    )
    trace = _trace(task_id, user.address, task_input="anything B likes", output="B's answer")
    doc, receipt = _receipt_doc(
        node_b,
        task_id=task_id,
        user=user.address,
        task_input="anything B likes",
        output="B's answer",
        trace_doc=trace,
    )
    client = _client(tmp_path, user, node_b, receipt.leaf(), now=1000)
    _serve(client, node_b, doc, trace)
    rep = await client.verify(task_id, node_url="http://node-b", wait_committed=0)
    await client.aclose()
    assert rep.ok, rep.failed()  # the bad behaviour: node B's answer to a request for node A verifies


async def test_known_limit_freshness_stale_root_with_long_history_is_not_judged_yet_ok() -> None:
    """Attack: the user's namespace has a long history (more than `MAX_WALK` = 256 writes in all).
    The node starts the next task from an OLD root (memory the user wrote since is hidden: a
    rollback) that still has >= 256 ancestors. `descends` walks down from the task's first root
    looking for the root the user saw last; it can never find it (it is newer), runs out of steps
    and returns None, which `check_latest` reports as "not judged" inside a passing
    ``(True, ...)``. The same rollback to a root with fewer ancestors is caught.

    Why it matters: "latest memory" is the check only the user can make (validators accept any
    root the user's tasks wrote); for any long-lived namespace, a node can replay any sufficiently
    old state and the client says ok.

    Fix: in `supernet.sdk.client.freshness.check_latest`, never return ok=True with unjudged
    namespaces (return a distinct not-ok / inconclusive result); better, put a height (write count)
    in root blocks so `descends` stops as soon as it walks below the seen root's height and can
    tell "older" from "too far"."""
    roots = [compute_cid(encode_dag({"root": i}), "dag-cbor") for i in range(600)]
    blocks = {roots[i]: {"prev": roots[i - 1] if i else None} for i in range(600)}

    async def get_dag(cid: str) -> Any:
        return blocks[cid]

    base = Trace.from_dag(example_dag())

    def starting_from(root: str) -> Trace:
        ev = MemorySearchEvent(namespace="notes", query="q", k=1, root=root, hits=(), scores=())
        return dataclasses.replace(base, events=(ev,))

    node = Account.create().address
    seen = {f"{node.lower()}:memory:notes": SeenRoot(roots[599], "0xearlier", 2)}
    ok, detail = await check_latest(dict(seen), node, "0xtask", 3, 4, starting_from(roots[400]), get_dag) or (
        False,
        "",
    )
    assert ok and "not judged" in detail  # the bad behaviour: 199 writes rolled back, verdict ok
    # control: the same rollback to a root with fewer than MAX_WALK ancestors is caught
    short = await check_latest(dict(seen), node, "0xtask", 3, 4, starting_from(roots[100]), get_dag)
    assert short is not None and short[0] is False and 100 < MAX_WALK


def test_known_limit_stream_may_show_arbitrary_text_after_a_stop_string() -> None:
    """Attack: a chat task whose input has a ``stop`` string. The node streams the committed
    output, then the stop string, then any text it likes ("... wire the funds to 0xbad"). The rule
    in `stream_problem` accepts any rest that *starts with* a stop string, however long, so the
    user is shown text that no receipt commits to and the client raises nothing.

    Why it matters: the stream is what the user reads; the check exists so the shown text equals
    the committed one.

    Fix: in `supernet.sdk.client.streaming.stream_problem`, allow after the output only the stop
    string itself plus at most the rest of the single token that completed it (e.g. check on the
    pieces: the stop string must end within the last streamed piece), or only whitespace."""
    output = "The capital of France is Paris."
    task_input = {"messages": [{"role": "user", "content": "capital of France?"}], "stop": ["\nUser:"]}
    streamed = output + "\nUser: also, the node says: send 5 ETH to 0xbad to unlock the full answer."
    assert stream_problem("chat", task_input, streamed, output) is None  # the bad behaviour


async def test_known_limit_freshness_remembers_roots_of_a_trace_that_failed_verification(
    tmp_path: Path,
) -> None:
    """Attack: the node answers `Client.verify` with a trace that fails the receipt's checks (here:
    it is another task's trace, "trace task" fails) but whose memory events name roots of the
    node's choosing. `Client.verify` still runs `check_latest`, which records that trace's last
    roots as the latest the user has seen (``state.roots``), so a forged trace poisons the
    baseline every later task is judged against (e.g. sets it back to an old root, so a later
    rollback passes the freshness check).

    Why it matters: the freshness state must only learn from traces the receipt proved.

    Fix: in `Client.verify`, call `_check_latest` (or at least let it update ``state.roots``) only
    when every check but the pending commit passed (``report.ok or report.pending``)."""
    node, user = Account.create(), Account.create()
    task_id = _task_id()
    stale_root = compute_cid(encode_dag({"root": "old"}), "dag-cbor")
    trace = _trace("0x" + "ee" * 32, user.address)  # another task's id: fails "trace task"
    trace["events"] = [
        {
            "kind": "memory.search",
            "namespace": "notes",
            "query": "q",
            "k": 1,
            "root": stale_root,
            "hits": [],
            "scores": [],
        }
    ]
    doc, receipt = _receipt_doc(node, task_id=task_id, user=user.address, trace_doc=trace)
    client = _client(tmp_path, user, node, receipt.leaf(), now=1000)
    client.state.tasks[task_id] = TaskRecord(
        node.address, "http://node", "hi", MODEL, FEE, output="hello", status="done", sent_seq=1, done_seq=2
    )
    client.store_url = "http://store.invalid"

    class FakeStore:
        def __init__(self, *_a: Any, **_k: Any) -> None: ...

        async def __aenter__(self) -> FakeStore:
            return self

        async def __aexit__(self, *_a: Any) -> None: ...

        async def get_dag(self, _cid: str) -> Any:
            return {"prev": None}

    _serve(client, node, doc, trace)
    import supernet.sdk.client.client as client_module

    real_store = client_module.StoreClient
    client_module.StoreClient = FakeStore  # type: ignore[misc,assignment]
    try:
        rep = await client.verify(task_id, wait_committed=0)
    finally:
        client_module.StoreClient = real_store  # type: ignore[misc]
        await client.aclose()
    assert _names(rep)["trace task"] is False and not rep.ok and not rep.pending
    remembered = client.state.roots[f"{node.address.lower()}:memory:notes"]
    assert remembered.root == stale_root and remembered.task == task_id  # the bad behaviour


# ---------------------------------------------------------------------------------------- defences


def test_defence_receipt_of_another_request_or_key_is_refused() -> None:
    """A receipt replayed from another task of the same user (other requestHash), or signed by a
    key other than the node's, fails ("request hash" / "node signature"), whatever the hex case."""
    node, user = Account.create(), Account.create()
    task_id = _task_id()
    other = "0x" + hashlib.sha256(b"an earlier request").hexdigest()
    trace = _trace(other, user.address)
    doc, receipt = _receipt_doc(node, task_id=other, user=user.address, trace_doc=trace)

    def run(d: dict[str, Any], tid: str, signer: str) -> dict[str, bool]:
        return _names(
            check_receipt(
                d,
                task_id=tid.upper().replace("0X", "0x"),
                user=user.address.lower(),
                node=signer,
                task_input="hi",
                output="hello",
                onchain_batch=lambda _: (node.address, receipt.leaf(), 1),
                trace_loaded=True,
                trace_doc=trace,
            )
        )

    assert run(doc, task_id, node.address)["request hash"] is False  # replayed from another task
    assert run(doc, other, node.address)["request hash"] is True  # control (upper-case hex id)
    assert run(doc, other, Account.create().address)["node signature"] is False
