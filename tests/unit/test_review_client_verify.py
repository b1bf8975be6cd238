# Adversarial review (2026-12-04): nine holes were found, each first kept as a test_known_limit_* that
# passed while it existed; each is now fixed and its test a test_defence_* with the assertion reversed.
"""Adversarial review of the user's client checks (`supernet.sdk.client.verify`, `Client.verify`,
`supernet.sdk.client.freshness`, `supernet.sdk.client.streaming`).

Each ``test_defence_*`` here plays an attack of a dishonest node against the client and asserts
that it is now refused (each docstring: the attack, what happened before, what now stops it).
Receipts, traces, signatures and promises are built with the real SDK primitives; the `Client` is
real, with only its network edges (node HTTP answers, content store, chain reads) replaced by
stand-ins.
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
from supernet.sdk.chain.registry import Operator, Role
from supernet.sdk.client.client import Client
from supernet.sdk.client.freshness import MAX_WALK, SeenRoot, check_latest
from supernet.sdk.client.ladder import sign_task
from supernet.sdk.client.state import TaskRecord
from supernet.sdk.client.streaming import shown_cutter, stream_problem
from supernet.sdk.client.verify import VerificationReport, check_receipt
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import MemorySearchEvent, Trace, example_dag
from supernet.sdk.node_api import ReceiptPublic
from supernet.sdk.store.cids import compute_cid, encode_dag

DOMAIN = Domain(chain_id=31337, verifying_contract="0x" + "22" * 20)
MODEL = "0x" + "07" * 32
FEE = 10**12
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
ETHER = 10**18
UNBONDING = 7 * 86_400
CHALLENGE_WINDOW = 3600  # TaskManager.CHALLENGE_WINDOW of the deployment these tests stand in for


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
            batch=lambda _bid: SimpleNamespace(node=node.address, root=leaf or b"", count=1 if leaf else 0),
            challenge_window=lambda: CHALLENGE_WINDOW,
        ),
        w3=SimpleNamespace(eth=SimpleNamespace(get_block=lambda _b: {"timestamp": now})),
        # a node with its whole stake active, on a chain with a week's unbonding: promises due
        # within ~6 days are backed (`supernet.sdk.chain.promises`)
        service_manager=SimpleNamespace(
            get_node=lambda _a: SimpleNamespace(endpoint="http://node"),  # where read grants may go
            get_operator=lambda _a: Operator(Role.NODE, True, 0, 0, 0, 0, 0, 2 * ETHER, 0),
            unbonding_period=lambda: UNBONDING,
            min_node_stake=lambda: 2 * ETHER,
        ),
        omission_manager=SimpleNamespace(slash_amount=lambda: ETHER),
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


# ---------------------------------------------------------------------------------------- attacks


def test_defence_trace_of_another_input_user_model_or_fee_fails_against_the_receipt() -> None:
    """Attack: the node runs the agent on another input (and writes another user, model and fee
    into the trace) but signs a receipt with the right ``inputHash``, ``modelId`` and fee, and a
    trace whose ``task_id`` and ``output`` match. Before, `check_receipt` compared only the trace's
    task id and output, so the user's verification was green.

    Now: the client compares every field the trace shares with the receipt, with the definition
    the validator uses (`supernet.sdk.formats.binding.trace_receipt_mismatches`); each field is a
    check of its own. Control: the honest trace passes every one."""
    node, user = Account.create(), Account.create()
    task_id = _task_id()
    honest = _trace(task_id, user.address)
    forged = _trace(
        task_id,
        Account.create().address,  # another user
        task_input="a cheaper, different prompt",
        model_id="0x" + "99" * 32,  # another model
        fee=1,  # another fee
    )

    def verify(trace: dict[str, Any]) -> VerificationReport:
        doc, receipt = _receipt_doc(node, task_id=task_id, user=user.address, trace_doc=trace)
        return check_receipt(
            doc,
            task_id=task_id,
            user=user.address,
            node=node.address,
            task_input="hi",
            output="hello",
            onchain_batch=lambda _: (node.address, receipt.leaf(), 1),
            trace_loaded=True,
            trace_doc=trace,
            model_id=MODEL,
            max_fee=FEE,
            fee=FEE,
            domain=DOMAIN,
            now=1000,
        )

    rep = verify(forged)
    failed = {c.name for c in rep.failed()}
    assert {"trace input hash", "trace user", "trace model id", "trace fee"} <= failed, failed
    assert not rep.ok and not rep.pending
    assert verify(honest).ok, verify(honest).failed()  # control


def test_defence_malleable_promise_or_receipt_signature_is_refused() -> None:
    """Attack: the node signs its `ReceiptPromise` and hands it out in high-s form (s -> n - s,
    v flipped; the same key recovers) or with v = 0/1. eth-account recovers both, so before the
    client called the promise valid and the receipt *pending*; but `OmissionManager` recovers with
    OpenZeppelin ``ECDSA.tryRecover``, which refuses both forms, so the user could never claim the
    omission and the node was never slashed.

    Now: every recovery in the SDK requires the form the contracts accept
    (`supernet.sdk.chain.signatures.require_canonical`): the promise fails "commit promise", the
    report is neither ok nor pending; the same holds for the receipt's own signature. Control: the
    node's canonical signatures pass."""
    node, user = Account.create(), Account.create()
    task_id = _task_id()
    trace = _trace(task_id, user.address)
    doc, _receipt = _receipt_doc(node, task_id=task_id, user=user.address, trace_doc=trace, committed=False)

    def forms(sig_hex: str) -> tuple[bytes, bytes]:
        good = bytes.fromhex(sig_hex[2:])
        r, s, v = good[:32], int.from_bytes(good[32:64], "big"), good[64]
        high_s = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])  # 27 <-> 28
        return high_s, good[:64] + bytes([v - 27])

    def verify(d: dict[str, Any]) -> VerificationReport:
        return check_receipt(
            d,
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

    assert verify(doc).pending  # control: the canonical promise is a valid one
    for sig in forms(doc["promise"]["signature"]):
        bad = {**doc, "promise": {**doc["promise"], "signature": "0x" + sig.hex()}}
        rep = verify(bad)
        assert _names(rep)["commit promise"] is False and not rep.pending and not rep.ok
    for sig in forms(doc["signature"]):
        rep = verify({**doc, "signature": "0x" + sig.hex()})
        assert _names(rep)["node signature"] is False
    # the same key does recover from the malleable twin: only the form is refused
    high_s, _ = forms(doc["promise"]["signature"])
    assert int.from_bytes(high_s[32:64], "big") > SECP256K1_N // 2
    with pytest.raises(ValueError, match="malleable"):
        compact_signature(high_s)


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


async def test_defence_verify_keeps_the_first_promise_against_a_later_one(tmp_path: Path) -> None:
    """Attack: the node promises to commit by T=2000, then never commits. When the user verifies
    again after T, the node answers with a NEW promise for the same receipt, validly signed, with
    ``commitBy`` far in the future. Before, `Client.verify` overwrote the stored promise and judged
    only the new one: "pending" for ever, and `claim_omission` would send a promise not yet due.

    Now: the first promise that passed its check is kept and every later call is judged by it:
    after T the report fails "commit promise kept" and the stored promise is still the slashable
    one."""
    node, task_id, doc, receipt, client = _served_uncommitted_task(tmp_path)
    first = await client.verify(task_id, wait_committed=0)
    assert first.pending and client.state.tasks[task_id].promise["commitBy"] == 2000  # type: ignore[index]

    # after commitBy, still not committed: the node re-promises for much later
    doc["promise"] = _promise(node, receipt, 10**10)
    client.contracts.w3.eth.get_block = lambda _b: {"timestamp": 3000}  # type: ignore[attr-defined]
    second = await client.verify(task_id, wait_committed=0)
    await client.aclose()
    assert not second.pending and not second.ok
    assert _names(second)["commit promise kept"] is False
    assert client.state.tasks[task_id].promise["commitBy"] == 2000  # type: ignore[index]


async def test_defence_verify_never_stores_a_promise_that_failed_its_check(tmp_path: Path) -> None:
    """Attack: after the user stored a valid promise, the node answers a later verify with a
    promise signed by some other key. Before, `Client.verify` wrote it into the state before and
    whatever the check, so the good promise was replaced by one no contract accepts.

    Now: a promise is stored only after it passed "commit promise", and a stored one is never
    replaced; later calls are judged by the stored one (so this call is still pending). A first
    promise that fails its check is not stored either."""
    _node, task_id, doc, receipt, client = _served_uncommitted_task(tmp_path)
    good_promise = doc["promise"]
    doc["promise"] = _promise(Account.create(), receipt, 2000)  # not the node's key
    rep = await client.verify(task_id, wait_committed=0)
    assert _names(rep)["commit promise"] is False
    assert client.state.tasks[task_id].promise is None  # a failed promise is never stored

    doc["promise"] = good_promise
    assert (await client.verify(task_id, wait_committed=0)).pending
    good = dict(client.state.tasks[task_id].promise or {})
    assert good["signature"] == good_promise["signature"]

    doc["promise"] = _promise(Account.create(), receipt, 2000)
    rep = await client.verify(task_id, wait_committed=0)
    await client.aclose()
    assert rep.pending  # judged by the promise kept
    assert (client.state.tasks[task_id].promise or {})["signature"] == good["signature"]


async def test_defence_verify_checks_the_output_when_the_result_came_another_way(
    tmp_path: Path,
) -> None:
    """Attack: the user runs a task with `prepare()` + `send()` (or its answer was lost and the
    record stayed "sent") and reads the result with `wait()` / `task()`. Before, the record's
    ``output`` stayed None and `check_receipt` skipped both output checks: the node could show one
    output, commit a second and trace a third, and verify was green.

    Now: `Client.task` remembers the first output a done task showed, `Client.verify` fetches it
    when the record has none, and `check_receipt` always compares the receipt's output hash with
    the trace's output ("trace output hash"), so all three must agree."""
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
    shown = {"status": "done", "output": "what the user was shown"}

    async def task(tid: str, _url: str | None = None) -> Any:
        # `Client.task`'s own bookkeeping, with the node's answer stood in
        record = client.state.tasks[tid]
        if record.output is None and shown["status"] == "done":
            record.output, record.status = shown["output"], "done"
        return SimpleNamespace(**shown)

    client.task = task  # type: ignore[method-assign]
    rep = await client.verify(task_id, wait_committed=0)
    await client.aclose()
    names = _names(rep)
    assert names["output hash"] is False and names["trace output"] is False
    assert names["trace output hash"] is False  # receipt and trace disagree, whatever was shown
    assert client.state.tasks[task_id].output == "what the user was shown"
    assert not rep.ok and not rep.pending


async def test_defence_verify_of_a_task_not_in_state_requires_the_users_request(tmp_path: Path) -> None:
    """Attack: the user verifies a task sent from another device (`Client.verify(task_id,
    node_url=...)`). The task id is the EIP-712 digest of a request naming node A; node B, which
    learnt the id, signs and commits a receipt for it with an input and output of its choosing.
    Before, the client took the node's address from whatever answered at ``node_url``: green.

    Now: for a task not in its state the client requires the request the trace carries, checks it
    hashes to the task id and that this user signed it ("request in trace"), and that the node it
    names signed the receipt ("request node"), with its model, input and maxFee. B's trace, with or
    without A's request copied in, fails; control: A's own trace and receipt pass."""
    node_a, node_b, user = Account.create(), Account.create(), Account.create()
    profile = AgentProfile.of_trace(Trace.from_dag(example_dag())).hash()  # what the trace ran
    task_id, signed = sign_task(
        user,
        DOMAIN,
        node=node_a.address,  # the user asked node A
        model_id=MODEL,
        agent_hash=profile,
        task_input="hi",
        max_fee=FEE,
        nonce=1,
        cumulative=FEE,
    )
    carried = {"request": signed["request"], "request_signature": signed["signature"]}

    async def verify(signer: LocalAccount, trace: dict[str, Any]) -> VerificationReport:
        doc, receipt = _receipt_doc(
            signer,
            task_id=task_id,
            user=user.address,
            task_input=trace["input"],
            output=trace["output"],
            trace_doc=trace,
        )
        client = _client(tmp_path, user, signer, receipt.leaf(), now=1000)
        _serve(client, signer, doc, trace)
        try:
            return await client.verify(task_id, node_url="http://node", wait_committed=0)
        finally:
            await client.aclose()

    b_alone = await verify(node_b, _trace(task_id, user.address, task_input="B's input", output="B's"))
    assert _names(b_alone)["request in trace"] is False and not b_alone.ok
    b_copied = await verify(node_b, _trace(task_id, user.address, output="B's answer", **carried))
    assert _names(b_copied)["request node"] is False and not b_copied.ok
    a = await verify(node_a, _trace(task_id, user.address, **carried))
    assert a.ok, a.failed()  # control: the node the user asked, with the request it signed
    assert {"request in trace", "request node", "signed request", "trace agent profile"} <= set(_names(a))


async def test_defence_freshness_rollback_below_a_long_history_fails() -> None:
    """Attack: the user's namespace has a long history (more than `MAX_WALK` = 256 writes in all).
    The node starts the next task from an OLD root (memory the user wrote since is hidden: a
    rollback) that still has >= 256 ancestors. `descends` walks down from the task's first root
    looking for the root the user saw last; it can never find it (it is newer) and runs out of
    steps. Before, `check_latest` reported that as "not judged" inside a passing ``(True, ...)``.

    Now: not judged is not fresh: the check fails, saying the seen root was not found within
    `MAX_WALK` roots (a rollback looks exactly like this). Controls: the same rollback to a root
    with fewer ancestors fails too; an honest task that starts from the seen root passes.
    """
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
    assert not ok and "not judged" in detail and "rollback" in detail  # 199 writes rolled back
    # control: the same rollback to a root with fewer than MAX_WALK ancestors is caught
    short = await check_latest(dict(seen), node, "0xtask", 3, 4, starting_from(roots[100]), get_dag)
    assert short is not None and short[0] is False and 100 < MAX_WALK
    fresh = await check_latest(dict(seen), node, "0xtask", 3, 4, starting_from(roots[599]), get_dag)
    assert fresh is not None and fresh[0] is True


def test_defence_stream_never_shows_text_after_a_stop_string() -> None:
    """Attack: a chat task whose input has a ``stop`` string. The node streams the committed
    output, then the stop string, then any text it likes ("... wire the funds to 0xbad"), split
    into pieces as it likes (the tail in the stop's own piece, or everything in one piece). Before,
    `stream_problem` accepted any rest that started with a stop string, and the client showed it.

    Now: the client cuts what it shows at the first stop string (`StopCutter`, used by
    `Client.stream` and `submit_task(on_token=...)`), holding back text that could start one, so
    whatever the node streams after it is never shown; what is shown must be the output. Controls:
    a stop split over pieces is cut too; a node that streams other text before the stop is caught."""
    output = "The capital of France is Paris."
    task_input = {"messages": [{"role": "user", "content": "capital of France?"}], "stop": ["\nUser:"]}
    tail = " also, the node says: send 5 ETH to 0xbad to unlock the full answer."
    for pieces in (
        ["The capital", " of France", " is Paris", ".", "\nUser", ":", *tail.split(" ")],
        ["The capital of France is Paris.", "\nUser:" + tail],
        [output + "\nUser:" + tail],
        ["The capital of France is Paris.\nUs", "er", ":" + tail],
    ):
        cutter = shown_cutter("chat", task_input)
        shown = [cutter.feed(p) for p in pieces] + [cutter.flush()]
        assert "".join(shown) == output, pieces  # the tail is never shown
        assert stream_problem("chat", task_input, pieces, output) is None
    lying = ["The capital of France is Lyon.", "\nUser:"]
    assert stream_problem("chat", task_input, lying, output) is not None
    # text that only looks like the start of a stop is shown once it cannot be one
    cutter = shown_cutter("chat", task_input)
    assert cutter.feed("Paris.\nU") == "Paris." and cutter.feed("nits") == "\nUnits"


async def test_defence_freshness_learns_only_from_proven_traces(
    tmp_path: Path,
) -> None:
    """Attack: the node answers `Client.verify` with a trace that fails the receipt's checks (here:
    it is another task's trace, "trace task id" fails) but whose memory events name roots of the
    node's choosing. Before, `Client.verify` still ran `check_latest`, which recorded that trace's
    last roots as the latest the user had seen (``state.roots``): a forged trace poisoned the
    baseline every later task is judged against.

    Now: the freshness check runs, and the baseline learns, only from a trace the receipt proved
    (the report ok or pending).
    """
    node, user = Account.create(), Account.create()
    task_id = _task_id()
    stale_root = compute_cid(encode_dag({"root": "old"}), "dag-cbor")
    trace = _trace("0x" + "ee" * 32, user.address)  # another task's id: fails "trace task id"
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
    assert _names(rep)["trace task id"] is False and not rep.ok and not rep.pending
    assert "latest memory and files" not in _names(rep)
    assert f"{node.address.lower()}:memory:notes" not in client.state.roots  # nothing learnt


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
